//! The file fetcher: a file or a glob of files, plain or gzip (by magic bytes, so a `.gz`
//! name is not required), each read and parsed on a blocking thread into its own bounded
//! stream. The streams are merged by timestamp in [`super::merge`]. Memory per file is one
//! unit plus [`super::STREAM_CAPACITY`] chunks of [`CHUNK`] records, whatever the file's size.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tokio::sync::mpsc;

use super::units::{Unit, read_unit};
use super::{FetchError, STREAM_CAPACITY, SourceContext};
use crate::analyzers::Parsed;
use crate::record::Record;

const READ_BUFFER: usize = 256 << 10;
/// Records per chunk handed to the merge: one channel operation per chunk, not per record.
const CHUNK: usize = 256;

/// Expands `pattern` and starts one reader per file, in name order.
pub fn start(pattern: &str, ctx: &SourceContext) -> Result<Vec<mpsc::Receiver<Vec<Record>>>, FetchError> {
    let files = expand(pattern)?;
    let mut streams = Vec::with_capacity(files.len());
    for path in files {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || read_file(&path, &ctx, &tx));
        streams.push(rx);
    }
    Ok(streams)
}

fn expand(pattern: &str) -> Result<Vec<PathBuf>, FetchError> {
    let bad = |reason: String| FetchError::BadPattern { pattern: pattern.to_owned(), reason };
    let mut files: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FetchError::NoFiles { pattern: pattern.to_owned() });
    }
    Ok(files)
}

fn open(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, MultiGzDecoder::new(BufReader::new(file)))))
    } else {
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, file)))
    }
}

/// Reads and parses one file into `tx`, in chunks, until its end, a read error or
/// cancellation.
fn read_file(path: &Path, ctx: &SourceContext, tx: &mpsc::Sender<Vec<Record>>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    read_units(path, ctx, |record| {
        chunk.push(record);
        if chunk.len() < CHUNK {
            return true;
        }
        // The merge gone means the job ended or was stopped.
        tx.blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_ok()
    });
    if !chunk.is_empty() {
        let _ = tx.blocking_send(chunk);
    }
}

/// Parses every unit of a file, handing each record to `emit` until it returns false.
fn read_units(path: &Path, ctx: &SourceContext, mut emit: impl FnMut(Record) -> bool) {
    let source = path.display().to_string();
    let mut reader = match open(path) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(path = %source, error = %e, "cannot open recording; its records are missing");
            ctx.accounting.malformed("unreadable_file", &e.to_string(), b"", &source, 0);
            return;
        }
    };
    let framing = ctx.analyzer.framing();
    let (mut buf, mut line) = (Vec::new(), Vec::new());
    let mut at = 0u64;
    while !ctx.cancel.is_cancelled() {
        at += 1;
        match read_unit(&mut reader, framing, &mut buf, &mut line) {
            Ok(Unit::Eof) => return,
            Ok(Unit::TooLong) => {
                ctx.accounting.malformed("too_long", "unit longer than 16 MiB", b"", &source, at)
            }
            Ok(Unit::Ready) if buf.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Unit::Ready) => match ctx.analyzer.parse(&buf) {
                Parsed::Record(r) => {
                    ctx.accounting.unit_bytes(buf.len() as u64);
                    if !emit(r) {
                        return;
                    }
                }
                Parsed::Skipped(reason) => {
                    ctx.accounting.unit_bytes(buf.len() as u64);
                    ctx.accounting.skipped(reason);
                }
                Parsed::Malformed { reason, detail } => {
                    ctx.accounting.malformed(reason, &detail, &buf, &source, at)
                }
            },
            Err(e) => {
                tracing::error!(path = %source, error = %e, "read error; the rest of this file is skipped");
                ctx.accounting.malformed("read_error", &e.to_string(), b"", &source, at);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::analyzers::Analyzer;
    use crate::config;

    fn ctx() -> SourceContext {
        SourceContext::for_test(Analyzer::build(&config::Analyzer::default()))
    }

    async fn drain(mut rx: mpsc::Receiver<Vec<Record>>) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk.iter().map(|r| r.ts));
        }
        out
    }

    #[tokio::test]
    async fn plain_and_gzip_files_are_read_and_bad_lines_counted() {
        let dir = std::env::temp_dir().join(format!("reprise-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.jsonl"), "{\"ts\":1,\"method\":\"GET\",\"url\":\"/a\"}\nnot json\n\n")
            .expect("a");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"ts\":2,\"method\":\"GET\",\"url\":\"/b\"}\n").expect("gz");
        std::fs::write(dir.join("b.jsonl.gz"), gz.finish().expect("gz")).expect("b");
        let ctx = ctx();
        let streams = start(&format!("{}/*", dir.display()), &ctx).expect("files");
        assert_eq!(streams.len(), 2);
        let mut all = Vec::new();
        for s in streams {
            all.extend(drain(s).await);
        }
        assert_eq!(all, vec![1_000_000, 2_000_000]);
        let counts = ctx.accounting.counts();
        assert_eq!(counts.malformed.get("json_syntax"), Some(&1));
        assert!(counts.bytes > 60, "bytes read are counted: {}", counts.bytes);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_glob_matching_nothing_is_a_clear_error() {
        let err = expand("/nonexistent-reprise/*.jsonl").expect_err("nothing");
        assert!(err.to_string().contains("no file matches"), "{err}");
    }
}
