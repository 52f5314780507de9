//! The file fetcher: a file or a glob of files, plain or gzip (by magic bytes, so a `.gz`
//! name is not required), each read and parsed on a blocking thread into its own bounded
//! stream (with shaping rules, parsed on a second thread and shaped on the first: see
//! [`super::units::parse_stream`]). The streams are merged by timestamp in [`super::merge`].
//! Memory per file is one unit plus [`super::STREAM_CAPACITY`] chunks of [`super::CHUNK`]
//! records (and, with rules, 1,024 records between the two threads), whatever the file's size.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::merge::{Chunk, Stream};
use super::units::{ReadEnd, parse_stream};
use super::{Chunker, FetchError, STREAM_CAPACITY, SourceContext, decompressed};
use crate::accounting::Malformed;

/// Expands `pattern` and starts one reader per file, in name order. A shard (`--shard`)
/// reads its files whole when there are more files than shards, else its records of every
/// file (see [`crate::shard`]).
pub fn start(pattern: &str, ctx: &SourceContext) -> Result<Vec<Stream>, FetchError> {
    let files = expand(pattern)?;
    let mut ctx = ctx.clone();
    let enough = files.len() > ctx.shard.count() as usize;
    let (files, shard) = ctx.shard.parts(files, enough);
    ctx.shard = shard;
    ctx.progress.describe("file", "file", false);
    ctx.progress.parts(files.len() as u64);
    let mut streams = Vec::with_capacity(files.len());
    for path in files {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let reader = ctx.clone();
        ctx.tasks.spawn_blocking(move || read_file(&path, &reader, &tx));
        streams.push(Stream::new(rx));
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
    decompressed(File::open(path)?)
}

/// Reads and parses one file into `tx`, in chunks, until its end, a read error or
/// cancellation.
fn read_file(path: &Path, ctx: &SourceContext, tx: &mpsc::Sender<Chunk>) {
    let source = path.display().to_string();
    let mut reader = match open(path) {
        Ok(r) => r,
        Err(e) => {
            ctx.accounting.malformed(Malformed::UnreadableFile, &e.to_string(), b"", &source, 0);
            ctx.progress.part_failed(&source, &e.to_string());
            return;
        }
    };
    if let Ok(meta) = std::fs::metadata(path) {
        ctx.progress.bytes(meta.len());
    }
    let mut out = Chunker::new(tx, &ctx.progress);
    let mut at = 0;
    match parse_stream(&mut reader, &source, ctx, &mut at, |r| out.push(r)) {
        Ok(ReadEnd::End) => {
            out.flush();
            ctx.progress.part_done();
        }
        Ok(ReadEnd::Stopped) => {}
        Err(e) => {
            out.flush();
            ctx.accounting.malformed(Malformed::ReadError, &e.to_string(), b"", &source, at);
            ctx.progress.part_failed(&source, &format!("read error after unit {at}: {e}"));
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
        SourceContext::for_test(Analyzer::build(&config::AnalyzerConfig::default()))
    }

    async fn drain(stream: Stream) -> Vec<i64> {
        let mut rx = stream.into_receiver();
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk.iter().map(|r| r.ts));
        }
        out
    }

    #[tokio::test]
    async fn plain_and_gzip_files_are_read_and_bad_lines_counted() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path();
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
        assert_eq!(counts.malformed.get(&Malformed::JsonSyntax), Some(&1));
        assert!(counts.bytes > 60, "bytes read are counted: {}", counts.bytes);
    }

    #[test]
    fn a_glob_matching_nothing_is_a_clear_error() {
        let err = expand("/nonexistent-reprise/*.jsonl").expect_err("nothing");
        assert!(err.to_string().contains("no file matches"), "{err}");
    }
}
