//! What replayers send back (the Report RPC's `StatsReport`): acks give credits back;
//! statistics are merged once each (sequence numbers per subscription) into the job's merged
//! statistics, with only the statistics lock held.

use std::collections::BTreeMap;
use std::sync::Arc;

use reprise_proto::compare::EndpointCompare;
use reprise_proto::pb;
use reprise_proto::stats::{DecodeError, EndpointStats, OrderWait, TotalStats};
use tokio::time::Instant;

use super::history::History;
use super::{Fleet, REPORTS_PER_SECOND};
use crate::accounting::DropReason;
use crate::sinks::Interval;

/// Why a replayer's statistics were refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("replayer `{replayer}` subscription {subscription} is not subscribed here; subscribe again")]
    NotSubscribed { replayer: String, subscription: u64 },
    /// A live replayer's id with another subscription, or another job: not the sender's own.
    #[error(
        "replayer `{replayer}`: this report is for a subscription or job that is not its live one; subscribe again"
    )]
    Foreign { replayer: String },
    #[error("replayer `{replayer}` sent more than {per_second} reports a second; slow down")]
    Flood { replayer: String, per_second: f64 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "replayer `{replayer}` sent statistics whose endpoints count {endpoints} requests but whose total counts {total}; \
         run a replayer of the dispatcher's version"
    )]
    Inconsistent { replayer: String, endpoints: u64, total: u64 },
}

/// The job's statistics, merged from every replayer's.
#[derive(Debug, Default)]
pub struct JobStats {
    /// By endpoint name: at most `[stats] max_endpoints` and "other".
    pub endpoints: BTreeMap<Arc<str>, EndpointStats>,
    /// All endpoints together, at full resolution.
    pub total: TotalStats,
    /// Statistics reports merged, lost (a gap in a subscription's sequence) and repeated.
    pub reports: u64,
    pub lost_reports: u64,
    pub duplicate_reports: u64,
    /// All endpoints together, second by second.
    pub history: History,
    /// All endpoints together, per replayer (for its schedule error).
    pub per_replayer: BTreeMap<String, TotalStats>,
    /// How long records of an ordered job waited for their subscription (`[proxy] ordered`).
    pub order_wait: OrderWait,
    /// Response comparison (`[compare]`), by endpoint name.
    pub compare: BTreeMap<Arc<str>, EndpointCompare>,
}

impl JobStats {
    /// Requests compared and, of them, differing (`[compare]`): of endpoint `name`, or of
    /// all traffic for "*". `None` when nothing of it was compared.
    pub fn compared(&self, name: &str) -> Option<(u64, u64)> {
        compared(&self.compare, name)
    }
}

/// Requests compared and differing in `compare`: of endpoint `name`, or of all for "*".
pub(super) fn compared(compare: &BTreeMap<Arc<str>, EndpointCompare>, name: &str) -> Option<(u64, u64)> {
    let counts = |c: &EndpointCompare| {
        let s = c.summary();
        (s.compared, s.differing)
    };
    if name == "*" {
        let all = compare.values().map(counts).fold((0, 0), |(n, d), (a, b)| (n + a, d + b));
        return (all.0 > 0).then_some(all);
    }
    compare.get(name).map(counts)
}

impl Fleet {
    /// Takes one replayer's report: an ack, or an ack with statistics. A repeated sequence
    /// number is counted and merged once. The merged interval goes to the sinks before its
    /// records count as accounted, so the job cannot end (and close its sinks) between the two.
    pub fn receive(&self, r: &pb::StatsReport) -> Result<(), IntakeError> {
        if !r.refusal.is_empty() {
            self.refused(&r.replayer_id, r.subscription, &format!("refused the job: {}", r.refusal));
            return Ok(());
        }
        let mut decoded = Vec::with_capacity(r.endpoints.len());
        for e in &r.endpoints {
            decoded.push((e.endpoint, EndpointStats::from_wire(e)?));
        }
        let total = r.total.as_ref().map(TotalStats::from_wire).transpose()?.unwrap_or_default();
        let order_wait = r.order_wait.as_ref().map(OrderWait::from_wire).transpose()?;
        // Accounting counts the endpoints' requests; a total that disagrees would make the
        // two views of the job differ, so such a report is refused whole.
        let count: u64 = decoded.iter().map(|(_, d)| d.count()).sum();
        if count != total.count() {
            return Err(IntakeError::Inconsistent {
                replayer: r.replayer_id.clone(),
                endpoints: count,
                total: total.count(),
            });
        }
        // Acks (seq 0) take only the membership lock: they never wait for a merge.
        let mut stats = if r.seq == 0 { None } else { Some(self.lock_stats()) };
        {
            let mut inner = self.lock();
            let foreign_job =
                inner.job.as_ref().is_some_and(|j| !r.job_id.is_empty() && r.job_id != j.job_id);
            let Some(m) = inner.members.get_mut(&r.replayer_id) else {
                return Err(IntakeError::NotSubscribed {
                    replayer: r.replayer_id.clone(),
                    subscription: r.subscription,
                });
            };
            if m.subscription != r.subscription || foreign_job {
                return Err(IntakeError::Foreign { replayer: r.replayer_id.clone() });
            }
            let now = Instant::now();
            let refill = (now - m.last_report).as_secs_f64() * REPORTS_PER_SECOND;
            m.report_budget = (m.report_budget + refill).min(REPORTS_PER_SECOND);
            if m.report_budget < 1.0 {
                return Err(IntakeError::Flood {
                    replayer: r.replayer_id.clone(),
                    per_second: REPORTS_PER_SECOND,
                });
            }
            m.report_budget -= 1.0;
            m.last_report = now;
            m.acked = m.acked.max(r.completed_total.min(m.dispatched));
            m.pending = r.pending;
            let last_seq = m.last_seq;
            if stats.is_some() {
                m.last_seq = m.last_seq.max(r.seq);
            }
            if r.leaving {
                Self::start_leaving(&mut inner, &r.replayer_id);
            } else if let Some(m) = inner.members.get_mut(&r.replayer_id).filter(|m| !m.active && !m.leaving)
            {
                // Its first report accepts the job; a later one after silence is its return.
                m.active = true;
                if m.missing > 0 {
                    tracing::info!(replayer = %r.replayer_id, "replayer answers again: it takes records again");
                }
                Self::rebuild(&mut inner);
            }
            let Some(stats) = stats.as_mut() else {
                drop(inner);
                self.changed.notify_waiters();
                return Ok(());
            };
            if r.seq <= last_seq {
                stats.duplicate_reports += 1;
                return Ok(());
            }
            stats.lost_reports += r.seq - last_seq - 1;
            stats.reports += 1;
        }
        // The slow part, with only `stats` held: a member cannot be removed meanwhile.
        let Some(mut stats) = stats else { return Ok(()) };
        let decoded: Vec<(Arc<str>, EndpointStats)> = {
            let names = self.endpoint_names();
            decoded.into_iter().map(|(id, delta)| (names.name(id), delta)).collect()
        };
        for (name, delta) in &decoded {
            match stats.endpoints.get_mut(name) {
                Some(merged) => merged.merge(delta),
                None => _ = stats.endpoints.insert(Arc::clone(name), delta.clone()),
            }
        }
        stats.total.merge(&total);
        stats.history.add(&total);
        stats.per_replayer.entry(r.replayer_id.clone()).or_default().merge(&total);
        if let Some(wait) = &order_wait {
            stats.order_wait.merge(wait);
        }
        if !r.compare.is_empty() {
            let names = self.endpoint_names();
            for w in &r.compare {
                let delta = EndpointCompare::from_wire(w);
                stats.compare.entry(names.name(w.endpoint)).or_default().merge(&delta);
            }
        }
        let names = if r.raw.is_empty() { Vec::new() } else { self.endpoint_names().snapshot() };
        self.sinks.publish(&Interval {
            replayer: &r.replayer_id,
            deltas: &decoded,
            rows: &r.raw,
            names: &names,
            rows_dropped: r.raw_dropped,
        });
        {
            let mut inner = self.lock();
            if let Some(m) = inner.members.get_mut(&r.replayer_id) {
                let cancelled = r.cancelled_total.saturating_sub(m.cancelled);
                m.cancelled = r.cancelled_total;
                m.sent += count;
                m.accounted += count + cancelled;
                self.accounting.dropped(DropReason::Stopped, cancelled);
            }
        }
        drop(stats);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Runs `f` on the merged statistics.
    pub fn with_stats<T>(&self, f: impl FnOnce(&mut JobStats) -> T) -> T {
        f(&mut self.lock_stats())
    }
}
