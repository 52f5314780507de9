//! Who is in the fleet: a replayer joins (its id unique while it is live), accepts the job
//! with its first report (only then is it in the picker), may go missing (silent: out of the
//! picker until it answers) and leaves (its stream closed, its heartbeats missed, or it
//! refused the job), what it held unaccounted counted lost.

use std::time::Duration;

use tokio::time::Instant;

use super::{EventTx, Fleet, Inner, JobStats, MAX_DEPARTED, Member, config_event, end_event};
use crate::accounting::DropReason;

/// A replayer silent this long (it reports every second) is missing: shown so, and handed
/// no records until it answers.
pub(super) const MISSING_AFTER: Duration = Duration::from_millis(1500);

/// A subscription refused because a live replayer has this id.
#[derive(Debug, thiserror::Error)]
#[error(
    "replayer id `{0}` belongs to a live replayer; give each replayer its own --id (the default, host name and process id, is unique), or wait until the old one has left"
)]
pub struct IdInUse(pub String);

impl Fleet {
    /// Adds a replayer. Returns its subscription; it receives the job configuration now if the
    /// job has started. An id belongs to its live subscription until that one leaves (its
    /// stream closes, or it misses its heartbeats): a second process with the same id, by
    /// mistake or not, cannot take its place and its records.
    pub fn join(&self, id: &str, own_target: Option<String>, tx: EventTx) -> Result<u64, IdInUse> {
        let mut inner = self.lock();
        if inner.members.contains_key(id) {
            return Err(IdInUse(id.to_owned()));
        }
        let subscription = inner.subscriptions.next();
        if let Some(job) = &inner.job {
            // invariant: the channel is new and empty, so try_send has room for both.
            let _ = tx.try_send(config_event(job, subscription));
            if let Some(reason) = &inner.ended {
                let _ = tx.try_send(end_event(reason));
            }
        }
        let member = Member {
            subscription,
            own_target,
            active: false,
            missing: 0,
            leaving: false,
            tx: Some(tx),
            dispatched: 0,
            acked: 0,
            accounted: 0,
            cancelled: 0,
            sent: 0,
            pending: 0,
            last_seq: 0,
            last_report: Instant::now(),
            report_budget: super::REPORTS_PER_SECOND,
        };
        inner.members.insert(id.to_owned(), member);
        Self::rebuild(&mut inner);
        tracing::info!(replayer = id, subscription, members = inner.members.len(), "replayer joined");
        drop(inner);
        self.changed.notify_waiters();
        Ok(subscription)
    }

    /// Removes a replayer if `subscription` is still its live one.
    pub fn leave(&self, id: &str, subscription: u64, why: &str) {
        let stats = self.lock_stats();
        let mut inner = self.lock();
        if inner.members.get(id).is_some_and(|m| m.subscription == subscription) {
            self.remove(&mut inner, &stats, id, subscription, why);
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    /// A replayer asked to leave (SIGTERM): it is handed no more records and its keys move
    /// to the others at once. Its stream ends (with JobEnd "released") once the dispatch
    /// loop's last batch for it is on it; it stays a member, its records accounted as it
    /// reports them, until it closes the stream.
    pub(super) fn start_leaving(inner: &mut super::Inner, id: &str) {
        let Some(m) = inner.members.get_mut(id) else { return };
        if m.leaving {
            return;
        }
        m.leaving = true;
        m.active = false;
        m.tx = None;
        tracing::info!(
            replayer = id,
            subscription = m.subscription,
            holds = m.dispatched - m.accounted.min(m.dispatched),
            "replayer leaving: its keys go to the others; it sends what it holds"
        );
        Self::rebuild(inner);
    }

    /// Whether the member with this subscription is leaving (its stream then ends "released").
    pub fn is_leaving(&self, id: &str, subscription: u64) -> bool {
        self.lock().members.get(id).is_some_and(|m| m.subscription == subscription && m.leaving)
    }

    /// A replayer refused the job: it leaves, and the report says why.
    pub fn refused(&self, id: &str, subscription: u64, why: &str) {
        let stats = self.lock_stats();
        let mut inner = self.lock();
        if inner.members.get(id).is_some_and(|m| m.subscription == subscription) {
            tracing::warn!(replayer = id, subscription, reason = why, "replayer refused the job");
            self.remove(&mut inner, &stats, id, subscription, why);
            if let Some(last) = inner.departed.iter_mut().rev().find(|d| d.id == id) {
                last.state = "refused";
            }
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    pub(super) fn remove(&self, inner: &mut Inner, stats: &JobStats, id: &str, subscription: u64, why: &str) {
        if let Some(m) = inner.members.remove(id) {
            let lost = m.dispatched.saturating_sub(m.accounted);
            self.accounting.dropped(DropReason::LostInFlight, lost);
            Self::rebuild(inner);
            if lost > 0 {
                tracing::warn!(
                    replayer = id,
                    subscription,
                    lost_in_flight = lost,
                    reason = why,
                    "replayer left"
                );
            } else {
                tracing::info!(replayer = id, subscription, reason = why, "replayer left");
            }
            let mut status = m.status(id, Instant::now(), false, self.window, stats.per_replayer.get(id));
            status.state = "left";
            // A replayer that asked to leave closes its stream once it has sent and
            // reported what it held: say so rather than how the stream ended.
            status.left = Some(if m.leaving {
                format!("asked to leave ({why} after draining)")
            } else {
                why.to_owned()
            });
            status.lost_in_flight = lost;
            // A replayer that joins and leaves again and again (one that keeps refusing the
            // job, say) is one line, its latest departure.
            if let Some(same) = inner.departed.iter_mut().find(|d| d.id == id && d.received == 0) {
                *same = status;
            } else if inner.departed.len() < MAX_DEPARTED {
                inner.departed.push(status);
            }
        }
    }

    /// The picker holds the members that accepted the job.
    pub(super) fn rebuild(inner: &mut Inner) {
        let ids = inner.members.iter().filter(|(_, m)| m.active).map(|(id, _)| id.clone()).collect();
        inner.picker.set_members(ids);
    }

    /// Takes members silent past `MISSING_AFTER` out of the picker at once (their records
    /// go to the others until they answer again), and removes those silent for longer than
    /// `timeout`.
    pub fn reap(&self, timeout: Duration) {
        let now = Instant::now();
        {
            let mut inner = self.lock();
            let mut went = 0;
            for (id, m) in inner.members.iter_mut().filter(|(_, m)| m.active) {
                if now - m.last_report > MISSING_AFTER {
                    m.active = false;
                    m.missing += 1;
                    went += 1;
                    tracing::warn!(replayer = %id, silent = ?(now - m.last_report), "replayer missing: its records go to the others until it answers");
                }
            }
            if went > 0 {
                Self::rebuild(&mut inner);
                drop(inner);
                self.changed.notify_waiters();
            }
        }
        let silent: Vec<(String, u64)> = self
            .lock()
            .members
            .iter()
            .filter(|(_, m)| now - m.last_report > timeout)
            .map(|(id, m)| (id.clone(), m.subscription))
            .collect();
        for (id, subscription) in silent {
            self.leave(&id, subscription, "missed heartbeats");
        }
    }
}
