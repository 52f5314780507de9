//! Sinks for live results, fanned out from each merged statistics report. Each sink has its
//! own bounded queue, timeout, retries with backoff and drop counter: offering to a sink
//! never waits, so a dead or slow sink costs neither replay time nor memory — what does not
//! fit or cannot be delivered is counted as dropped.

mod influx;

use std::sync::Arc;

use reprise_proto::stats::EndpointStats;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Reporter;

pub use influx::Influx;

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
}

impl Sinks {
    /// Starts the configured sinks; they stop with `cancel` (after the job's last report).
    pub fn start(cfg: &Reporter, job: &str, cancel: &CancellationToken) -> Sinks {
        Sinks { influx: cfg.influxdb.as_ref().map(|c| Influx::start(c.clone(), job, cancel.child_token())) }
    }

    /// Offers one replayer's merged interval to every sink.
    pub fn publish(&self, replayer: &str, deltas: &[(String, EndpointStats)]) {
        if let Some(i) = &self.influx {
            i.offer(replayer, deltas);
        }
    }

    pub fn counts(&self) -> Vec<SinkCounts> {
        self.influx.iter().map(|i| i.counts()).collect()
    }

    /// Waits (at most `limit`) until what was queued has been delivered or dropped.
    pub async fn flush(&self, limit: std::time::Duration) {
        if let Some(i) = &self.influx {
            i.flush(limit).await;
        }
    }
}
