//! The file destination: json lines gathered into chunks and appended to a file, which is
//! rotated by size or age (written as `….part`, renamed when complete) and gzipped if
//! asked. Files are created readable by their owner only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;

use super::{Destination, WARN_EVERY};
use crate::counters::{Counters, DropReason};

/// Lines are gathered up to this many bytes before a write.
const CHUNK_BYTES: usize = 64 * 1024;

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

/// The file being written.
enum Open {
    Plain(File),
    Gzip(GzEncoder<File>),
}

/// The file destination: lines gathered into chunks, written to the open file.
pub(super) struct Output {
    sink: FileSink,
    /// Lines not yet written, and how many.
    chunk: Vec<u8>,
    lines: u64,
    seq: u64,
    /// The open file, and (rotating) its name while written and when complete.
    file: Option<(Open, Option<(PathBuf, PathBuf)>)>,
    since: Instant,
    bytes: u64,
    warned: Option<Instant>,
}

impl Output {
    /// Opens the sink's first file.
    pub(super) fn open(sink: FileSink) -> std::io::Result<Output> {
        let mut out = Output {
            sink,
            chunk: Vec::with_capacity(CHUNK_BYTES * 2),
            lines: 0,
            seq: 0,
            file: None,
            since: Instant::now(),
            bytes: 0,
            warned: None,
        };
        out.open_next()?;
        Ok(out)
    }

    fn open_next(&mut self) -> std::io::Result<()> {
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

    /// Writes the gathered lines; they are recorded, or dropped as `write_failed`.
    fn write_out(&mut self, counters: &Counters) {
        if self.chunk.is_empty() {
            self.rotate_if_due();
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        let lines = std::mem::take(&mut self.lines);
        let written = match &mut self.file {
            None => self.open_next().and_then(|()| self.write_all(&chunk)),
            Some(_) => self.write_all(&chunk),
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
        self.chunk = chunk;
        self.chunk.clear();
    }

    fn write_all(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some((Open::Plain(f), _)) => f.write_all(chunk),
            Some((Open::Gzip(g), _)) => g.write_all(chunk),
            None => Ok(()),
        }
    }

    fn rotate_if_due(&mut self) {
        let full = self.sink.rotate_bytes.is_some_and(|b| self.bytes >= b);
        let old = self.sink.rotate_every.is_some_and(|t| self.bytes > 0 && self.since.elapsed() >= t);
        if full || old {
            self.end();
            if let Err(e) = self.open_next() {
                tracing::warn!(error = %e, "recording: cannot open the next file; retrying with the next lines");
            }
        }
    }

    /// Ends the file: finishes its gzip stream and, rotating, gives it its complete name.
    fn end(&mut self) {
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

impl Destination for Output {
    fn put(&mut self, _: Option<&[u8]>, line: &[u8], counters: &Counters) {
        self.chunk.extend_from_slice(line);
        self.lines += 1;
        if self.chunk.len() >= CHUNK_BYTES {
            self.write_out(counters);
        }
    }

    fn flush(&mut self, counters: &Counters) {
        self.write_out(counters);
        if let Some((Open::Gzip(g), _)) = &mut self.file {
            let _ = g.flush();
        }
    }

    fn close(&mut self, counters: &Counters) {
        self.write_out(counters);
        self.end();
    }
}

/// An I/O error that names the file.
fn in_file(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
