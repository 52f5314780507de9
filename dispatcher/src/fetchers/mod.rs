//! Fetchers read a recording and hand over parsed records in chunks, one nearly ordered
//! stream per source part: a file of a glob ([`file`]), a Kafka partition ([`kafka`]) or an
//! object of a bucket ([`s3`]). A fetcher is "a task that pushes into a bounded sender until
//! exhausted or cancelled"; [`merge`] then merges the streams by timestamp. Each fetcher
//! reports how far it has read in [`progress::SourceProgress`].

pub mod file;
mod har_entries;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod merge;
mod pairing;
pub mod progress;
#[cfg(feature = "s3")]
pub mod s3;
mod units;

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::Accounting;
use crate::analyzers::{Analyzer, Plausible};
use crate::config::{Range, Source};
use crate::record::Record;
use crate::shaping::Shaping;
use crate::shard::Shard;
pub(crate) use har_entries::{Cut as HarCut, Entries as HarEntries};
use merge::{Chunk, Stream};
use progress::SourceProgress;

/// Chunks of records buffered per stream between a fetcher and the merge.
pub const STREAM_CAPACITY: usize = 8;
/// Records per chunk handed to the merge: one channel operation per chunk, not per record.
pub const CHUNK: usize = 256;
const READ_BUFFER: usize = 256 << 10;

/// Runtime handles a fetcher needs; `for_test` builds one for a fetcher alone.
#[derive(Clone, Debug)]
pub struct SourceContext {
    pub accounting: Arc<Accounting>,
    pub progress: Arc<SourceProgress>,
    pub cancel: CancellationToken,
    pub analyzer: Analyzer,
    /// Recorded times the job takes; others are malformed.
    pub times: Plausible,
    /// Filters applied to each record as it is parsed.
    pub shaping: Arc<Shaping>,
    /// The job's tasks: every reader a fetcher starts runs here, so the job's end waits for it.
    pub tasks: TaskTracker,
    /// The records of the parts read that are this dispatcher's (`--shard`); a fetcher that
    /// splits its parts between shards instead reads its parts whole ([`Shard::WHOLE`]).
    pub shard: Shard,
}

impl SourceContext {
    #[cfg(test)]
    pub fn for_test(analyzer: Analyzer) -> Self {
        Self {
            accounting: Arc::default(),
            progress: Arc::default(),
            cancel: CancellationToken::new(),
            analyzer,
            times: Plausible::any(),
            shaping: Arc::default(),
            tasks: TaskTracker::new(),
            shard: Shard::WHOLE,
        }
    }
}

/// Why a source could not be opened at all (the job does not start).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "fetcher.file.path = {pattern:?}: no file matches; check the path (globs like \"logs/*.jsonl.gz\" are allowed)"
    )]
    NoFiles { pattern: String },
    #[error("fetcher.file.path = {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("Kafka ({brokers}, topic {topic:?}): {reason}")]
    Kafka { brokers: String, topic: String, reason: String },
    #[error("object store (bucket {bucket:?}): {reason}")]
    S3 { bucket: String, reason: String },
    #[error(
        "fetcher.type = {kind:?}: this build of reprise has no {kind} support (built without the `{kind}` feature)"
    )]
    NotBuilt { kind: &'static str },
}

/// Starts the fetcher of `source`; returns one ordered stream per source part.
pub async fn build(source: &Source, range: Range, ctx: &SourceContext) -> Result<Vec<Stream>, FetchError> {
    match source {
        Source::File { path } => file::start(path, ctx),
        #[cfg(not(feature = "kafka"))]
        Source::Kafka { .. } => Err(FetchError::NotBuilt { kind: "kafka" }),
        #[cfg(feature = "kafka")]
        Source::Kafka { config, single_partition } => {
            let (k, single, ctx) = (config.clone(), *single_partition, ctx.clone());
            tokio::task::spawn_blocking(move || kafka::start(&k, single, range, &ctx)).await.unwrap_or_else(
                |e| {
                    Err(FetchError::Kafka {
                        brokers: String::new(),
                        topic: String::new(),
                        reason: format!("the fetcher's start failed: {e}"),
                    })
                },
            )
        }
        #[cfg(not(feature = "s3"))]
        Source::S3 { .. } => Err(FetchError::NotBuilt { kind: "s3" }),
        #[cfg(feature = "s3")]
        Source::S3 { settings, pattern } => s3::start(settings.clone(), pattern.clone(), range, ctx).await,
    }
}

/// Collects one stream's records into chunks and hands them to the merge, counting them.
pub(crate) struct Chunker<'a> {
    tx: &'a mpsc::Sender<Chunk>,
    progress: &'a SourceProgress,
    chunk: Chunk,
}

impl<'a> Chunker<'a> {
    pub fn new(tx: &'a mpsc::Sender<Chunk>, progress: &'a SourceProgress) -> Self {
        Self { tx, progress, chunk: Vec::with_capacity(CHUNK) }
    }

    /// Adds a record; false when the merge is gone (the job ended or was stopped).
    pub fn push(&mut self, record: Record) -> bool {
        self.chunk.push(Box::new(record));
        self.chunk.len() < CHUNK || self.flush()
    }

    /// Hands over what is collected; false when the merge is gone.
    pub fn flush(&mut self) -> bool {
        if self.chunk.is_empty() {
            return true;
        }
        let newest = self.chunk.iter().map(|r| r.ts).max().unwrap_or_default();
        self.progress.records(self.chunk.len() as u64, newest);
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).is_ok()
    }

    /// Flushes, then tells the merge this live stream has caught up (an empty chunk).
    pub fn idle(&mut self) -> bool {
        self.flush() && self.tx.blocking_send(Vec::new()).is_ok()
    }
}

/// A reader over `r`, gunzipped when it starts with gzip's magic bytes (whatever its name).
pub(crate) fn decompressed(mut r: impl Read + Send + 'static) -> io::Result<Box<dyn BufRead + Send>> {
    let mut magic = [0u8; 2];
    let mut n = 0;
    while n < 2 {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = io::Cursor::new(magic[..n].to_vec()).chain(r);
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = MultiGzDecoder::new(BufReader::with_capacity(READ_BUFFER, whole));
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, gz)))
    } else {
        Ok(Box::new(BufReader::with_capacity(READ_BUFFER, whole)))
    }
}
