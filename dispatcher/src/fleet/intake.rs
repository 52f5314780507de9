//! What replayers send back (the Report RPC's `StatsReport`), and the job's statistics made
//! of it. Acks give credits back at the fleet; statistics are merged once each (sequence
//! numbers per subscription) into the [`Intake`]'s [`JobStats`] (endpoints, totals,
//! per-replayer, comparison, the per-second history), with only the statistics lock held;
//! each merged interval is offered to the job's sinks before its records count as
//! accounted at the fleet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use reprise_proto::compare::EndpointCompare;
use reprise_proto::pb;
use reprise_proto::stats::{DecodeError, EndpointStats, ErrorKind, OrderWait, TotalStats};
use tokio::time::Instant;

use super::history::History;
use super::windows::Windows;
use super::{Fleet, REPORTS_PER_SECOND};
use crate::accounting::DropReason;
use crate::endpoints::EndpointNames;
use crate::sinks::Interval;
use crate::thresholds::Span;

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
    /// The same, window by window (`[compare] window`).
    pub windows: Windows,
    /// The latest failure of each error kind a replayer sent a sample of, by kind.
    pub error_samples: BTreeMap<String, ErrorSample>,
}

/// A failure's cause as a replayer logged it (`connect: Connection refused (os error 111)`),
/// and which replayer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ErrorSample {
    pub message: String,
    pub replayer: String,
}

/// The longest sample message kept.
const SAMPLE_CHARS: usize = 300;

impl JobStats {
    /// Requests compared and, of them, differing (`[compare]`): of endpoint `name`, or of
    /// all traffic for "*". `None` when nothing of it was compared.
    pub fn compared(&self, name: &str) -> Option<(u64, u64)> {
        compared(&self.compare, name)
    }

    /// The same over the whole job or over the last window closed (see
    /// [`JobStats::roll_windows`]).
    pub fn compared_in(&self, name: &str, span: Span) -> Option<(u64, u64)> {
        match span {
            Span::Job => self.compared(name),
            Span::Window => self.windows.last().and_then(|w| w.compared(name)),
        }
    }

    /// Closes the comparison windows that have passed.
    pub fn roll_windows(&mut self) {
        self.windows.roll(&self.compare);
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

/// The job's statistics as replayers report them, and the names of the endpoint ids they
/// come keyed by. Its lock is the statistics lock: merging a report holds it for
/// milliseconds, so the fleet's (taken per record) is never held meanwhile. The fleet takes
/// it before its own to remove a member, so a report being merged is never also counted
/// lost.
#[derive(Debug, Default)]
pub struct Intake {
    stats: Mutex<JobStats>,
    /// Endpoint names by id, as the dispatch loop hands them out.
    names: Arc<EndpointNames>,
}

/// A report's statistics, decoded and checked before anything of it is taken.
struct Decoded {
    endpoints: Vec<(u32, EndpointStats)>,
    total: TotalStats,
    order_wait: Option<OrderWait>,
}

impl Decoded {
    /// Refuses a report whose endpoints and total disagree: accounting counts the
    /// endpoints' requests, and the two views of the job must not differ.
    fn of(r: &pb::StatsReport) -> Result<Decoded, IntakeError> {
        let mut endpoints = Vec::with_capacity(r.endpoints.len());
        for e in &r.endpoints {
            endpoints.push((e.endpoint, EndpointStats::from_wire(e)?));
        }
        let total = r.total.as_ref().map(TotalStats::from_wire).transpose()?.unwrap_or_default();
        let order_wait = r.order_wait.as_ref().map(OrderWait::from_wire).transpose()?;
        let count: u64 = endpoints.iter().map(|(_, d)| d.count()).sum();
        if count != total.count() {
            return Err(IntakeError::Inconsistent {
                replayer: r.replayer_id.clone(),
                endpoints: count,
                total: total.count(),
            });
        }
        Ok(Decoded { endpoints, total, order_wait })
    }
}

impl Intake {
    /// An intake whose comparison windows are `length` long (`[compare] window`).
    pub fn with_compare_window(length: std::time::Duration) -> Intake {
        let stats = JobStats { windows: Windows::new(length), ..JobStats::default() };
        Intake { stats: Mutex::new(stats), names: Arc::default() }
    }

    /// The statistics, locked.
    pub fn lock(&self) -> MutexGuard<'_, JobStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the merged statistics.
    pub fn with_stats<T>(&self, f: impl FnOnce(&mut JobStats) -> T) -> T {
        f(&mut self.lock())
    }

    /// The names of the endpoint ids statistics come back with.
    pub fn endpoint_names(&self) -> &Arc<EndpointNames> {
        &self.names
    }

    /// Takes one replayer's report for `fleet`: an ack, or an ack with statistics. A
    /// repeated sequence number is counted and merged once. `publish` is handed the merged
    /// interval (for the job's sinks) before its records count as accounted, so the job
    /// cannot end (and close its sinks) between the two.
    pub fn receive(
        &self,
        fleet: &Fleet,
        r: &pb::StatsReport,
        publish: impl FnOnce(&Interval<'_>),
    ) -> Result<(), IntakeError> {
        if !r.refusal.is_empty() {
            fleet.refused(&r.replayer_id, r.subscription, &format!("refused the job: {}", r.refusal));
            return Ok(());
        }
        let decoded = Decoded::of(r)?;
        // Acks (seq 0) take only the membership lock: they never wait for a merge.
        let Some(mut stats) = (r.seq != 0).then(|| self.lock()) else {
            fleet.admit(r, None)?;
            return Ok(());
        };
        if !fleet.admit(r, Some(&mut stats))? {
            return Ok(());
        }
        // The slow part, with only `stats` held: a member cannot be removed meanwhile.
        let deltas = stats.merge(&r.replayer_id, decoded, r, &self.names);
        let names = if r.raw.is_empty() { Vec::new() } else { self.names.snapshot() };
        publish(&Interval {
            replayer: &r.replayer_id,
            deltas: &deltas,
            rows: &r.raw,
            names: &names,
            rows_dropped: r.raw_dropped,
        });
        let count = deltas.iter().map(|(_, d)| d.count()).sum();
        fleet.account(&r.replayer_id, count, r.cancelled_total);
        drop(stats);
        fleet.changed.notify_waiters();
        Ok(())
    }
}

impl JobStats {
    /// Merges one replayer's decoded statistics; returns its deltas by endpoint name.
    fn merge(
        &mut self,
        replayer: &str,
        d: Decoded,
        r: &pb::StatsReport,
        names: &EndpointNames,
    ) -> Vec<(Arc<str>, EndpointStats)> {
        // Only kinds a replayer can count are kept: the map stays as small as that set.
        for sample in r.error_samples.iter().filter(|s| ErrorKind::ALL.iter().any(|k| k.as_str() == s.kind)) {
            let message = sample.message.chars().take(SAMPLE_CHARS).collect();
            self.error_samples
                .insert(sample.kind.clone(), ErrorSample { message, replayer: replayer.to_owned() });
        }
        let deltas: Vec<(Arc<str>, EndpointStats)> =
            d.endpoints.into_iter().map(|(id, delta)| (names.name(id), delta)).collect();
        for (name, delta) in &deltas {
            match self.endpoints.get_mut(name) {
                Some(merged) => merged.merge(delta),
                None => _ = self.endpoints.insert(Arc::clone(name), delta.clone()),
            }
        }
        self.total.merge(&d.total);
        self.history.add(&d.total);
        self.per_replayer.entry(replayer.to_owned()).or_default().merge(&d.total);
        if let Some(wait) = &d.order_wait {
            self.order_wait.merge(wait);
        }
        if !r.compare.is_empty() {
            self.windows.roll(&self.compare);
        }
        for w in &r.compare {
            let delta = EndpointCompare::from_wire(w);
            let name = names.name(w.endpoint);
            self.windows.add(&name, &delta);
            self.compare.entry(name).or_default().merge(&delta);
        }
        deltas
    }
}

impl Fleet {
    /// The membership half of taking a report: the sender must be the live subscription
    /// of a member and within its report budget; its acks give credits back, its first
    /// report accepts the job, `leaving` starts its departure. With `stats` (a report with
    /// statistics, the statistics lock held): whether they are new and to be merged, the
    /// sequence counted (a repeat, a gap).
    fn admit(&self, r: &pb::StatsReport, stats: Option<&mut JobStats>) -> Result<bool, IntakeError> {
        let mut inner = self.lock();
        let foreign_job = inner.job.as_ref().is_some_and(|j| !r.job_id.is_empty() && r.job_id != j.job_id);
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
        } else if let Some(m) = inner.members.get_mut(&r.replayer_id).filter(|m| !m.active && !m.leaving) {
            // Its first report accepts the job; a later one after silence is its return.
            m.active = true;
            if m.missing > 0 {
                tracing::info!(replayer = %r.replayer_id, "replayer answers again: it takes records again");
            }
            Self::rebuild(&mut inner);
        }
        let Some(stats) = stats else {
            drop(inner);
            self.changed.notify_waiters();
            return Ok(false);
        };
        if r.seq <= last_seq {
            stats.duplicate_reports += 1;
            return Ok(false);
        }
        stats.lost_reports += r.seq - last_seq - 1;
        stats.reports += 1;
        Ok(true)
    }

    /// The records of a merged report count as accounted: `count` with an outcome, and those
    /// cancelled since its last report (`cancelled_total` so far).
    fn account(&self, id: &str, count: u64, cancelled_total: u64) {
        if let Some(m) = self.lock().members.get_mut(id) {
            let cancelled = cancelled_total.saturating_sub(m.cancelled);
            m.cancelled = cancelled_total;
            m.sent += count;
            m.accounted += count + cancelled;
            self.accounting.dropped(DropReason::Stopped, cancelled);
        }
    }
}
