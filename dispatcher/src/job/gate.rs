//! `abort_on_fail`: each second, latency and error-rate thresholds are judged on the merged
//! statistics (once enough requests are in); the first failure stops the job.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Job;

/// Requests merged before a threshold is judged mid-job: fewer say little.
const MIN_REQUESTS: u64 = 100;
const EVERY: Duration = Duration::from_secs(1);

/// Judges the thresholds every second until one fails (and stops the job) or `stop`.
pub(super) async fn watch(job: Arc<Job>, stop: CancellationToken) {
    let gate = job.gate();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let seconds = job.elapsed().as_secs_f64();
        let failed = job.intake().with_stats(|s| {
            if s.total.count() < MIN_REQUESTS {
                return None;
            }
            let verdicts = gate.judge(&s.total, |e| s.endpoints.get(e), |e| s.compared(e), seconds);
            verdicts.into_iter().zip(&gate.thresholds).find(|(v, t)| !v.pass && t.expr.checkable_midway())
        });
        if let Some((verdict, _)) = failed {
            tracing::warn!(threshold = %verdict, "threshold failed: stopping the job (abort_on_fail)");
            job.abort(verdict.to_string());
            return;
        }
    }
}
