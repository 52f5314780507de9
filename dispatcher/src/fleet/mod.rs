//! The fleet: the replayers subscribed to this dispatcher, what each holds and what it
//! reported. Credits: a replayer never has more than `credit_window` records dispatched and
//! not yet acknowledged. Acks (cheap, frequent) give credits back; statistics (once a second)
//! account for records: a record is *accounted* once its outcome has been merged (or it was
//! cancelled). A replayer is handed records only once it has accepted the job (its first
//! report of the subscription); one that refuses it (its `--allow-target` list does not admit
//! the target) leaves holding nothing. When a replayer leaves (its stream closes, or it is silent longer than the
//! heartbeat timeout) what it held unaccounted is counted `lost_in_flight` and its keys move
//! to the others. Joining, accepting, going missing and leaving are in `membership`.
//!
//! What replayers send back is taken by the [`Intake`] (`intake`): the job's statistics,
//! their per-second `history` and the endpoint names, under a lock of their own. The fleet
//! holds the intake it reports to, to read a member's figures and to take the statistics
//! lock before removing a member. Sinks are the job's: the intake hands each merged
//! interval to the caller.
//!
//! The fleet knows no transport: a member is an id and a bounded sender of events; the gRPC
//! service turns the receiving end into the replayer's stream.

mod history;
mod intake;
mod membership;
mod status;
mod windows;

pub use history::Row;
pub use intake::{ErrorSample, Intake, IntakeError, JobStats};

use membership::MISSING_AFTER;
pub use status::{MemberStatus, STATES};
pub use windows::{ENDPOINT_WINDOWS, Window};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reprise_proto::pb;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use reprise_proto::compare::EndpointCompare;

use crate::thresholds::Span;
use reprise_proto::stats::{EndpointStats, OrderWait, TotalStats};

use crate::accounting::{Accounting, Counts, DropReason};
use crate::routing::{HashStrategy, Picker};

/// The sending end of a member's event stream.
pub type EventTx = mpsc::Sender<pb::DispatcherEvent>;

#[derive(Debug)]
struct Member {
    subscription: u64,
    /// Its own target (`reprise replayer --target`), which it sends to instead of the job's.
    own_target: Option<String>,
    /// It accepted the job (a report of this subscription came) and is not missing: only then is
    /// it in the picker.
    active: bool,
    /// Times it went missing (silent past `MISSING_AFTER`): its records went to the others
    /// until it answered again.
    missing: u64,
    /// It asked to leave (SIGTERM): out of the picker for good; it sends what it holds,
    /// reports it, and closes its stream.
    leaving: bool,
    /// Its event stream; `None` once it is leaving or the dispatcher has disconnected it
    /// (shutting down): once the dispatch loop's last batch for it has gone out too, the
    /// stream ends.
    tx: Option<EventTx>,
    dispatched: u64,
    acked: u64,
    /// Records whose outcome (or cancellation) has been merged.
    accounted: u64,
    cancelled: u64,
    sent: u64,
    pending: u64,
    last_seq: u64,
    last_report: Instant,
    /// Reports it may still send now ([`REPORTS_PER_SECOND`], up to a second's worth).
    report_budget: f64,
}

/// Reports a replayer may send per second: it sends one with statistics a second and acks
/// at most every 5 ms (200 a second), so this only stops a flood.
pub(super) const REPORTS_PER_SECOND: f64 = 1000.0;

/// Subscription ids: unguessable (a keyed hash of a counter), so a replayer cannot report as
/// another whose id it knows; never 0 (the wire's "no subscription").
#[derive(Debug, Default)]
struct Subscriptions {
    count: u64,
    keys: std::hash::RandomState,
}

impl Subscriptions {
    fn next(&mut self) -> u64 {
        use std::hash::BuildHasher as _;
        loop {
            self.count += 1;
            let id = self.keys.hash_one(self.count);
            if id != 0 {
                return id;
            }
        }
    }
}

/// Departed replayers remembered for the report.
const MAX_DEPARTED: usize = 1024;

#[derive(Debug)]
struct Inner {
    members: BTreeMap<String, Member>,
    picker: Picker,
    subscriptions: Subscriptions,
    job: Option<pb::JobConfig>,
    /// Set once no more records will be dispatched.
    ended: Option<String>,
    departed: Vec<MemberStatus>,
}

/// Where a record goes.
#[derive(Debug)]
pub enum Reserve {
    /// A credit was taken at the member with this subscription.
    Member { subscription: u64 },
    /// The chosen member (or, without affinity, every member) has no credit left.
    Full,
    /// No replayer is connected.
    Empty,
}

/// A member's stream, as the dispatch loop finds it for a record it reserved a credit for.
#[derive(Debug)]
pub enum Sender {
    Open {
        id: String,
        tx: EventTx,
    },
    /// The member is leaving: it takes no more records. The credit is still held; give it
    /// back ([`Fleet::unreserve`]) and place the record elsewhere.
    Closed {
        id: String,
    },
    /// The member has left: the credit was counted with what it held, lost.
    Gone,
}

/// Two locks: `inner` (membership, credits; taken per record by the dispatch loop) and the
/// intake's statistics lock (merged histograms; merging a report takes milliseconds). A
/// report merges with only the statistics held, so the dispatch loop never waits on a
/// merge. Lock order: statistics before `inner`; removing a member takes both, so a report
/// merged meanwhile is never also counted lost.
#[derive(Debug)]
pub struct Fleet {
    inner: Mutex<Inner>,
    /// Where members' reports are merged.
    intake: Arc<Intake>,
    window: u64,
    accounting: Arc<Accounting>,
    /// Signalled when credits come back or membership changes.
    changed: Notify,
}

impl Fleet {
    pub fn new(
        strategy: HashStrategy,
        window: u32,
        accounting: Arc<Accounting>,
        intake: Arc<Intake>,
    ) -> Self {
        let inner = Inner {
            members: BTreeMap::new(),
            picker: Picker::new(strategy),
            subscriptions: Subscriptions::default(),
            job: None,
            ended: None,
            departed: Vec::new(),
        };
        Self {
            inner: Mutex::new(inner),
            intake,
            window: u64::from(window),
            accounting,
            changed: Notify::new(),
        }
    }

    /// Where members' reports are merged.
    pub fn intake(&self) -> &Arc<Intake> {
        &self.intake
    }

    /// Resolves at the next change of credits or membership. Enable it (or poll it once)
    /// before looking at the fleet, so a change in between is not missed.
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_stats(&self) -> MutexGuard<'_, JobStats> {
        self.intake.lock()
    }

    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the job: every member, and every later one, gets `job` before any record.
    pub fn start(&self, job: pb::JobConfig) {
        {
            let mut stats = self.lock_stats();
            stats.history.start(Instant::now());
            stats.windows.start(Instant::now());
        }
        let mut inner = self.lock();
        let now = Instant::now();
        for m in inner.members.values_mut() {
            // Silence counts from here: before the job, replayers have nothing to report.
            m.last_report = now;
            if let Some(tx) = &m.tx {
                let _ = tx.try_send(config_event(&job, m.subscription));
            }
        }
        inner.job = Some(job);
    }

    /// Takes one credit for a record with this key. Without key affinity a full replayer is
    /// skipped for the next one with credit; with it, the record waits for its replayer.
    pub fn reserve(&self, key: Option<&str>) -> Reserve {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(first) = inner.picker.pick(key) else {
            // Replayers that have not accepted the job yet will, in a moment (or leave).
            return if inner.members.is_empty() { Reserve::Empty } else { Reserve::Full };
        };
        let n = inner.picker.members().len();
        let tries = if inner.picker.may_skip(key) { n } else { 1 };
        for k in 0..tries {
            let id = &inner.picker.members()[(first + k) % n];
            // invariant: the picker mirrors `members`; a miss would only skip a candidate.
            let Some(m) = inner.members.get_mut(id) else {
                continue;
            };
            if m.dispatched - m.acked < self.window {
                m.dispatched += 1;
                return Reserve::Member { subscription: m.subscription };
            }
        }
        Reserve::Full
    }

    /// The stream of the member with this subscription.
    pub fn sender(&self, subscription: u64) -> Sender {
        let inner = self.lock();
        match inner.members.iter().find(|(_, m)| m.subscription == subscription) {
            Some((id, m)) => match &m.tx {
                Some(tx) => Sender::Open { id: id.clone(), tx: tx.clone() },
                None => Sender::Closed { id: id.clone() },
            },
            None => Sender::Gone,
        }
    }

    /// Gives back credits taken for records that were never sent (job stopped, or the
    /// replayer leaving before they were).
    pub fn unreserve(&self, id: &str, subscription: u64, n: u64) {
        if let Some(m) = self.lock().members.get_mut(id).filter(|m| m.subscription == subscription) {
            m.dispatched -= n.min(m.dispatched);
        }
    }

    /// Records dispatched and not yet acknowledged, over all members.
    pub fn in_flight(&self) -> u64 {
        self.lock().members.values().map(|m| m.dispatched - m.acked).sum()
    }

    /// Records dispatched whose outcome has not been merged yet, over all members.
    pub fn unaccounted(&self) -> u64 {
        self.lock().members.values().map(|m| m.dispatched.saturating_sub(m.accounted)).sum()
    }

    /// Ends the books: whatever is still un-acknowledged will never be, and counts as lost.
    pub fn close_books(&self) {
        let _stats = self.lock_stats();
        let mut inner = self.lock();
        for (id, m) in inner.members.iter_mut() {
            let lost = m.dispatched.saturating_sub(m.accounted);
            if lost > 0 {
                tracing::warn!(replayer = %id, lost_in_flight = lost, "no outcome before the job ended");
                self.accounting.dropped(DropReason::LostInFlight, lost);
                m.accounted = m.dispatched;
                m.acked = m.dispatched;
            }
        }
    }

    /// Sends the end of the job to every member.
    pub async fn end(&self, reason: &str) {
        let txs: Vec<EventTx> = {
            let mut inner = self.lock();
            inner.ended = Some(reason.to_owned());
            inner.members.values().filter_map(|m| m.tx.clone()).collect()
        };
        let event = end_event(reason);
        for tx in txs {
            let _ = tx.send_timeout(event.clone(), Duration::from_secs(1)).await;
        }
    }

    /// Ends every member's event stream (the dispatcher is shutting down), so replayers see
    /// the end of their subscription and their connections can close. They stay members:
    /// what the report says of them does not change.
    pub fn disconnect(&self) {
        for m in self.lock().members.values_mut() {
            m.tx = None;
        }
    }

    /// Every replayer of this job: those connected, then those that left (with their figures).
    pub fn members(&self) -> Vec<MemberStatus> {
        let stats = self.lock_stats();
        let inner = self.lock();
        self.members_of(&stats, &inner, Instant::now())
    }

    fn members_of(&self, stats: &JobStats, inner: &Inner, now: Instant) -> Vec<MemberStatus> {
        let running = inner.job.is_some() && inner.ended.is_none();
        let live = inner
            .members
            .iter()
            .map(|(id, m)| m.status(id, now, running, self.window, stats.per_replayer.get(id)));
        live.chain(inner.departed.iter().cloned()).collect()
    }

    /// Closed seconds of the history after `after`, the last `most` at most (a live page's
    /// charts; see [`history::History::closed_since`]).
    pub fn history_since(&self, after: Option<u64>, most: usize) -> Vec<Row> {
        self.lock_stats().history.closed_since(after, most)
    }

    /// The fleet's results at one instant, read under the statistics lock taken once (the
    /// membership lock inside it, in that order): the merged statistics, the members and the
    /// books agree with each other, as no report can be merged halfway through. The
    /// per-second history is copied only when `history` asks for it.
    pub fn snapshot(&self, history: bool) -> FleetSnapshot {
        let now = Instant::now();
        let mut stats = self.lock_stats();
        let counts = self.accounting.counts();
        let history_rows = if history { stats.history.rows() } else { Vec::new() };
        stats.roll_windows();
        let mut windows = stats.windows.recent(if history { usize::MAX } else { ENDPOINT_WINDOWS });
        if history {
            windows.extend(stats.windows.open_window(&stats.compare));
        }
        let window = stats.windows.last().cloned();
        let window_length = stats.windows.length();
        let (members, in_flight) = {
            let inner = self.lock();
            let in_flight = inner.members.values().map(|m| m.dispatched - m.acked).sum();
            (self.members_of(&stats, &inner, now), in_flight)
        };
        FleetSnapshot {
            endpoints: stats.endpoints.clone(),
            total: stats.total.clone(),
            reports: stats.reports,
            lost_reports: stats.lost_reports,
            duplicate_reports: stats.duplicate_reports,
            history: history_rows,
            order_wait: stats.order_wait.clone(),
            compare: stats.compare.clone(),
            window_length,
            window,
            windows,
            error_samples: stats.error_samples.clone(),
            members,
            in_flight,
            counts,
        }
    }
}

/// Statistics reports from replayers: merged, lost, repeated.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StatsReportCounts {
    pub received: u64,
    pub lost: u64,
    pub duplicate: u64,
}

/// What [`Fleet::snapshot`] reads: everything the results render of the fleet.
#[derive(Debug, Default)]
pub struct FleetSnapshot {
    /// By endpoint name: at most `[stats] max_endpoints` and "other".
    pub endpoints: BTreeMap<Arc<str>, EndpointStats>,
    pub total: TotalStats,
    /// Statistics reports merged, lost and repeated.
    pub reports: u64,
    pub lost_reports: u64,
    pub duplicate_reports: u64,
    /// All endpoints together, second by second (empty unless asked for).
    pub history: Vec<Row>,
    pub order_wait: OrderWait,
    pub compare: BTreeMap<Arc<str>, EndpointCompare>,
    /// `[compare] window`, the last window closed (with its endpoints), and the closed
    /// windows (all with the history, and the open one after them; else the last
    /// [`ENDPOINT_WINDOWS`]).
    pub window_length: Duration,
    pub window: Option<Window>,
    pub windows: Vec<Window>,
    /// The latest sample of each error kind, by kind.
    pub error_samples: BTreeMap<String, ErrorSample>,
    /// Connected replayers, then those that left.
    pub members: Vec<MemberStatus>,
    /// Records dispatched and not yet acknowledged.
    pub in_flight: u64,
    /// The job's books.
    pub counts: Counts,
}

impl FleetSnapshot {
    /// Requests compared and, of them, differing: of endpoint `name`, or of all traffic
    /// for "*" (see [`JobStats::compared`]).
    pub fn compared(&self, name: &str) -> Option<(u64, u64)> {
        intake::compared(&self.compare, name)
    }

    /// The same over the whole job or over the last window closed (`[compare] window`).
    pub fn compared_in(&self, name: &str, span: Span) -> Option<(u64, u64)> {
        match span {
            Span::Job => self.compared(name),
            Span::Window => self.window.as_ref().and_then(|w| w.compared(name)),
        }
    }
}

fn end_event(reason: &str) -> pb::DispatcherEvent {
    pb::DispatcherEvent {
        event: Some(pb::dispatcher_event::Event::End(pb::JobEnd { reason: reason.to_owned() })),
    }
}

fn config_event(job: &pb::JobConfig, subscription: u64) -> pb::DispatcherEvent {
    let mut job = job.clone();
    job.subscription = subscription;
    pb::DispatcherEvent { event: Some(pb::dispatcher_event::Event::Job(job)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes a report as the job does, with no sinks.
    fn take(f: &Fleet, r: &pb::StatsReport) -> Result<(), IntakeError> {
        f.intake().receive(f, r, |_| {})
    }

    fn fleet(window: u32) -> (Fleet, Arc<Accounting>) {
        let acc = Arc::new(Accounting::default());
        (Fleet::new(HashStrategy::RoundRobin, window, Arc::clone(&acc), Arc::default()), acc)
    }

    fn ack(id: &str, subscription: u64, completed: u64) -> pb::StatsReport {
        pb::StatsReport {
            replayer_id: id.into(),
            subscription,
            completed_total: completed,
            ..Default::default()
        }
    }

    /// A first statistics report (seq 1) of `completed` records: `in_endpoints` 200s in
    /// endpoint 0's statistics, `in_total` in the total (equal, for a consistent report).
    fn stats(
        id: &str,
        subscription: u64,
        completed: u64,
        in_endpoints: u64,
        in_total: u64,
    ) -> pb::StatsReport {
        use reprise_proto::stats::{EndpointStats, Outcome, TotalStats};
        let (mut e, mut t) = (EndpointStats::default(), TotalStats::default());
        let ok = Outcome { answer: Ok(Some(200)), latency_us: 5, service_us: 4, lag_us: 1 };
        (0..in_endpoints).for_each(|_| e.record(&ok));
        (0..in_total).for_each(|_| t.record(&ok));
        let mut r = ack(id, subscription, completed);
        r.seq = 1;
        r.endpoints = vec![e.to_wire(0)];
        r.total = Some(t.to_wire());
        r
    }

    /// Joins, and accepts the job as a replayer does with its first report.
    fn join(f: &Fleet, id: &str) -> (u64, mpsc::Receiver<pb::DispatcherEvent>) {
        let (tx, rx) = mpsc::channel(1);
        let s = f.join(id, None, tx).expect("join");
        take(f, &ack(id, s, 0)).expect("accept");
        (s, rx)
    }

    #[test]
    fn a_replayer_gets_records_only_once_it_accepts_and_leaves_nothing_when_it_refuses() {
        let (f, acc) = fleet(16);
        let (tx, _rx) = mpsc::channel(1);
        let s = f.join("new", None, tx).expect("join");
        assert!(matches!(f.reserve(None), Reserve::Full), "joined, not accepted yet: wait");
        f.refused("new", s, "target outside --allow-target");
        assert!(matches!(f.reserve(None), Reserve::Empty));
        let m = f.members();
        assert_eq!((m[0].state, m[0].left.as_deref()), ("refused", Some("target outside --allow-target")));
        assert_eq!(acc.counts().dropped.get(&DropReason::LostInFlight).copied().unwrap_or(0), 0);
        let (s2, _rx2) = join(&f, "new");
        assert!(matches!(f.reserve(None), Reserve::Member { subscription } if subscription == s2));
        assert_eq!(f.members().len(), 2, "the live one and its one earlier refusal");
    }

    #[test]
    fn an_id_belongs_to_its_live_subscription_until_it_leaves() {
        let (f, _) = fleet(16);
        let (s, _rx) = join(&f, "r1");
        let (tx, _rx2) = mpsc::channel(1);
        let err = f.join("r1", None, tx).expect_err("the id is taken");
        assert!(err.to_string().contains("--id"), "{err}");
        assert!(
            matches!(f.reserve(None), Reserve::Member { subscription } if subscription == s),
            "the first keeps its place"
        );
        f.leave("r1", s, "test");
        let (s2, _rx3) = join(&f, "r1");
        assert_ne!(s, s2, "free again once the first has left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_replayer_gets_no_records_until_it_answers_and_is_counted_missing() {
        let (f, _) = fleet(100);
        let (a, _ra) = join(&f, "a");
        let (b, _rb) = join(&f, "b");
        tokio::time::advance(Duration::from_millis(1000)).await;
        take(&f, &ack("a", a, 0)).expect("a reports");
        tokio::time::advance(Duration::from_millis(600)).await;
        f.reap(Duration::from_secs(10));
        let to_a = (0..10)
            .filter(|_| matches!(f.reserve(None), Reserve::Member { subscription } if subscription == a))
            .count();
        assert_eq!(to_a, 10, "b is missing: everything goes to a");
        let rows = f.members();
        assert_eq!((rows[1].id.as_str(), rows[1].state, rows[1].missing), ("b", "missing", 1));
        take(&f, &ack("b", b, 0)).expect("b answers");
        let to_b = (0..10)
            .filter(|_| matches!(f.reserve(None), Reserve::Member { subscription } if subscription == b))
            .count();
        assert_eq!(to_b, 5, "b takes its share again");
    }

    #[test]
    fn a_leaving_replayer_takes_no_more_records_and_loses_nothing_once_it_reports_them() {
        let acc = Arc::new(Accounting::default());
        let f = Fleet::new(HashStrategy::Consistent, 100, Arc::clone(&acc), Arc::default());
        let (a, _ra) = join(&f, "a");
        let (b, _rb) = join(&f, "b");
        let key = (0..64)
            .map(|i| format!("user-{i}"))
            .find(|k| matches!(f.reserve(Some(k)), Reserve::Member { subscription } if subscription == a));
        let key = key.expect("some key belongs to a");
        let mut leave = ack("a", a, 0);
        leave.leaving = true;
        take(&f, &leave).expect("a asks to leave");
        assert!(f.is_leaving("a", a));
        assert!(matches!(f.sender(a), Sender::Closed { .. }), "its stream takes no more batches");
        for _ in 0..10 {
            assert!(
                matches!(f.reserve(Some(&key)), Reserve::Member { subscription } if subscription == b),
                "a's keys went to b at once"
            );
        }
        take(&f, &ack("a", a, 0)).expect("a keeps reporting while it drains");
        assert_eq!(f.members()[0].state, "leaving", "a later report does not take it back");
        // It sends the one record it held and reports it, then closes its stream.
        take(&f, &stats("a", a, 1, 1, 1)).expect("its last statistics");
        f.leave("a", a, "stream closed");
        assert_eq!(acc.counts().dropped.get(&DropReason::LostInFlight).copied().unwrap_or(0), 0);
        let row = f.members().into_iter().find(|m| m.id == "a").expect("a's row");
        assert_eq!((row.state, row.sent, row.lost_in_flight), ("left", 1, 0));
        assert!(row.left.as_deref().is_some_and(|l| l.contains("asked to leave")), "{:?}", row.left);
    }

    #[test]
    fn a_stalled_replayer_gets_no_more_than_its_window() {
        let (f, _) = fleet(16);
        let (s, _rx) = join(&f, "slow");
        for _ in 0..16 {
            assert!(matches!(f.reserve(None), Reserve::Member { subscription } if subscription == s));
        }
        assert!(matches!(f.reserve(None), Reserve::Full), "17th record must wait");
        take(&f, &ack("slow", s, 10)).expect("ack");
        let more = (0..20).filter(|_| matches!(f.reserve(None), Reserve::Member { .. })).count();
        assert_eq!(more, 10, "an ack of 10 gives back exactly 10 credits");
    }

    #[test]
    fn round_robin_skips_a_full_replayer_but_a_key_waits_for_its_own() {
        let acc = Arc::new(Accounting::default());
        let f = Fleet::new(HashStrategy::Consistent, 16, acc, Arc::default());
        let (_, _r1) = join(&f, "a");
        let (_, _r2) = join(&f, "b");
        let owner = match f.reserve(Some("user-1")) {
            Reserve::Member { subscription } => subscription,
            other => panic!("{other:?}"),
        };
        for _ in 0..15 {
            assert!(
                matches!(f.reserve(Some("user-1")), Reserve::Member { subscription } if subscription == owner)
            );
        }
        assert!(matches!(f.reserve(Some("user-1")), Reserve::Full), "the key's replayer is full");
        assert!(
            matches!(f.reserve(None), Reserve::Member { subscription } if subscription != owner),
            "no key: the other"
        );
    }

    #[test]
    fn a_replayer_that_leaves_loses_what_it_held_unaccounted() {
        let (f, acc) = fleet(100);
        let (s, _rx) = join(&f, "gone");
        for _ in 0..30 {
            f.reserve(None);
        }
        take(&f, &ack("gone", s, 30)).expect("ack only: credits back, nothing accounted");
        f.leave("gone", s, "test");
        assert_eq!(acc.counts().dropped.get(&DropReason::LostInFlight), Some(&30));
        assert!(matches!(f.reserve(None), Reserve::Empty));
        let left = f.members();
        assert_eq!((left[0].state, left[0].lost_in_flight), ("left", 30));
        assert!(take(&f, &ack("gone", s, 30)).is_err(), "a departed subscription's report is refused");
    }

    #[test]
    fn statistics_whose_endpoints_and_total_disagree_are_refused() {
        let (f, _) = fleet(100);
        let (s, _rx) = join(&f, "r");
        for _ in 0..2 {
            f.reserve(None);
        }
        let err = take(&f, &stats("r", s, 2, 2, 1)).expect_err("2 requests per endpoint, 1 in the total");
        assert!(err.to_string().contains("count 2 requests but whose total counts 1"), "{err}");
        take(&f, &stats("r", s, 2, 2, 2)).expect("consistent");
        f.intake().with_stats(|st| {
            assert_eq!(st.total.count(), 2);
            assert_eq!(st.endpoints.get("other").map(|e| e.count()), Some(2), "id 0 is other");
        });
    }

    /// A snapshot holds the statistics, the members and the books of one instant: what a
    /// report merged is in all three, and what came after it in none.
    #[test]
    fn a_snapshot_is_one_instant_of_statistics_members_and_books() {
        let (f, acc) = fleet(100);
        let (s, _rx) = join(&f, "r");
        for _ in 0..5 {
            f.reserve(None);
        }
        acc.scheduled(5);
        take(&f, &stats("r", s, 2, 2, 2)).expect("two of five done");
        let snap = f.snapshot(false);
        assert_eq!(snap.total.count(), 2);
        assert_eq!(snap.endpoints.get("other").map(|e| e.count()), Some(2));
        assert_eq!(snap.in_flight, 3, "five dispatched, two acknowledged");
        assert_eq!(snap.members.len(), 1);
        assert_eq!(snap.counts.scheduled, 5);
        assert!(snap.history.is_empty(), "the history only when asked for");
        let later = {
            let mut r = stats("r", s, 5, 3, 3);
            r.seq = 2;
            r
        };
        take(&f, &later).expect("the rest");
        assert_eq!(snap.total.count(), 2, "a snapshot does not change after it was taken");
        assert_eq!(f.snapshot(true).total.count(), 5);
    }
}
