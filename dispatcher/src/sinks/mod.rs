//! Sinks: where live results go while the job runs (`[reporter.*]`, Havok's name). Each
//! merged interval of a replayer is offered to every [`Sink`]. Each sink has its own bounded
//! queue, timeout, retries with backoff and [`Ledger`]: offering never waits, so a dead or
//! slow sink costs neither replay time nor memory — what does not fit or cannot be delivered
//! is counted as dropped. A sink's writer runs in the job's task tracker and ends with the
//! job's sink token.
//!
//! A new sink: a file here with a `Sink` impl and its `start`, a config table in
//! `config/results.rs`, a line in [`Sinks::start`]. Prometheus is not a sink: it pulls, and
//! `/metrics` renders the merged results on each scrape (`results::metrics`).

mod influx;
mod raw;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use reprise_proto::pb;
use reprise_proto::stats::EndpointStats;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SinksConfig;

pub use influx::Influx;
pub use raw::RawSink;

/// One replayer's merged interval: its per-endpoint deltas and, when asked for, a row per
/// request.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    pub replayer: &'a str,
    pub deltas: &'a [(Arc<str>, EndpointStats)],
    pub rows: &'a [pb::RawResult],
    /// Endpoint names by id, for the rows (empty when there are none).
    pub names: &'a [Arc<str>],
    /// Rows the replayer could not keep.
    pub rows_dropped: u64,
}

/// Where live results go.
pub trait Sink: Send + Sync + fmt::Debug {
    /// Its name in the report's `sinks`.
    fn name(&self) -> &'static str;
    /// Takes one interval; never waits: what does not fit is dropped and counted.
    fn offer(&self, interval: &Interval<'_>);
    /// What it queued, wrote and dropped.
    fn ledger(&self) -> &Ledger;
    /// Whether it wants a row per request (replayers then send them).
    fn wants_rows(&self) -> bool {
        false
    }
}

/// A sink that could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("reporter.raw.dir = {dir:?}: {source}; check that the directory can be created and written")]
    RawDir { dir: String, source: std::io::Error },
}

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

    /// Waits until nothing is queued or `deadline` passes; then closes the books.
    pub async fn settle(&self, deadline: Instant) {
        while self.queued.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closed.store(true, Relaxed);
        self.dropped.fetch_add(self.queued.swap(0, Relaxed), Relaxed);
    }

    pub fn counts(&self, name: &'static str) -> SinkCounts {
        SinkCounts { name, written: self.written.load(Relaxed), dropped: self.dropped.load(Relaxed) }
    }
}

/// Points a sink delivered and dropped.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct SinkCounts {
    #[serde(deserialize_with = "sink_name")]
    pub name: crate::known::Name,
    pub written: u64,
    pub dropped: u64,
}

fn sink_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    crate::known::name(&["influxdb", "raw"], d)
}

/// The job's sinks.
#[derive(Debug, Default)]
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
}

impl Sinks {
    /// Starts the configured sinks; their writers run in `tasks` and stop with `cancel`
    /// (after the job's last report). A raw-results directory that cannot be used is an error
    /// at once, not rows lost later.
    pub fn start(
        cfg: &SinksConfig,
        job: &str,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<Sinks, SinkError> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(c) = &cfg.influxdb {
            sinks.push(Box::new(Influx::start(c, job, tasks, cancel.child_token())));
        }
        if let Some(c) = &cfg.raw {
            let raw = RawSink::start(c, tasks, cancel.child_token())
                .map_err(|source| SinkError::RawDir { dir: c.dir.clone(), source })?;
            sinks.push(Box::new(raw));
        }
        Ok(Sinks { sinks })
    }

    /// Offers one replayer's merged interval to every sink.
    pub fn publish(&self, interval: &Interval<'_>) {
        for s in &self.sinks {
            s.offer(interval);
        }
    }

    /// Whether replayers should send a row per request.
    pub fn wants_rows(&self) -> bool {
        self.sinks.iter().any(|s| s.wants_rows())
    }

    pub fn counts(&self) -> Vec<SinkCounts> {
        self.sinks.iter().map(|s| s.ledger().counts(s.name())).collect()
    }

    /// Waits (at most `limit`) until what was queued has been delivered; what has not been
    /// by then counts as dropped.
    pub async fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for s in &self.sinks {
            s.ledger().settle(deadline).await;
        }
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
        l.settle(Instant::now() + Duration::from_millis(50)).await; // 6 still queued: given up
        l.done(6, true); // a late success after the books closed is ignored
        let c = l.counts("x");
        assert_eq!((c.written, c.dropped), (4, 11));
    }
}
