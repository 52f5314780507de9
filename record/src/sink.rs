//! Where recorded exchanges go: a queue bounded in bytes, and a writer thread that turns
//! each exchange into a json line and writes lines to a file, rotated by size or age and
//! gzipped if asked.
//!
//! The proxy never waits for the sink. An exchange that finds the queue full is dropped
//! and counted (`queue_full`); one the file refuses (a full disk) is dropped and counted
//! (`write_failed`), and the writer tries again with the next lines, so recording resumes
//! by itself once the disk has room. The queue's bound is in bytes (bodies included), so
//! a stalled disk costs the proxy at most that much memory, whatever the traffic.
//!
//! The writer is a thread of its own, not a task: file writes and gzip block, and must not
//! take a worker from the connections.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;

use crate::counters::{Counters, DropReason};
use crate::exchange::Exchange;

/// Most exchanges the queue holds, whatever their size (its bound is in bytes).
const QUEUE_SLOTS: usize = 65_536;
/// Lines are gathered up to this many bytes before a write.
const CHUNK_BYTES: usize = 64 * 1024;
/// Gathered lines are written, and a gzip stream flushed, at least this often: a recording
/// read while it grows is at most this far behind.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A failing file is reported in the log at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The file sink's settings (`--out`, `--rotate-size`, `--rotate-every`, `--gzip`).
#[derive(Clone, Debug)]
pub struct FileSink {
    /// Without rotation, the file written. With it, the pattern of the files' names:
    /// `capture.jsonl` gives `capture-20261205T200102Z-000001.jsonl`, each written as
    /// `….part` and renamed when it is complete.
    pub path: PathBuf,
    pub rotate_bytes: Option<u64>,
    pub rotate_every: Option<Duration>,
    pub gzip: bool,
}

impl FileSink {
    fn rotates(&self) -> bool {
        self.rotate_bytes.is_some() || self.rotate_every.is_some()
    }

    /// The name of the `seq`th rotated file (without `.part`).
    fn rotated(&self, seq: u64) -> PathBuf {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (stem, ext) = match name.find('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name.as_str(), ".jsonl"),
        };
        let gz = if self.gzip && !ext.ends_with(".gz") { ".gz" } else { "" };
        let at = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        self.path.with_file_name(format!("{stem}-{at}-{seq:06}{ext}{gz}"))
    }
}

/// Hands exchanges to the writer without waiting.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: SyncSender<(Exchange, usize)>,
    bound: u64,
    counters: Arc<Counters>,
}

impl Queue {
    /// Queues `e` for writing, or drops and counts it when the queue is full.
    pub fn offer(&self, e: Exchange) {
        let size = e.held() as u64;
        let before = self.counters.queued_bytes.fetch_add(size, Relaxed);
        if before + size > self.bound {
            self.counters.queued_bytes.fetch_sub(size, Relaxed);
            self.counters.count_drop(DropReason::QueueFull, 1);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send((e, size as usize))
        {
            self.counters.queued_bytes.fetch_sub(size, Relaxed);
            self.counters.count_drop(DropReason::QueueFull, 1);
        }
    }
}

/// The writer thread; joined once every [`Queue`] is dropped, after its last lines.
pub struct Writer(std::thread::JoinHandle<()>);

impl Writer {
    /// Waits for the writer to write what was queued and close its file.
    pub fn finish(self) {
        let _ = self.0.join();
    }
}

/// Opens the sink's first file (an error here is the user's to fix before anything is
/// proxied) and starts its writer.
pub fn start(sink: FileSink, bound: u64, counters: Arc<Counters>) -> std::io::Result<(Queue, Writer)> {
    let mut out = Output { sink, seq: 0, file: None, since: Instant::now(), bytes: 0, warned: None };
    out.open()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_SLOTS);
    let queue = Queue { tx, bound, counters: Arc::clone(&counters) };
    let thread =
        std::thread::Builder::new().name("record-writer".into()).spawn(move || write(rx, out, &counters))?;
    Ok((queue, Writer(thread)))
}

fn write(rx: Receiver<(Exchange, usize)>, mut out: Output, counters: &Counters) {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES * 2);
    let mut lines = 0u64;
    let mut flushed = Instant::now();
    loop {
        let next = rx.recv_timeout(FLUSH_EVERY);
        if let Ok((e, size)) = &next {
            counters.queued_bytes.fetch_sub(*size as u64, Relaxed);
            e.write_line(&mut chunk);
            lines += 1;
            if chunk.len() < CHUNK_BYTES {
                continue;
            }
        }
        out.put(&chunk, lines, counters);
        chunk.clear();
        lines = 0;
        if matches!(next, Err(RecvTimeoutError::Disconnected)) {
            out.close();
            return;
        }
        if next.is_err() || flushed.elapsed() >= FLUSH_EVERY {
            out.flush();
            flushed = Instant::now();
        }
    }
}

/// The file being written.
enum Open {
    Plain(File),
    Gzip(GzEncoder<File>),
}

struct Output {
    sink: FileSink,
    seq: u64,
    /// The open file, and (rotating) its name while written and when complete.
    file: Option<(Open, Option<(PathBuf, PathBuf)>)>,
    since: Instant,
    bytes: u64,
    warned: Option<Instant>,
}

impl Output {
    fn open(&mut self) -> std::io::Result<()> {
        let (path, names) = if self.sink.rotates() {
            self.seq += 1;
            let done = self.sink.rotated(self.seq);
            let mut part = done.clone().into_os_string();
            part.push(".part");
            (PathBuf::from(part.clone()), Some((PathBuf::from(part), done)))
        } else {
            (self.sink.path.clone(), None)
        };
        // Owner only: a recording holds production's cookies and tokens.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| in_file(&path, e))?;
        let open = match self.sink.gzip {
            true => Open::Gzip(GzEncoder::new(file, flate2::Compression::fast())),
            false => Open::Plain(file),
        };
        self.file = Some((open, names));
        self.since = Instant::now();
        self.bytes = 0;
        Ok(())
    }

    /// Writes `lines` lines; they are recorded, or dropped as `write_failed`.
    fn put(&mut self, chunk: &[u8], lines: u64, counters: &Counters) {
        if chunk.is_empty() {
            self.rotate_if_due();
            return;
        }
        let written = match &mut self.file {
            None => self.open().and_then(|()| self.write_all(chunk)),
            Some(_) => self.write_all(chunk),
        };
        match written {
            Ok(()) => {
                counters.recorded.fetch_add(lines, Relaxed);
                counters.written_bytes.fetch_add(chunk.len() as u64, Relaxed);
                self.bytes += chunk.len() as u64;
                self.rotate_if_due();
            }
            Err(e) => {
                counters.count_drop(DropReason::WriteFailed, lines);
                if self.warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, path = %self.sink.path.display(), "recording: cannot write, dropping exchanges");
                    self.warned = Some(Instant::now());
                }
            }
        }
    }

    fn write_all(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some((Open::Plain(f), _)) => f.write_all(chunk),
            Some((Open::Gzip(g), _)) => g.write_all(chunk),
            None => Ok(()),
        }
    }

    fn flush(&mut self) {
        if let Some((Open::Gzip(g), _)) = &mut self.file {
            let _ = g.flush();
        }
    }

    fn rotate_if_due(&mut self) {
        let full = self.sink.rotate_bytes.is_some_and(|b| self.bytes >= b);
        let old = self.sink.rotate_every.is_some_and(|t| self.bytes > 0 && self.since.elapsed() >= t);
        if full || old {
            self.close();
            if let Err(e) = self.open() {
                tracing::warn!(error = %e, "recording: cannot open the next file; retrying with the next lines");
            }
        }
    }

    /// Ends the file: finishes its gzip stream and, rotating, gives it its complete name.
    fn close(&mut self) {
        let Some((open, names)) = self.file.take() else { return };
        let ended = match open {
            Open::Plain(mut f) => f.flush(),
            Open::Gzip(g) => g.finish().map(drop),
        };
        if let Err(e) = ended {
            tracing::warn!(error = %e, path = %self.sink.path.display(), "recording: cannot finish a file");
        }
        if let Some((part, done)) = names
            && let Err(e) = std::fs::rename(&part, &done)
        {
            tracing::warn!(error = %e, path = %part.display(), "recording: cannot rename a finished file");
        }
    }
}

/// An I/O error that names the file.
fn in_file(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, captured};
    use std::time::SystemTime;

    fn exchange(url: &str) -> Exchange {
        Exchange {
            at: SystemTime::now(),
            took: Duration::ZERO,
            method: http::Method::GET,
            url: url.into(),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
            body: captured(b"", 0),
            answer: None,
            error: None,
        }
    }

    /// Rotation by size closes each file under its complete name; every exchange is in
    /// exactly one of them, in order.
    #[test]
    fn files_rotate_by_size_and_hold_every_exchange_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sink = FileSink {
            path: dir.path().join("capture.jsonl"),
            rotate_bytes: Some(1000),
            rotate_every: None,
            gzip: false,
        };
        let counters = Arc::new(Counters::default());
        let (queue, writer) = start(sink, 1 << 20, Arc::clone(&counters)).expect("the sink starts");
        for i in 0..2000 {
            queue.offer(exchange(&format!("/item/{i}")));
        }
        drop(queue);
        writer.finish();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the dir")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.len() > 1, "rotated: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("capture-") && n.ends_with(".jsonl")), "{names:?}");
        for n in &names {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.path().join(n)).expect("a file").permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{n}: production's secrets are the owner's only");
        }
        let urls: Vec<String> = names
            .iter()
            .flat_map(|n| {
                std::fs::read_to_string(dir.path().join(n))
                    .expect("a file")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l).expect("json")["url"]
                    .as_str()
                    .expect("a url")
                    .to_owned()
            })
            .collect();
        assert_eq!(urls, (0..2000).map(|i| format!("/item/{i}")).collect::<Vec<_>>());
        assert_eq!(counters.recorded.load(Relaxed), 2000);
        assert_eq!(counters.queued_bytes.load(Relaxed), 0);
    }

    /// A full disk (`/dev/full`) drops and counts every exchange; none is queued for ever.
    #[test]
    fn a_file_that_refuses_writes_drops_and_counts() {
        let sink = FileSink { path: "/dev/full".into(), rotate_bytes: None, rotate_every: None, gzip: false };
        let counters = Arc::new(Counters::default());
        let (queue, writer) = start(sink, 1 << 20, Arc::clone(&counters)).expect("the sink starts");
        for i in 0..100 {
            queue.offer(exchange(&format!("/{i}")));
        }
        drop(queue);
        writer.finish();
        assert_eq!(counters.recorded.load(Relaxed), 0);
        assert_eq!(counters.dropped(DropReason::WriteFailed), 100);
    }

    /// Past its bound in bytes the queue drops instead of growing.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(QUEUE_SLOTS);
        let counters = Arc::new(Counters::default());
        let queue = Queue { tx, bound: 10_000, counters: Arc::clone(&counters) };
        for i in 0..1000 {
            queue.offer(exchange(&format!("/{i}")));
        }
        let queued = counters.queued_bytes.load(Relaxed);
        assert!(queued <= 10_000, "{queued}");
        assert!(counters.dropped(DropReason::QueueFull) > 900, "{}", counters.dropped(DropReason::QueueFull));
    }
}
