//! Sinks for live results, fanned out from each merged statistics report. Each sink has its
//! own bounded queue, timeout, retries with backoff and drop counter: offering to a sink
//! never waits, so a dead or slow sink costs neither replay time nor memory — what does not
//! fit or cannot be delivered is counted as dropped.

mod influx;
mod raw;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use reprise_proto::pb;
use reprise_proto::stats::EndpointStats;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Reporter;

pub use influx::Influx;
pub use raw::RawSink;

/// A sink's books: what is queued, written and dropped. When the job ends and waiting runs
/// out, what is still queued is counted dropped and later outcomes are ignored, so
/// `written + dropped` is always what was offered.
#[derive(Debug, Default)]
pub struct Ledger {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl Ledger {
    pub fn offered(&self, n: u64) {
        self.queued.fetch_add(n, Relaxed);
    }

    /// Offered but not queued (the queue was full).
    pub fn refused(&self, n: u64) {
        self.queued.fetch_sub(n, Relaxed);
        self.dropped.fetch_add(n, Relaxed);
    }

    /// Lost before it reached the sink (e.g. rows a replayer could not keep).
    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Relaxed);
    }

    /// A queued item delivered (`ok`) or given up on.
    pub fn done(&self, n: u64, ok: bool) {
        if self.closed.load(Relaxed) {
            return;
        }
        self.queued.fetch_sub(n, Relaxed);
        if ok { &self.written } else { &self.dropped }.fetch_add(n, Relaxed);
    }

    /// Waits until nothing is queued or `limit` passes; then closes the books.
    pub async fn settle(&self, limit: std::time::Duration) {
        let end = tokio::time::Instant::now() + limit;
        while self.queued.load(Relaxed) > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.closed.store(true, Relaxed);
        self.dropped.fetch_add(self.queued.swap(0, Relaxed), Relaxed);
    }

    pub fn counts(&self, name: &'static str) -> SinkCounts {
        SinkCounts { name, written: self.written.load(Relaxed), dropped: self.dropped.load(Relaxed) }
    }
}

/// Points a sink delivered and dropped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkCounts {
    pub name: &'static str,
    pub written: u64,
    pub dropped: u64,
}

#[derive(Debug, Default)]
pub struct Sinks {
    influx: Option<Arc<Influx>>,
    raw: Option<RawSink>,
}

impl Sinks {
    /// Starts the configured sinks; they stop with `cancel` (after the job's last report).
    /// A raw-results directory that cannot be used is an error at once.
    pub fn start(cfg: &Reporter, job: &str, cancel: &CancellationToken) -> std::io::Result<Sinks> {
        let raw = cfg.raw.as_ref().map(RawSink::start).transpose()?;
        Ok(Sinks {
            influx: cfg.influxdb.as_ref().map(|c| Influx::start(c.clone(), job, cancel.child_token())),
            raw,
        })
    }

    /// Offers one replayer's merged interval (and its raw rows) to every sink.
    pub fn publish(
        &self,
        replayer: &str,
        deltas: &[(String, EndpointStats)],
        raw: &[pb::RawResult],
        raw_dropped: u64,
    ) {
        if let Some(i) = &self.influx {
            i.offer(replayer, deltas);
        }
        if let Some(r) = &self.raw {
            r.offer(replayer, raw, raw_dropped);
        }
    }

    /// Whether replayers should send a row per request.
    pub fn wants_raw(&self) -> bool {
        self.raw.is_some()
    }

    pub fn counts(&self) -> Vec<SinkCounts> {
        let influx = self.influx.iter().map(|i| i.counts());
        influx.chain(self.raw.iter().map(RawSink::counts)).collect()
    }

    /// Waits (at most `limit`) until what was queued has been delivered; what has not been
    /// by then counts as dropped.
    pub async fn flush(&self, limit: std::time::Duration) {
        let influx = async {
            if let Some(i) = &self.influx {
                i.ledger().settle(limit).await;
            }
        };
        let raw = async {
            if let Some(r) = &self.raw {
                r.ledger().settle(limit).await;
            }
        };
        tokio::join!(influx, raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn written_and_dropped_add_up_to_what_was_offered() {
        let l = Ledger::default();
        l.offered(10);
        l.done(4, true);
        l.offered(5);
        l.refused(5);
        l.settle(std::time::Duration::from_millis(50)).await; // 6 still queued: given up
        l.done(6, true); // a late success after the books closed is ignored
        let c = l.counts("x");
        assert_eq!((c.written, c.dropped), (4, 11));
    }
}
