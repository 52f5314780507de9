//! The dispatch loop: takes ordered records, applies the wheel (copies, due instant, slot
//! release), reserves a credit at the replayer routing picks and sends batches. A batch
//! goes out when it is full or before the loop sleeps for the next slot, so records reach a
//! replayer [`crate::timewheel::LEAD`] ahead of their instant.
//!
//! It sees the job only through a [`DispatchContext`]: the fleet, the accounting, the live
//! settings, the late policy and the state it sets while pausing.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use foldhash::HashMap;
use reprise_proto::batch::RecordRef;
use reprise_proto::pb;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::accounting::{Accounting, DropReason};
use crate::config::LatePolicy;
use crate::control::{Control, JobState};
use crate::endpoints::EndpointTable;
use crate::fetchers::merge::{Merger, Ordered};
use crate::fetchers::progress::SourceProgress;
use crate::fleet::{EventTx, Fleet, Reserve, Sender};
use crate::record::{Record, Text};
use crate::timewheel::TimeWheel;

mod live;
mod pass;
use live::Live;
pub use pass::Pass;

/// What the dispatch loop needs of its job.
#[derive(Debug)]
pub struct DispatchContext<'a> {
    pub fleet: &'a Fleet,
    pub accounting: &'a Accounting,
    /// Live settings (speed, rate, pause), applied within a slot.
    pub control: watch::Receiver<Control>,
    pub late: LatePolicy,
    /// The job's state: the loop sets `Paused` and `Running` as it pauses and resumes.
    pub state: &'a watch::Sender<JobState>,
    /// Recorded time released so far, ns since the first record (the job's progress).
    pub progress: &'a AtomicI64,
    /// Told the recorded time through which every record has gone out (Kafka commits).
    pub source: &'a SourceProgress,
    /// While the loop waits for the wheel: when it releases next, ms after the wheel's start
    /// plus one; 0 otherwise (the progress line says when a far-off record is due).
    pub next_release: &'a AtomicU64,
    /// How long a batch may wait for room in a replayer's stream before that replayer is
    /// taken for gone (the heartbeat timeout).
    pub send_timeout: Duration,
    /// Records carry their order key (`[proxy] ordered`).
    pub ordered: bool,
}

/// Records per batch event. 512 once made each encoded event a fresh buffer from the OS
/// (the kernel zeroing huge pages was 7 % of the dispatcher's CPU) and 128 was chosen; with
/// transparent huge pages off that cost is gone, and each batch's fixed costs (an event
/// through tonic and h2, a wake at the replayer, a chunk for its timekeeper) weigh more.
/// Bench (a), 7 alternated pairs: 128 → 512 median 817k → 872k records/s, dispatcher CPU
/// 1.53 → 1.38 s, replayers 0.66 → 0.59 s (6 of 7 pairs faster); 1,024 no better than 512.
pub const BATCH_MAX: usize = 512;
/// Bytes at which a batch goes out whatever its count: records with large bodies must not
/// make a message past what a replayer accepts (64 MiB; a record is at most 16 MiB).
pub const BATCH_BYTES: usize = 4 << 20;
/// How long to wait for a credit before looking again.
const CREDIT_WAIT: Duration = Duration::from_millis(20);

struct Pending {
    id: String,
    subscription: u64,
    tx: EventTx,
    /// The records, written as they will go out ([`reprise_proto::batch`]).
    encoded: BytesMut,
    count: u32,
}

/// What became of a record pushed into a batch.
enum Pushed {
    Added,
    /// Added, and the batch is full: send it.
    Full,
    /// Its replayer is leaving: reserve again.
    Elsewhere,
}

/// Batches being filled, one per replayer subscription.
#[derive(Default)]
struct Batches {
    pending: HashMap<u64, Pending>,
    /// Bytes the next batch is allocated with (a quarter more, as growing a batch copies it
    /// whole): a full batch's size at speed "max"; when batches go out partly filled (paced,
    /// a slot's few records) it follows them down by an eighth per batch, so one quiet
    /// moment at speed "max" does not make the next full batches grow.
    hint: usize,
    /// Newest recorded time (Unix ns, before a pass's shift) of the records placed: once
    /// every batch has gone out, everything recorded up to it has.
    placed_ts: i64,
}

impl Batches {
    /// Writes a record into its replayer's batch. A record for a replayer that left in the
    /// meantime is counted lost (its credit was counted with it); one for a replayer that is
    /// leaving gets its credit back and goes elsewhere.
    fn push(&mut self, ctx: &DispatchContext<'_>, subscription: u64, record: &WireRecord<'_>) -> Pushed {
        let p = match self.pending.entry(subscription) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match ctx.fleet.sender(subscription) {
                Sender::Open { id, tx } => e.insert(Pending {
                    id,
                    subscription,
                    tx,
                    encoded: BytesMut::with_capacity((self.hint + self.hint / 4).max(4096)),
                    count: 0,
                }),
                Sender::Closed { id } => {
                    ctx.fleet.unreserve(&id, subscription, 1);
                    return Pushed::Elsewhere;
                }
                Sender::Gone => return Pushed::Added,
            },
        };
        record.write_to(&mut p.encoded);
        p.count += 1;
        if p.count as usize >= BATCH_MAX || p.encoded.len() >= BATCH_BYTES {
            Pushed::Full
        } else {
            Pushed::Added
        }
    }

    async fn flush_one(&mut self, ctx: &DispatchContext<'_>, subscription: u64) {
        let Some(p) = self.pending.remove(&subscription) else {
            return;
        };
        self.hint = p.encoded.len();
        send(ctx, p).await;
    }

    async fn flush_all(&mut self, ctx: &DispatchContext<'_>) {
        for (_, p) in self.pending.drain() {
            self.hint = p.encoded.len().max(self.hint - self.hint / 8);
            send(ctx, p).await;
        }
        ctx.source.sent(self.placed_ts);
    }

    /// The job was stopped: what was reserved but not sent is given back and counted.
    fn discard(&mut self, ctx: &DispatchContext<'_>) {
        for (_, p) in self.pending.drain() {
            let n = u64::from(p.count);
            ctx.fleet.unreserve(&p.id, p.subscription, n);
            ctx.accounting.dropped(DropReason::Stopped, n);
        }
    }
}

async fn send(ctx: &DispatchContext<'_>, p: Pending) {
    let n = u64::from(p.count);
    let batch = pb::RecordBatch { encoded: p.encoded.freeze(), count: p.count };
    let event = pb::DispatcherEvent { event: Some(pb::dispatcher_event::Event::Batch(batch)) };
    match p.tx.send_timeout(event, ctx.send_timeout).await {
        Ok(()) => ctx.accounting.dispatched(n),
        // Its reserved records count as lost in flight when it is removed.
        Err(_) => ctx.fleet.leave(&p.id, p.subscription, "stream stalled or closed"),
    }
}

/// A record as it goes out: its fields, borrowed from the parsed record.
type WireRecord<'a> = RecordRef<'a, Text, Bytes>;

fn to_wire(r: &Record, offset: Duration, endpoint: u32, ordered: bool) -> WireRecord<'_> {
    RecordRef {
        order_key: if ordered { r.key.as_deref().map_or(0, crate::routing::order_key_of) } else { 0 },
        due_offset_ns: offset.as_nanos() as i64,
        endpoint,
        method: r.method.as_bytes(),
        path: r.path.as_bytes(),
        headers: &r.headers,
        body: &r.body,
        host: r.host.as_ref().map(Text::as_bytes).unwrap_or_default(),
        expected: r.expected.as_deref().map(|e| &e[..]).unwrap_or_default(),
    }
}

/// Waits until the record recorded at `ts` may be released; its due instant, or `None`
/// when the job was stopped meanwhile. Live changes are applied while waiting, so they take
/// effect within a slot.
async fn wait_release(
    ctx: &DispatchContext<'_>,
    wheel: &mut TimeWheel,
    live: &mut Live,
    batches: &mut Batches,
    (ts, late): (i64, bool),
    stop: &CancellationToken,
) -> Option<Instant> {
    loop {
        live.apply(ctx, wheel);
        if live.paused_at.is_some() {
            batches.flush_all(ctx).await;
            tokio::select! {
                () = live.changed() => continue,
                () = stop.cancelled() => return None,
            }
        }
        // One reading of the clock per record: at speed "max" it is also the due instant.
        let now = Instant::now();
        let due = if late { now.max(wheel.start()) } else { wheel.due(ts, now) };
        let release = wheel.release_at(due);
        if release <= now {
            return Some(due);
        }
        batches.flush_all(ctx).await;
        let at = release.saturating_duration_since(wheel.start()).as_millis() as u64 + 1;
        ctx.next_release.store(at, Relaxed);
        let woke = tokio::select! {
            () = sleep_until(release) => Some(Some(due)),
            () = live.changed() => None,
            () = stop.cancelled() => Some(None),
        };
        ctx.next_release.store(0, Relaxed);
        if let Some(released) = woke {
            return released;
        }
    }
}

/// Runs until the input ends, the job's duration ends (`pass.timed_out`) or `stop` fires.
/// Returns whether it was stopped.
pub async fn run(
    ctx: &DispatchContext<'_>,
    input: &mut Merger,
    wheel: &mut TimeWheel,
    endpoints: &mut EndpointTable,
    stop: &CancellationToken,
    pass: &mut Pass,
) -> bool {
    let acc = ctx.accounting;
    let mut batches = Batches::default();
    let rx = ctx.control.clone();
    let applied = *rx.borrow();
    let mut live = Live { rx, applied, woken: false, paused_at: None };
    let stopped = loop {
        // A stop is seen here too: records due at once (speed "max", the first LEAD of a
        // job, a job stopped while it waited for replayers) never wait where it is watched.
        if stop.is_cancelled() {
            break true;
        }
        let Some(next) = next_record(ctx, input, &mut batches, stop).await else {
            break true;
        };
        let Some(Ordered { mut record, late }) = next else {
            break false;
        };
        let recorded = record.ts;
        record.ts = record.ts.saturating_add(pass.shift);
        if let Some(deadline) = pass.deadline
            && !late
            && wheel.due(record.ts, Instant::now()) >= deadline
        {
            // Past the job's duration: it and what the reorder window holds are outside
            // the job's time, as records past `end` are.
            acc.out_of_range_n(1 + input.take_held().len() as u64);
            pass.timed_out = true;
            break false;
        }
        acc.in_range();
        pass.count(recorded, late);
        live.apply(ctx, wheel);
        let copies = wheel.copies(pass.index);
        pass.index += 1;
        if copies == 0 {
            continue;
        }
        acc.scheduled(u64::from(copies));
        if late && ctx.late == LatePolicy::Drop {
            acc.dropped(DropReason::Late, u64::from(copies));
            continue;
        }
        let Some(due) = wait_release(ctx, wheel, &mut live, &mut batches, (record.ts, late), stop).await
        else {
            acc.dropped(DropReason::Stopped, u64::from(copies));
            break true;
        };
        if !late {
            wheel.released(record.ts, due, copies);
            ctx.progress.store(record.ts - *pass.origin.get_or_insert(record.ts), Relaxed);
        }
        let offset = due.saturating_duration_since(wheel.start());
        place_copies(ctx, &mut batches, endpoints, (&record, offset, copies), stop).await;
        batches.placed_ts = batches.placed_ts.max(recorded);
        // A record is a unit of tokio's cooperative budget: at speed "max" nothing else here
        // waits, and the loop would keep its thread until the replayers' credits ran out,
        // while the connections sharing the thread (`reprise run`) stood still.
        tokio::task::consume_budget().await;
    };
    if stopped {
        batches.discard(ctx);
        drop_held(acc, input, wheel, pass);
    } else {
        batches.flush_all(ctx).await;
    }
    stopped
}

/// Writes `copies` of a released record, due `offset` after the wheel's start, into the
/// batches of the replayers routing picks.
async fn place_copies(
    ctx: &DispatchContext<'_>,
    batches: &mut Batches,
    endpoints: &mut EndpointTable,
    (record, offset, copies): (&Record, Duration, u32),
    stop: &CancellationToken,
) {
    // A gRPC call's endpoint is its method's path, `/package.Service/Method` (all are POSTs).
    let method = if record.is_grpc() { &b""[..] } else { record.method.as_bytes() };
    let endpoint = endpoints.id(method, &record.path);
    let wire = to_wire(record, offset, endpoint, ctx.ordered);
    for _ in 0..copies {
        place(ctx, batches, &wire, record.key.as_deref(), stop).await;
    }
}

/// The source's next record (`None` inside: its end), or `None` if the job is stopped while
/// waiting for it. When the source is quiet (live input, a slow download), what is batched
/// goes first: it must not wait for the next record.
async fn next_record(
    ctx: &DispatchContext<'_>,
    input: &mut Merger,
    batches: &mut Batches,
    stop: &CancellationToken,
) -> Option<Option<Ordered>> {
    let mut pull = std::pin::pin!(input.next());
    if let Poll::Ready(next) = std::future::poll_fn(|cx| Poll::Ready(pull.as_mut().poll(cx))).await {
        return Some(next);
    }
    batches.flush_all(ctx).await;
    tokio::select! {
        next = pull => Some(next),
        () = stop.cancelled() => None,
    }
}

/// A stopped job's records read from the source and in range, never scheduled: dropped as
/// stopped, copies and all, so every identity of the books holds.
fn drop_held(acc: &Accounting, input: &mut Merger, wheel: &TimeWheel, pass: &mut Pass) {
    for _ in input.take_held() {
        acc.in_range();
        let copies = u64::from(wheel.copies(pass.index));
        pass.index += 1;
        acc.scheduled(copies);
        acc.dropped(DropReason::Stopped, copies);
    }
}

/// Reserves a credit for one copy and adds it to its replayer's batch.
async fn place(
    ctx: &DispatchContext<'_>,
    batches: &mut Batches,
    record: &WireRecord<'_>,
    key: Option<&str>,
    stop: &CancellationToken,
) {
    let mut waiter = None;
    loop {
        match ctx.fleet.reserve(key) {
            Reserve::Member { subscription } => match batches.push(ctx, subscription, record) {
                Pushed::Added => return,
                Pushed::Full => return batches.flush_one(ctx, subscription).await,
                Pushed::Elsewhere => {}
            },
            Reserve::Empty => {
                ctx.accounting.dropped(DropReason::NoReplayer, 1);
                return;
            }
            Reserve::Full if stop.is_cancelled() => {
                ctx.accounting.dropped(DropReason::Stopped, 1);
                return;
            }
            Reserve::Full => match waiter.take() {
                // Armed before the last look, so an ack in between is not missed.
                Some(w) => {
                    let _ = timeout(CREDIT_WAIT, w).await;
                }
                None => {
                    batches.flush_all(ctx).await;
                    let mut w = Box::pin(ctx.fleet.changed());
                    w.as_mut().enable();
                    waiter = Some(w);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio::time::sleep;

    use super::*;
    use crate::config::Speed;
    use crate::fetchers::merge::{MergeOptions, Stream};
    use crate::routing::HashStrategy;

    const MS: i64 = 1_000_000;

    /// A job's parts, without the job: one replayer "r1" whose stream the test reads.
    struct Harness {
        fleet: Fleet,
        accounting: Arc<Accounting>,
        control: watch::Sender<Control>,
        state: watch::Sender<JobState>,
        progress: AtomicI64,
        source: SourceProgress,
        next_release: AtomicU64,
        subscription: u64,
    }

    impl Harness {
        fn new(window: u32, speed: Speed) -> (Harness, mpsc::Receiver<pb::DispatcherEvent>) {
            let accounting = Arc::new(Accounting::default());
            let fleet = Fleet::new(HashStrategy::RoundRobin, window, Arc::clone(&accounting), Arc::default());
            let (tx, rx) = mpsc::channel(1024);
            let subscription = fleet.join("r1", None, tx).expect("join");
            let accept = pb::StatsReport { replayer_id: "r1".into(), subscription, ..Default::default() };
            fleet.intake().receive(&fleet, &accept, |_| {}).expect("the replayer accepts the job");
            let control = watch::channel(Control { speed, rate: 1.0, paused: false }).0;
            let state = watch::channel(JobState::Running).0;
            let h = Harness {
                fleet,
                accounting,
                control,
                state,
                progress: AtomicI64::new(0),
                source: SourceProgress::default(),
                next_release: AtomicU64::new(0),
                subscription,
            };
            (h, rx)
        }

        fn ctx(&self) -> DispatchContext<'_> {
            DispatchContext {
                fleet: &self.fleet,
                accounting: &self.accounting,
                control: self.control.subscribe(),
                late: LatePolicy::Send,
                state: &self.state,
                progress: &self.progress,
                source: &self.source,
                next_release: &self.next_release,
                send_timeout: Duration::from_secs(3),
                ordered: false,
            }
        }

        /// Acknowledges (and accounts for) the first `n` records r1 received.
        fn ack(&self, n: u64) {
            let r = pb::StatsReport {
                replayer_id: "r1".into(),
                subscription: self.subscription,
                completed_total: n,
                ..Default::default()
            };
            self.fleet.intake().receive(&self.fleet, &r, |_| {}).expect("r1 is subscribed");
        }
    }

    fn rec(ts_ms: i64, path: &str) -> Record {
        Record {
            ts: ts_ms * MS,
            method: "GET".into(),
            path: path.into(),
            host: None,
            headers: vec![],
            body: Bytes::new(),
            key: None,
            expected: None,
        }
    }

    /// The whole recording, already read: the input ends after the last record.
    fn input(records: Vec<Record>, accounting: &Arc<Accounting>) -> Merger {
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(records.into_iter().map(Box::new).collect()).expect("room for one chunk");
        let opts = MergeOptions { window_ns: 0, begin: None, end: None };
        Merger::new(vec![Stream::new(rx)], opts, Arc::clone(accounting))
    }

    /// A batch as the replayer got it: when (ms since `start`), and each record's path and
    /// due offset (ms).
    #[derive(Debug, PartialEq)]
    struct Arrival {
        at_ms: u128,
        records: Vec<(String, i64)>,
    }

    fn arrival(event: pb::DispatcherEvent, start: Instant) -> Option<Arrival> {
        let Some(pb::dispatcher_event::Event::Batch(b)) = event.event else { return None };
        let records = reprise_proto::batch::decode(b)
            .expect("a batch decodes")
            .into_iter()
            .map(|r| (String::from_utf8_lossy(&r.path).into_owned(), r.due_offset_ns / MS))
            .collect();
        Some(Arrival { at_ms: (Instant::now() - start).as_millis(), records })
    }

    fn expect(at_ms: u128, records: &[(&str, i64)]) -> Arrival {
        Arrival { at_ms, records: records.iter().map(|(p, d)| ((*p).to_owned(), *d)).collect() }
    }

    /// Runs the loop to its end while `drive` reads the replayer's stream; every batch is
    /// handed to `drive`, which may change the job's settings as a user would.
    async fn replay(
        h: &Harness,
        mut input: Merger,
        wheel: TimeWheel,
        stop: &CancellationToken,
        mut rx: mpsc::Receiver<pb::DispatcherEvent>,
        mut on_batch: impl AsyncFnMut(&Arrival),
    ) -> (bool, Vec<Arrival>) {
        let start = wheel.start();
        let ctx = h.ctx();
        let mut seen = Vec::new();
        let read = async {
            // Paused time jumps ahead when everything waits: a minute of silence is the end.
            while let Ok(Some(event)) = timeout(Duration::from_secs(60), rx.recv()).await {
                if let Some(a) = arrival(event, start) {
                    on_batch(&a).await;
                    seen.push(a);
                }
            }
        };
        // A loop that never ends (a credit never given back) fails the test, not hangs it.
        let mut endpoints = EndpointTable::new(Arc::default(), Arc::default());
        let (mut wheel, mut pass) = (wheel, Pass::default());
        let (stopped, ()) = timeout(Duration::from_secs(3600), async {
            tokio::join!(run(&ctx, &mut input, &mut wheel, &mut endpoints, stop, &mut pass), read)
        })
        .await
        .expect("the dispatch loop ended");
        (stopped, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_released_slot_by_slot_a_lead_ahead_of_their_instant() {
        let (h, rx) = Harness::new(1000, Speed::Factor(1.0));
        let records = vec![rec(0, "/a"), rec(1000, "/b"), rec(1000, "/c"), rec(2345, "/d"), rec(5000, "/e")];
        let wheel = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let (stopped, seen) =
            replay(&h, input(records, &h.accounting), wheel, &stop, rx, async |_: &Arrival| {}).await;
        assert!(!stopped);
        assert_eq!(
            seen,
            [
                expect(0, &[("/a", 0)]),
                expect(800, &[("/b", 1000), ("/c", 1000)]),
                expect(2140, &[("/d", 2345)]),
                expect(4800, &[("/e", 5000)]),
            ]
        );
        let c = h.accounting.counts();
        assert_eq!((c.scheduled, c.dispatched), (5, 5));
        assert_eq!(h.progress.load(Relaxed), 5000 * MS, "progress is the recorded time released");
        assert_eq!(h.source.sent_through(), 5000 * MS, "and all of it went out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_speed_change_re_anchors_at_the_last_record_released() {
        let (h, rx) = Harness::new(1000, Speed::Factor(1.0));
        let records = vec![rec(0, "/a"), rec(1000, "/b"), rec(2000, "/c"), rec(3000, "/d")];
        let wheel = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let control = h.control.clone();
        let twice_as_fast = async |a: &Arrival| {
            if a.records[0].0 == "/b" {
                control.send_modify(|c| c.speed = Speed::Factor(2.0));
            }
        };
        let (_, seen) = replay(&h, input(records, &h.accounting), wheel, &stop, rx, twice_as_fast).await;
        // "/b" is due at 1 s; from there on recorded time runs twice as fast.
        assert_eq!(
            seen,
            [
                expect(0, &[("/a", 0)]),
                expect(800, &[("/b", 1000)]),
                expect(1300, &[("/c", 1500)]),
                expect(1800, &[("/d", 2000)]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_shifts_what_is_not_released_by_its_length() {
        let (h, rx) = Harness::new(1000, Speed::Factor(1.0));
        let records = vec![rec(0, "/a"), rec(1000, "/b"), rec(2000, "/c")];
        let wheel = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let (control, mut state) = (h.control.clone(), h.state.subscribe());
        let pause_three_seconds = async |a: &Arrival| {
            if a.records[0].0 == "/a" {
                control.send_modify(|c| c.paused = true);
                state.wait_for(|s| *s == JobState::Paused).await.expect("paused");
                sleep(Duration::from_secs(3)).await;
                control.send_modify(|c| c.paused = false);
            }
        };
        let (_, seen) =
            replay(&h, input(records, &h.accounting), wheel, &stop, rx, pause_three_seconds).await;
        assert_eq!(
            seen,
            [expect(0, &[("/a", 0)]), expect(3800, &[("/b", 4000)]), expect(4800, &[("/c", 5000)])]
        );
        assert_eq!(*h.state.borrow(), JobState::Running, "resumed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_replayer_gets_nothing_until_it_acknowledges() {
        let (h, rx) = Harness::new(16, Speed::Max);
        let records: Vec<Record> = (0..40).map(|i| rec(i, &format!("/{i}"))).collect();
        let wheel = TimeWheel::new(Speed::Max, Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let (mut received, mut in_flight_when_full) = (0, Vec::new());
        let ack_late = async |a: &Arrival| {
            received += a.records.len() as u64;
            if received % 16 == 0 || received == 40 {
                // The window is used up: nothing more comes however long the replayer waits.
                sleep(Duration::from_secs(5)).await;
                in_flight_when_full.push(h.fleet.in_flight());
                h.ack(received);
            }
        };
        let (_, seen) = replay(&h, input(records, &h.accounting), wheel, &stop, rx, ack_late).await;
        let sizes: Vec<usize> = seen.iter().map(|a| a.records.len()).collect();
        assert_eq!(sizes, [16, 16, 8], "each batch is what the credits allowed");
        assert_eq!(in_flight_when_full, [16, 16, 8]);
        assert_eq!(seen[1].at_ms, 5000, "the second batch waited for the ack");
        let paths: Vec<String> = seen.iter().flat_map(|a| a.records.iter().map(|r| r.0.clone())).collect();
        assert_eq!(paths, (0..40).map(|i| format!("/{i}")).collect::<Vec<_>>(), "in order");
    }

    /// A batch goes out at BATCH_BYTES whatever its count: 1 MiB bodies, 4 to a batch.
    #[tokio::test(start_paused = true)]
    async fn large_records_go_out_in_batches_of_bounded_size() {
        let (h, rx) = Harness::new(1000, Speed::Max);
        let body = Bytes::from(vec![b'x'; 1 << 20]);
        let records: Vec<Record> =
            (0..10).map(|i| Record { body: body.clone(), ..rec(0, &format!("/{i}")) }).collect();
        let wheel = TimeWheel::new(Speed::Max, Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let (_, seen) =
            replay(&h, input(records, &h.accounting), wheel, &stop, rx, async |_: &Arrival| {}).await;
        let sizes: Vec<usize> = seen.iter().map(|a| a.records.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_counts_what_was_not_sent() {
        let (h, rx) = Harness::new(1000, Speed::Factor(1.0));
        let records = vec![rec(0, "/a"), rec(10_000, "/b"), rec(20_000, "/c")];
        let wheel = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0);
        let stop = CancellationToken::new();
        let stop_after_first = async |_: &Arrival| stop.cancel();
        let (stopped, seen) =
            replay(&h, input(records, &h.accounting), wheel, &stop, rx, stop_after_first).await;
        assert!(stopped);
        assert_eq!(seen, [expect(0, &[("/a", 0)])]);
        let c = h.accounting.counts();
        assert_eq!(c.dispatched, 1);
        assert_eq!(c.dropped.get(&DropReason::Stopped), Some(&1), "the record waiting for its slot");
        assert_eq!(h.source.sent_through(), 0, "what went out is /a's time, not /b's");
    }
}
