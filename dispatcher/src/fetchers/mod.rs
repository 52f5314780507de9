//! Fetchers read a recording and hand over parsed records in chunks, one nearly ordered
//! stream per source part (a file of a glob). A fetcher is "a task that pushes into a bounded
//! sender until exhausted or cancelled"; [`merge`] then merges the streams by timestamp.

pub mod file;
pub mod merge;
mod units;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounting::Accounting;
use crate::analyzers::Analyzer;
use crate::config::{FetcherKind, JobConfig};
use crate::record::Record;

/// Chunks of records buffered per stream between a fetcher and the merge.
pub const STREAM_CAPACITY: usize = 8;

/// Runtime handles a fetcher needs; `for_test` builds one for a fetcher alone.
#[derive(Clone, Debug)]
pub struct SourceContext {
    pub accounting: Arc<Accounting>,
    pub cancel: CancellationToken,
    pub analyzer: Analyzer,
}

impl SourceContext {
    pub fn for_test(analyzer: Analyzer) -> Self {
        Self { accounting: Arc::default(), cancel: CancellationToken::new(), analyzer }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "fetcher.file.path = {pattern:?}: no file matches; check the path (globs like \"logs/*.jsonl.gz\" are allowed)"
    )]
    NoFiles { pattern: String },
    #[error("fetcher.file.path = {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
}

/// Starts the configured fetcher; returns one ordered stream per source part.
pub fn build(cfg: &JobConfig, ctx: &SourceContext) -> Result<Vec<mpsc::Receiver<Vec<Record>>>, FetchError> {
    match cfg.fetcher.kind {
        FetcherKind::File => {
            let path = cfg.fetcher.file.as_ref().map(|f| f.path.as_str()).unwrap_or_default();
            file::start(path, ctx)
        }
    }
}
