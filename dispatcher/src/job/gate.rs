//! `abort_on_fail`: each second, latency and error-rate thresholds are judged on the merged
//! statistics (once enough requests are in); the first failure stops the job. A sharded
//! job's coordinator judges the whole job: its own statistics and its shards' latest.

use std::sync::Arc;
use std::time::Duration;

use reprise_proto::stats::TotalStats;
use tokio_util::sync::CancellationToken;

use super::Job;
use super::parts::Part;
use crate::fleet::{FleetSnapshot, JobStats};
use crate::thresholds::{Gate, Span, Verdict};

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
        let parts: Vec<Arc<Part>> =
            job.board().map(|b| b.parts().into_iter().map(|(_, p, _)| p).collect()).unwrap_or_default();
        let failed = job.intake().with_stats(|s| {
            s.roll_windows();
            if parts.is_empty() {
                return first_failure(
                    gate,
                    &s.total,
                    |e| s.endpoints.get(e),
                    |e, span| s.compared_in(e, span),
                    seconds,
                );
            }
            let all = whole(s, &parts);
            first_failure(
                gate,
                &all.total,
                |e| all.endpoints.get(e),
                |e, span| all.compared_in(e, span),
                seconds,
            )
        });
        if let Some(verdict) = failed {
            tracing::warn!(threshold = %verdict, "threshold failed: stopping the job (abort_on_fail)");
            job.abort(verdict.to_string());
            return;
        }
    }
}

/// The first threshold that fails and means something mid-job, once enough requests are in.
fn first_failure<'a>(
    gate: &Gate,
    total: &TotalStats,
    endpoint: impl Fn(&str) -> Option<&'a reprise_proto::stats::EndpointStats>,
    compared: impl Fn(&str, Span) -> Option<(u64, u64)>,
    seconds: f64,
) -> Option<Verdict> {
    if total.count() < MIN_REQUESTS {
        return None;
    }
    let verdicts = gate.judge(total, endpoint, compared, seconds);
    verdicts
        .into_iter()
        .zip(&gate.thresholds)
        .find(|(v, t)| !v.pass && t.expr.checkable_midway())
        .map(|(v, _)| v)
}

/// This dispatcher's statistics with its shards' latest added.
fn whole(own: &JobStats, parts: &[Arc<Part>]) -> FleetSnapshot {
    let mut all = FleetSnapshot {
        total: own.total.clone(),
        endpoints: own.endpoints.clone(),
        compare: own.compare.clone(),
        // The coordinator's own windows: its shards report their totals, not windows.
        window: own.windows.last().cloned(),
        ..FleetSnapshot::default()
    };
    for part in parts {
        all.total.merge(&part.stats.total);
        for (name, e) in &part.stats.endpoints {
            all.endpoints.entry(Arc::clone(name)).or_default().merge(e);
        }
        for (name, c) in part.stats.compare.iter().flat_map(|(_, by)| by) {
            all.compare.entry(Arc::clone(name)).or_default().merge(c);
        }
    }
    all
}
