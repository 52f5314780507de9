//! The driver: one task per job that owns every connection, as one long-lived future each
//! ([`Slots`]), and hands them due records.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use reprise_proto::batch::Received;
use reprise_proto::stats::ErrorKind;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::compare::Sides;
use super::order::{OrderKeys, Released, Ticket};
use super::{Due, Executor, Wait};
use crate::http::Link;
use crate::slots::Slots;

/// Connections opened when a job starts, before its first instant.
const WARM_LINKS: usize = 4;

/// How long requests in flight when a job is stopped may take to be answered; then they
/// are cut, each counted sent with the error "cancelled". Long enough for a healthy
/// target's answers, short enough that a stop (or SIGTERM) ends within the dispatcher's
/// `[proxy] drain_timeout` even against a target that never answers.
pub const IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How far ahead in the queue a connection prefetches a record's bytes (see `serve`).
const LOOKAHEAD: usize = 4;

/// Records waiting for a connection, shared by the driver and the connections' futures. All
/// are polled by the one driver task, so the lock is never contended (two atomic operations).
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Due>,
    /// Records of order keys let go by the order timeout: taken before `waiting` (they are
    /// due already, and their order key is reserved for them).
    released: VecDeque<Released>,
    /// Keys in order (`ordered` jobs): which have a request in flight, and what waits.
    order_keys: Option<OrderKeys>,
    /// Connections waiting for a record, last idle last (taken first: at low rates few stay
    /// warm). An entry whose flag is down is stale: that connection took a record since.
    idle: Vec<usize>,
    /// Which connections are idle.
    idle_flags: Vec<bool>,
    /// Connections still opening (each takes a record once open).
    opening: usize,
    /// No more records come: a connection that finds none ends.
    closed: bool,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    /// Records a connection could take now.
    fn ready(&self) -> usize {
        self.waiting.len() + self.released.len()
    }

    /// The next record to send: one let go by an order timeout, else the first waiting one
    /// whose order key (if it has one) is idle; a record of a busy order key is put behind it.
    fn next(&mut self) -> Option<Next> {
        if let Some(r) = self.released.pop_front() {
            return Some(Next::released(r));
        }
        loop {
            let due = self.waiting.pop_front()?;
            let Some(order_keys) = self.order_keys.as_mut().filter(|_| due.0.order_key != 0) else {
                return Some(Next { due, ticket: None, wait: None });
            };
            if let Some((ticket, due)) = order_keys.take(due, Instant::now()) {
                return Some(Next { due, ticket: Some(ticket), wait: None });
            }
        }
    }
}

/// A record a connection sends next, with its order key's ticket and how long it waited for
/// its order key, if it did.
struct Next {
    due: Due,
    ticket: Option<Ticket>,
    wait: Option<Wait>,
}

impl Next {
    fn released(r: Released) -> Self {
        Next {
            due: r.due,
            ticket: Some(r.ticket),
            wait: Some(Wait { waited: r.waited, timed_out: r.timed_out }),
        }
    }
}

impl Executor {
    /// The driver: hands due records to the connections' futures and polls those woken
    /// ([`Slots`]). A connection that finishes an exchange takes the next waiting record
    /// itself; one that finds none waits in `idle` until the driver wakes it for one. Returns
    /// once the chunks have ended (or the job is stopped: records still waiting are counted
    /// cancelled) and every exchange in flight has finished.
    pub(super) async fn drive(
        self: &Arc<Self>,
        chunks: &mut mpsc::Receiver<Vec<Due>>,
        cancel: &CancellationToken,
    ) {
        let limit = self.cfg.concurrency.max(1) as usize;
        let order_keys = self
            .cfg
            .ordered
            .then(|| OrderKeys::new(std::time::Duration::from_millis(self.cfg.order_timeout_ms.max(1))));
        let queue =
            Arc::new(Mutex::new(Queue { idle_flags: vec![false; limit], order_keys, ..Queue::default() }));
        let mut slots = Slots::with_capacity(limit);
        // A few connections open before the first instant; more while records wait.
        for _ in 0..limit.min(WARM_LINKS) {
            self.add_link(&mut slots, &queue);
        }
        let mut open = true;
        // A stop wakes the driver: once the chunks have ended, nothing else might (a request
        // in flight that is never answered, records waiting for their order key).
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        // Started when the job is stopped: at its end, requests still in flight are cut.
        let mut cut_at: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // The next order timeout of a order key with records waiting (ordered jobs).
        let mut order_at: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            loop {
                let mut progress = false;
                let mut recv_pending = false;
                let grow;
                if !self.stopped.load(Relaxed) && cancelled.as_mut().poll(cx).is_ready() {
                    self.stopped.store(true, Relaxed);
                }
                {
                    let mut q = lock(&queue);
                    // Due records, while few wait (at speed "max" a chunk is a whole batch).
                    while open && q.waiting.len() < limit {
                        match chunks.poll_recv(cx) {
                            Poll::Ready(Some(chunk)) => {
                                q.waiting.extend(chunk);
                                progress = true;
                            }
                            Poll::Ready(None) => {
                                open = false;
                                q.closed = true;
                            }
                            Poll::Pending => {
                                recv_pending = true;
                                break;
                            }
                        }
                    }
                    if self.stopped.load(Relaxed) {
                        let held = q.order_keys.as_mut().map_or(0, OrderKeys::clear);
                        self.recorder.cancel((q.ready() + held) as u64);
                        q.waiting.clear();
                        q.released.clear();
                        q.closed = true;
                        cut_at.get_or_insert_with(|| Box::pin(tokio::time::sleep(IN_FLIGHT_GRACE)));
                    }
                    if order_timeouts(&mut q, &mut order_at, cx) {
                        progress = true;
                    }
                    // An idle connection per waiting record (all of them once closed: they end).
                    let mut unserved = q.ready();
                    while unserved > 0 || (q.closed && !q.idle.is_empty()) {
                        let Some(index) = q.idle.pop() else { break };
                        if !q.idle_flags[index] {
                            continue; // it took a record since (see `serve`)
                        }
                        q.idle_flags[index] = false;
                        slots.wake(index);
                        unserved = unserved.saturating_sub(1);
                        progress = true;
                    }
                    // Records wait and no connection is idle or opening: one more. (Not one
                    // per waiting record: a slow connect would open hundreds at once.)
                    grow = unserved > 0 && q.opening == 0 && slots.live() < limit;
                }
                if grow {
                    self.add_link(&mut slots, &queue);
                    progress = true;
                }
                if let Some(at) = cut_at.as_mut()
                    && !self.cut.load(Relaxed)
                    && at.as_mut().poll(cx).is_ready()
                {
                    // Each exchange sees the flag when polled, and ends as "cancelled".
                    self.cut.store(true, Relaxed);
                    slots.wake_all();
                    progress = true;
                }
                if slots.poll(cx).is_ready() && (!open || self.stopped.load(Relaxed)) {
                    return Poll::Ready(());
                }
                // Go round again if anything moved, or if the queue made room since the
                // chunks were last looked at (nothing would wake the driver for that).
                let room = open && !recv_pending && lock(&queue).waiting.len() < limit;
                if !progress && !room {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }

    /// A new connection and its future, opening ahead of its first record.
    fn add_link(self: &Arc<Self>, slots: &mut Slots, queue: &Arc<Mutex<Queue>>) {
        let (me, shared) = (Arc::clone(self), Arc::clone(queue));
        // Callers add below the limit the slots were made for, so there is room.
        if slots.add(move |index| me.serve(shared, index)).is_some() {
            lock(queue).opening += 1;
            self.links.fetch_add(1, Relaxed);
        }
    }

    /// One connection, for the whole job: opens, then sends waiting records one after
    /// another, until the queue is closed and empty. After a request of a order key, it sends
    /// the next record that order key holds, if any, before anything else.
    async fn serve(self: Arc<Self>, queue: Arc<Mutex<Queue>>, index: usize) {
        let mut link = Link::default();
        let mut sides = self.compare.as_ref().map(|_| Box::<Sides>::default());
        self.target.open(&mut link).await;
        if let (Some(compare), Some(sides)) = (&self.compare, sides.as_mut()) {
            compare.open(sides).await;
        }
        lock(&queue).opening -= 1;
        let mut own: Option<Next> = None;
        loop {
            let next = std::future::poll_fn(|_| {
                if let Some(next) = own.take() {
                    return Poll::Ready(Some(next));
                }
                let mut q = lock(&queue);
                match q.next() {
                    Some(next) => {
                        // Records a few places on are cold (their chunk came a whole queue
                        // ago): their slot is prefetched first, their bytes once the slot is
                        // in (it was prefetched that many takes ago).
                        if let Some(slot) = q.waiting.get(2 * LOOKAHEAD) {
                            reprise_proto::hint::prefetch(slot);
                        }
                        if let Some((ahead, _)) = q.waiting.get(LOOKAHEAD) {
                            ahead.prefetch();
                        }
                        // Polled while listed idle (a stale wake, e.g. its timer's old
                        // deadline): no longer idle; the driver skips its entry.
                        q.idle_flags[index] = false;
                        Poll::Ready(Some(next))
                    }
                    None if q.closed => Poll::Ready(None),
                    None => {
                        // The driver wakes it for a record (or to end).
                        if !q.idle_flags[index] {
                            q.idle_flags[index] = true;
                            q.idle.push(index);
                        }
                        Poll::Pending
                    }
                }
            });
            let Some(Next { due: (rec, due), ticket, wait }) = next.await else { return };
            if self.stopped.load(Relaxed) {
                self.recorder.cancel(1);
            } else {
                self.fire(&mut link, sides.as_deref_mut(), &rec, due, wait).await;
            }
            if let Some(ticket) = ticket {
                let mut q = lock(&queue);
                own = q.order_keys.as_mut().and_then(|s| s.done(ticket, Instant::now())).map(Next::released);
            }
        }
    }

    async fn fire(
        &self,
        link: &mut Link,
        sides: Option<&mut Sides>,
        rec: &Received,
        due: Instant,
        wait: Option<Wait>,
    ) {
        let sent = Instant::now();
        let result = match (rec.view(), &self.compare, sides) {
            (Ok(view), Some(compare), Some(sides)) => {
                // Boxed: the three exchanges joined would make every record's future (this
                // one's, compared or not) three times as large.
                let (outcome, found) =
                    Box::pin(compare.exchange(&self.target, link, sides, &view, sent.into_std(), &self.cut))
                        .await;
                match found {
                    Some(f) => {
                        self.recorder.record_compare(rec.endpoint, &f.differing, &f.noise, f.over_max_body)
                    }
                    None => self.recorder.record_uncompared(rec.endpoint),
                }
                outcome
            }
            (Ok(view), _, _) => self.target.exchange(link, &view, sent.into_std(), &self.cut).await,
            // Only a dispatcher of another build could send a record that does not decode
            // (the versions must match): it counts as an error, the job goes on.
            (Err(e), _, _) => {
                tracing::warn!(error = %e, "a record could not be decoded");
                Err(ErrorKind::Other)
            }
        };
        self.complete(rec, due, sent, result.map(Some), wait);
    }
}

/// Lets go the records whose order key's request has been in flight for the order timeout,
/// and keeps `timer` set for the next such instant; true if some were let go (or the timer
/// fired: the driver looks again).
fn order_timeouts(q: &mut Queue, timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    let Some(at) = q.order_keys.as_mut().and_then(OrderKeys::next_deadline) else { return false };
    let now = Instant::now();
    if at <= now {
        let went = q.order_keys.as_mut().map(|s| s.expire(now)).unwrap_or_default();
        q.released.extend(went);
        return true;
    }
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if timer.deadline() != at {
        timer.as_mut().reset(at);
    }
    timer.as_mut().poll(cx).is_ready()
}
