//! Keys in order (`[proxy] ordered`): a record whose order key has a request in flight
//! waits until that request has been answered, or has been in flight for the order timeout.
//!
//! The dispatcher routes a key's records to one replayer and marks each with its order key (a
//! hash of the key). Here, a connection that takes a record of a busy order key puts it behind
//! that order key's request in flight instead of sending it, and takes the next record. The
//! connection whose request ends sends the order key's next record itself, at once: no other
//! record of that order key can start in between. Each request in flight holds a *ticket*; a
//! request's end lets the next record go only if its ticket is still the order key's (after a
//! timeout it is not: the next one went already).
//!
//! Timeouts are kept only for order keys with records waiting, in a heap by deadline: the
//! driver sleeps to the first and lets those records go into the queue of due records.
//! Memory is bounded by the records a replayer holds at all (the dispatcher's credits).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use foldhash::HashMap;
use tokio::time::Instant;

use super::Due;

/// The order key of a record taken for sending, and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket {
    pub order_key: u64,
    pub number: u64,
}

/// A record let go after waiting: how long, and whether the order timeout let it go.
#[derive(Debug)]
pub(super) struct Released {
    pub due: Due,
    pub ticket: Ticket,
    pub waited: Duration,
    pub timed_out: bool,
}

/// A order key with a request in flight (or let go and not yet sent).
#[derive(Debug)]
struct Busy {
    /// The ticket of its request in flight.
    number: u64,
    /// When that request was let go (its order timeout runs from then).
    since: Instant,
    /// Records waiting behind it, in due order, each with when it began to wait.
    waiting: VecDeque<(Due, Instant)>,
}

#[derive(Debug)]
pub(super) struct OrderKeys {
    timeout: Duration,
    busy: HashMap<u64, Busy>,
    /// (deadline, order key, ticket) of order keys with records waiting; an entry whose ticket
    /// is no longer its order key's is stale and skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    next_number: u64,
    /// Records waiting, over all order keys.
    held: usize,
}

impl OrderKeys {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, busy: HashMap::default(), deadlines: BinaryHeap::new(), next_number: 0, held: 0 }
    }

    /// Records waiting for their order key.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    fn ticket(&mut self, order_key: u64) -> Ticket {
        self.next_number += 1;
        Ticket { order_key, number: self.next_number }
    }

    /// A record a connection took: back with its ticket if it may be sent now (its order key
    /// is then busy until [`OrderKeys::done`]), or `None` if it waits behind its order key's
    /// request.
    pub fn take(&mut self, due: Due, now: Instant) -> Option<(Ticket, Due)> {
        let order_key = due.0.order_key;
        if let Some(busy) = self.busy.get_mut(&order_key) {
            if busy.waiting.is_empty() {
                self.deadlines.push(Reverse((busy.since + self.timeout, order_key, busy.number)));
            }
            busy.waiting.push_back((due, now));
            self.held += 1;
            return None;
        }
        let ticket = self.ticket(order_key);
        self.busy.insert(order_key, Busy { number: ticket.number, since: now, waiting: VecDeque::new() });
        Some((ticket, due))
    }

    /// The request holding `ticket` ended: its order key's next record, let go now (to be sent
    /// at once by the caller), if that ticket still held the order key.
    pub fn done(&mut self, ticket: Ticket, now: Instant) -> Option<Released> {
        let busy = self.busy.get_mut(&ticket.order_key).filter(|b| b.number == ticket.number)?;
        if busy.waiting.is_empty() {
            self.busy.remove(&ticket.order_key);
            return None;
        }
        Some(self.let_go(ticket.order_key, now, false))
    }

    /// Lets the first record waiting in `order_key` go; the order key stays busy with it.
    fn let_go(&mut self, order_key: u64, now: Instant, timed_out: bool) -> Released {
        let ticket = self.ticket(order_key);
        // Callers checked that the order key is busy and has a record waiting.
        let busy = self.busy.get_mut(&order_key).expect("a busy order_key");
        let (due, since) = busy.waiting.pop_front().expect("a waiting record");
        busy.number = ticket.number;
        busy.since = now;
        if !busy.waiting.is_empty() {
            self.deadlines.push(Reverse((now + self.timeout, order_key, ticket.number)));
        }
        self.held -= 1;
        Released { due, ticket, waited: now.saturating_duration_since(since), timed_out }
    }

    /// When the next order timeout falls, if a record waits for one.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, order_key, number))) = self.deadlines.peek().copied() {
            if self.is_current(order_key, number) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    fn is_current(&self, order_key: u64, number: u64) -> bool {
        self.busy.get(&order_key).is_some_and(|b| b.number == number && !b.waiting.is_empty())
    }

    /// Lets go the next record of each order key whose request has been in flight for the
    /// order timeout by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Released> {
        let mut out = Vec::new();
        while let Some(Reverse((at, order_key, number))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.is_current(order_key, number) {
                out.push(self.let_go(order_key, now, true));
            }
        }
        out
    }

    /// The job was stopped: every waiting record is dropped; how many.
    pub fn clear(&mut self) -> usize {
        let held = self.held;
        self.busy.clear();
        self.deadlines.clear();
        self.held = 0;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(order_key: u64, path: &str) -> Due {
        let mut rec = crate::gets([(path, 1)]).remove(0);
        rec.order_key = order_key;
        (rec, Instant::now())
    }

    /// A busy order key's records wait in order; each end lets exactly the next go, after the
    /// time it waited; other order keys and records without one are never held.
    #[test]
    fn an_order_key_sends_one_request_at_a_time_in_order() {
        let t0 = Instant::now();
        let mut s = OrderKeys::new(Duration::from_secs(5));
        let (first, _) = s.take(due(7, "/a"), t0).expect("an idle order_key sends");
        assert!(s.take(due(7, "/b"), t0).is_none());
        assert!(s.take(due(7, "/c"), t0 + Duration::from_millis(1)).is_none());
        let (other, _) = s.take(due(8, "/x"), t0).expect("another order_key is not held");
        assert_eq!(s.held(), 2);
        let b = s.done(first, t0 + Duration::from_millis(30)).expect("b goes");
        assert_eq!(
            (b.due.0.view().expect("view").path, b.waited, b.timed_out),
            (&b"/b"[..], Duration::from_millis(30), false)
        );
        assert!(s.done(first, t0 + Duration::from_millis(31)).is_none(), "an old ticket lets nothing go");
        assert!(s.take(due(7, "/d"), t0 + Duration::from_millis(32)).is_none(), "still busy with b");
        let c = s.done(b.ticket, t0 + Duration::from_millis(50)).expect("c goes");
        assert_eq!(c.waited, Duration::from_millis(49));
        let d = s.done(c.ticket, t0 + Duration::from_millis(60)).expect("d goes");
        assert!(s.done(d.ticket, t0 + Duration::from_millis(70)).is_none());
        assert!(s.done(other, t0).is_none());
        assert_eq!(s.held(), 0);
        assert!(
            s.take(due(7, "/e"), t0 + Duration::from_millis(80)).is_some(),
            "the order_key is idle again"
        );
        assert_eq!(s.next_deadline(), None, "nothing waits");
    }

    /// A request in flight for the order timeout lets its order key's next record go; when it
    /// ends later it lets nothing go (the next one is that record's to let go).
    #[test]
    fn the_order_timeout_lets_the_next_record_go() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(200);
        let mut s = OrderKeys::new(timeout);
        let (slow, _) = s.take(due(3, "/slow"), t0).expect("sends");
        assert!(s.take(due(3, "/next"), t0 + Duration::from_millis(10)).is_none());
        assert!(s.take(due(3, "/last"), t0 + Duration::from_millis(20)).is_none());
        assert_eq!(s.next_deadline(), Some(t0 + timeout));
        assert!(s.expire(t0 + Duration::from_millis(199)).is_empty());
        let went = s.expire(t0 + timeout);
        assert_eq!(went.len(), 1);
        assert_eq!((went[0].waited, went[0].timed_out), (Duration::from_millis(190), true));
        assert!(s.done(slow, t0 + Duration::from_millis(300)).is_none(), "the slow one's end is too late");
        assert_eq!(s.next_deadline(), Some(t0 + 2 * timeout), "the next timeout runs from the let-go");
        let last = s.done(went[0].ticket, t0 + Duration::from_millis(250)).expect("last goes");
        assert!(!last.timed_out);
        assert_eq!(s.next_deadline(), None, "a stale deadline is skipped");
        assert!(s.expire(t0 + Duration::from_secs(10)).is_empty());
        assert!(s.take(due(3, "/more"), t0).is_none(), "still busy with the last");
        assert_eq!(s.clear(), 1);
        assert_eq!(s.held(), 0);
    }
}
