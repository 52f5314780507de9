//! Sinks for live results, fanned out from each merged statistics report. Each sink has its
//! own bounded queue, timeout, retries with backoff and drop counter: offering to a sink
//! never waits, so a dead or slow sink costs neither replay time nor memory — what does not
//! fit or cannot be delivered is counted as dropped.

mod influx;
mod raw;

use std::sync::Arc;

use reprise_proto::pb;
use reprise_proto::stats::EndpointStats;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Reporter;

pub use influx::Influx;
pub use raw::RawSink;

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

    /// Waits (at most `limit`) until what was queued has been delivered or dropped.
    pub async fn flush(&self, limit: std::time::Duration) {
        let end = tokio::time::Instant::now() + limit;
        if let Some(i) = &self.influx {
            i.flush(limit).await;
        }
        while self.raw.as_ref().is_some_and(|r| r.queued() > 0) && tokio::time::Instant::now() < end {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
