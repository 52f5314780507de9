//! A subscription's reports to its dispatcher: statistics every second (the heartbeat), acks
//! whenever completions pile up, the leaving notice. A statistics report that fails is
//! retried with the same sequence number, which the dispatcher merges once.

use std::sync::Arc;
use std::time::Duration;

use reprise_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::health::Health;
use crate::upstream::{Reports, UpstreamError};

const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Shortest gap between two ack-only reports.
const ACK_GAP: Duration = Duration::from_millis(5);

/// Sends a subscription's reports: statistics every second, acks when they pile up.
#[derive(Clone)]
pub(crate) struct Reporter<R> {
    to: R,
    pub(crate) id: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
    /// Where the last second's schedule lag is left for `/metrics`.
    health: Arc<Health>,
}

impl<R: Reports> Reporter<R> {
    pub(crate) fn new(to: R, id: String, health: Arc<Health>) -> Self {
        Self { to, id, seq: Arc::default(), health }
    }

    pub(crate) async fn every_second(self, exec: Arc<Executor>, done: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.send(&exec).await,
                () = exec.ack_due() => {
                    self.ack(&exec).await;
                    tokio::time::sleep(ACK_GAP).await;
                }
                () = done.cancelled() => return,
            }
        }
    }

    /// Tells the dispatcher this replayer is leaving (an ack-only report with `leaving`);
    /// false if it could not be told.
    pub(crate) async fn leave(&self, exec: &Executor) -> bool {
        let mut report = self.ack_report(exec);
        report.leaving = true;
        for attempt in 0..3u32 {
            match self.to.report(report.clone()).await {
                Ok(()) => return true,
                Err(UpstreamError::Refused(_)) => return false,
                Err(e) => {
                    tracing::warn!(replayer = %self.id, attempt, error = %e, "telling the dispatcher this replayer leaves failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        false
    }

    /// An ack-only report: gives credits back without the cost of statistics.
    pub(crate) async fn ack(&self, exec: &Executor) {
        let report = self.ack_report(exec);
        if let Err(e) = self.to.report(report).await {
            tracing::debug!(replayer = %self.id, error = %e, "ack failed; the next report carries it");
        }
    }

    pub(crate) fn ack_report(&self, exec: &Executor) -> pb::StatsReport {
        pb::StatsReport {
            replayer_id: self.id.clone(),
            job_id: exec.config().job_id.clone(),
            seq: 0,
            completed_total: exec.recorder().ack(),
            endpoints: Vec::new(),
            total: None,
            pending: exec.pending(),
            cancelled_total: 0,
            subscription: exec.config().subscription,
            raw: Vec::new(),
            raw_dropped: 0,
            refusal: String::new(),
            leaving: false,
            order_wait: None,
            compare: Vec::new(),
            error_samples: Vec::new(),
        }
    }

    /// Sends the delta since the last report; retries it (same seq) a few times.
    pub(crate) async fn send(&self, exec: &Executor) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // Encoding histograms is CPU work: off the runtime's workers, so requests due
        // meanwhile are not held up behind it.
        let recorder = exec.recorder_handle();
        let delta = match tokio::task::spawn_blocking(move || recorder.take()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(replayer = %self.id, error = %e, "taking statistics failed");
                return;
            }
        };
        self.health.lag_interval(delta.lag);
        let report = pb::StatsReport {
            replayer_id: self.id.clone(),
            job_id: exec.config().job_id.clone(),
            seq,
            completed_total: delta.completed_total,
            endpoints: delta.endpoints,
            total: Some(delta.total),
            pending: exec.pending(),
            cancelled_total: delta.cancelled_total,
            subscription: exec.config().subscription,
            raw: delta.raw,
            raw_dropped: delta.raw_dropped,
            refusal: String::new(),
            leaving: false,
            order_wait: delta.order_wait,
            compare: delta.compare,
            error_samples: crate::errors::take_samples(),
        };
        for attempt in 0..5u32 {
            match self.to.report(report.clone()).await {
                Ok(_) => return,
                Err(UpstreamError::Refused(_)) => return,
                Err(e) => {
                    tracing::warn!(replayer = %self.id, seq, attempt, error = %e, "report failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}
