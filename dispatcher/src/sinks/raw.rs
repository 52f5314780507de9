//! `[reporter.raw]`: one line per request, as mite's collector keeps them. Replayers send the
//! rows with their statistics; they are appended here to `DIR/current`, which is rolled into
//! `DIR/results-<UTC time>.tsv` every `rotate_lines` lines (and a `current` left by an earlier
//! job is rolled before a new one starts). Columns, tab-separated: due (Unix µs), sent (Unix
//! µs), latency (µs from the due instant), status (0: no response), endpoint, replayer, error.
//!
//! Writing is a thread of its own behind a bounded queue: a slow disk drops rows (counted)
//! and never holds up the merge.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Interval, Ledger, Sink};
use crate::config::RawConfig;
use crate::endpoints::OTHER;

/// Batches of rows waiting for the disk.
const QUEUE: usize = 64;

#[derive(Debug)]
pub struct RawSink {
    tx: SyncSender<(String, u64)>,
    ledger: Arc<Ledger>,
}

fn escape(v: &str) -> String {
    v.replace(['\t', '\n'], " ")
}

/// How often the writer looks whether the job has ended while its queue is empty.
const IDLE_CHECK: Duration = Duration::from_millis(50);

impl RawSink {
    /// Opens the directory and starts the writer (a blocking task in `tasks`, ending with
    /// `cancel` once its queue is empty); an unusable directory is an error now, not rows
    /// lost later.
    pub fn start(
        cfg: &RawConfig,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> std::io::Result<RawSink> {
        let dir = PathBuf::from(&cfg.dir);
        std::fs::create_dir_all(&dir)?;
        let current = dir.join("current");
        if current.exists() {
            std::fs::rename(&current, rolled_name(&dir))?;
        }
        let file = open(&current)?;
        let (tx, rx) = sync_channel(QUEUE);
        let sink = RawSink { tx, ledger: Arc::default() };
        let writer =
            Writer { dir, file, lines: 0, rotate: cfg.rotate_lines.max(1), ledger: Arc::clone(&sink.ledger) };
        tasks.spawn_blocking(move || writer.run(&rx, &cancel));
        Ok(sink)
    }
}

impl Sink for RawSink {
    fn name(&self) -> &'static str {
        "raw"
    }

    /// Queues one report's rows; never waits (a full queue drops them, counted).
    fn offer(&self, interval: &Interval<'_>) {
        self.ledger.lost(interval.rows_dropped);
        let rows = interval.rows;
        if rows.is_empty() {
            return;
        }
        let replayer = escape(interval.replayer);
        let mut batch = String::with_capacity(rows.len() * 64);
        for r in rows {
            let _ = std::fmt::Write::write_fmt(
                &mut batch,
                format_args!(
                    "{}\t{}\t{}\t{}\t{}\t{replayer}\t{}\n",
                    r.due_unix_us,
                    r.sent_unix_us,
                    r.latency_us,
                    r.status,
                    escape(interval.names.get(r.endpoint as usize).map_or(OTHER, |n| &**n)),
                    escape(&r.error)
                ),
            );
        }
        let n = rows.len() as u64;
        self.ledger.offered(n);
        if self.tx.try_send((batch, n)).is_err() {
            self.ledger.refused(n);
        }
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn wants_rows(&self) -> bool {
        true
    }
}

fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(1 << 20, OpenOptions::new().create(true).append(true).open(path)?))
}

/// `results-YYYYMMDDTHHMMSS.mmmZ.tsv`, made unique if needed.
fn rolled_name(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut path = dir.join(format!("results-{stamp}.tsv"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("results-{stamp}-{n}.tsv"));
        n += 1;
    }
    path
}

struct Writer {
    dir: PathBuf,
    file: BufWriter<File>,
    lines: u64,
    rotate: u64,
    ledger: Arc<Ledger>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<(String, u64)>, cancel: &CancellationToken) {
        loop {
            let (batch, n) = match rx.recv_timeout(IDLE_CHECK) {
                Ok(b) => b,
                Err(RecvTimeoutError::Timeout) if cancel.is_cancelled() => break,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut written = 0;
            let mut failed: Option<std::io::Error> = None;
            for line in batch.lines() {
                match self.write(line) {
                    Ok(()) => written += 1,
                    Err(e) => failed = Some(e),
                }
            }
            // Rows count as written once they are on the file, not in its buffer: a batch
            // whose flush fails (a full disk) is dropped whole, its buffered bytes with it.
            if let Err(e) = self.file.flush() {
                self.discard_buffer();
                failed = Some(e);
                written = 0;
            }
            if let Some(e) = failed {
                tracing::warn!(dir = %self.dir.display(), error = %e, rows = n - written, "cannot write raw results; rows dropped");
            }
            self.ledger.done(written, true);
            self.ledger.done(n - written, false);
        }
        if self.file.flush().is_err() {
            self.discard_buffer();
        }
    }

    /// Forgets what the buffer holds, so a disk that refused it is not written to again
    /// with stale rows (nor when the writer is dropped).
    fn discard_buffer(&mut self) {
        if let Ok(file) = self.file.get_ref().try_clone() {
            let stale = std::mem::replace(&mut self.file, BufWriter::with_capacity(1 << 20, file));
            let _ = stale.into_parts();
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.lines >= self.rotate {
            self.file.flush()?;
            let current = self.dir.join("current");
            std::fs::rename(&current, rolled_name(&self.dir))?;
            self.file = open(&current)?;
            self.lines = 0;
        }
        writeln!(self.file, "{line}")?;
        self.lines += 1;
        Ok(())
    }
}
