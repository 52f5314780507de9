//! A fixed set of long-lived futures polled by one task, each with a waker of its own.
//!
//! The executor's driver keeps one future per connection for the whole job. When a socket
//! becomes ready, its future's waker sets that slot's bit and wakes the driver; the driver
//! polls only the slots whose bits are set. This is the readiness loop of wrk (one thread,
//! many connections) on tokio: no task per connection and no allocation per request (a
//! `FuturesUnordered` holds one future per *request*, allocated and moved on each push;
//! measured in this file's git history).
//!
//! A future that wakes itself while it is polled yields: it is polled again once the slots
//! that others woke meanwhile have had their turn. An HTTP/2 link that queued its request
//! wakes itself to write it once the links woken by the same read have queued theirs, so
//! one write carries the batch (polled again at once, the first of them wrote its request
//! alone: twice the writes for the server to read).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

type Slot = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which slots were woken, and who polls them.
struct Woken {
    /// Bit `i % 64` of word `i / 64`: slot `i` was woken since the driver last looked.
    bits: Vec<AtomicU64>,
    /// Slots that woke themselves while polled: set in `bits` once no other slot is woken.
    later: Vec<AtomicU64>,
    driver: AtomicWaker,
}

impl Woken {
    /// Moves the slots that yielded into `bits`; whether there were any.
    fn take_later(&self) -> bool {
        let mut any = false;
        for (bits, later) in self.bits.iter().zip(&self.later) {
            let yielded = later.swap(0, Ordering::Relaxed);
            if yielded != 0 {
                bits.fetch_or(yielded, Ordering::AcqRel);
                any = true;
            }
        }
        any
    }
}

thread_local! {
    /// The slot this thread is polling: its `Woken` (by address) and index.
    static POLLING: Cell<(usize, usize)> = const { Cell::new((0, usize::MAX)) };
}

/// Slot `index`'s waker: marks it and wakes the driver.
struct SlotWaker {
    woken: Arc<Woken>,
    index: usize,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let (word, bit) = (self.index / 64, 1 << (self.index % 64));
        // Woken from its own poll (on the driver's thread, so the driver sees it before it
        // returns): it yields.
        if POLLING.with(Cell::get) == (Arc::as_ptr(&self.woken) as usize, self.index) {
            self.woken.later[word].fetch_or(bit, Ordering::Relaxed);
            return;
        }
        self.woken.bits[word].fetch_or(bit, Ordering::AcqRel);
        self.woken.driver.wake();
    }
}

/// Up to `capacity` futures, each polled when its waker fires (or when [`Slots::wake`]
/// asks), until it completes.
pub struct Slots {
    slots: Vec<Option<Slot>>,
    wakers: Vec<Waker>,
    woken: Arc<Woken>,
    live: usize,
}

impl Slots {
    pub fn with_capacity(capacity: usize) -> Slots {
        let capacity = capacity.max(1);
        let woken = Arc::new(Woken {
            bits: (0..capacity.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            later: (0..capacity.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            driver: AtomicWaker::new(),
        });
        let wakers = (0..capacity)
            .map(|index| Waker::from(Arc::new(SlotWaker { woken: Arc::clone(&woken), index })))
            .collect();
        Slots { slots: (0..capacity).map(|_| None).collect(), wakers, woken, live: 0 }
    }

    /// Futures not yet completed.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Adds the future `make` builds for a free slot (given its index), to be polled on the
    /// next [`Slots::poll`]. None if every slot is taken.
    pub fn add<F>(&mut self, make: impl FnOnce(usize) -> F) -> Option<usize>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.slots.iter().position(Option::is_none)?;
        self.slots[index] = Some(Box::pin(make(index)));
        self.live += 1;
        self.wake(index);
        Some(index)
    }

    /// Has slot `index` polled on the next [`Slots::poll`].
    pub fn wake(&self, index: usize) {
        if let Some(word) = self.woken.bits.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::AcqRel);
        }
    }

    /// Has every live slot polled on the next [`Slots::poll`] (to notice a change that
    /// none of their wakers reports, e.g. requests in flight being cut).
    pub fn wake_all(&self) {
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.is_some() {
                self.wake(index);
            }
        }
    }

    /// Polls every woken slot, again while polling wakes more, up to `2 × live` polls; then,
    /// if some are still woken (a future out of tokio's budget wakes itself at once), yields
    /// with the task woken so the others on its thread get their turn. Ready once no future
    /// is left.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.woken.driver.register(cx.waker());
        let mut budget = 2 * self.live.max(1);
        loop {
            let mut polled = false;
            for (w, word) in self.woken.bits.iter().enumerate() {
                let mut bits = word.swap(0, Ordering::AcqRel);
                while bits != 0 {
                    let index = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else { continue };
                    polled = true;
                    budget = budget.saturating_sub(1);
                    let mut slot_cx = Context::from_waker(&self.wakers[index]);
                    let _polling = Polling::set(Arc::as_ptr(&self.woken) as usize, index);
                    if slot.as_mut().poll(&mut slot_cx).is_ready() {
                        self.slots[index] = None;
                        self.live -= 1;
                    }
                }
            }
            if self.live == 0 {
                return Poll::Ready(());
            }
            // Those that yielded go once no other slot is woken.
            if !polled && !self.woken.take_later() {
                return Poll::Pending;
            }
            if budget == 0 {
                self.woken.take_later();
                if self.woken.bits.iter().any(|w| w.load(Ordering::Acquire) != 0) {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
    }
}

/// Marks a slot as being polled on this thread, until dropped.
struct Polling;

impl Polling {
    fn set(woken: usize, index: usize) -> Polling {
        POLLING.with(|p| p.set((woken, index)));
        Polling
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.with(|p| p.set((0, usize::MAX)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Slots are polled when woken and only then; a completed one frees its place; the set
    /// is ready once all have completed.
    #[tokio::test]
    async fn slots_run_when_woken_and_free_their_place_when_done() {
        let mut slots = Slots::with_capacity(70);
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..70 {
            let (polls, rx) = (Arc::clone(&polls), Arc::clone(&rx));
            slots
                .add(move |_| async move {
                    polls.fetch_add(1, Ordering::Relaxed);
                    // Each slot ends after one message.
                    let _ = rx.lock().await.recv().await;
                })
                .expect("room");
        }
        assert!(slots.add(|_| async {}).is_none(), "no 71st slot");
        let first = std::future::poll_fn(|cx| Poll::Ready(slots.poll(cx))).await;
        assert!(first.is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 70);
        for _ in 0..70 {
            tx.send(()).expect("open");
        }
        std::future::poll_fn(|cx| slots.poll(cx)).await;
        assert_eq!(slots.live(), 0);
        assert_eq!(slots.add(|i| async move { assert!(i < 70) }), Some(0));
    }

    /// A slot that wakes itself while polled is polled again after a slot it woke, though
    /// its own index comes first.
    #[tokio::test]
    async fn a_slot_that_wakes_itself_goes_after_the_slots_woken_meanwhile() {
        let mut slots = Slots::with_capacity(2);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let first_log = Arc::clone(&log);
        let mut polls = 0;
        slots.add(move |_| {
            std::future::poll_fn(move |cx| {
                polls += 1;
                first_log.lock().expect("log").push(format!("first {polls}"));
                match polls {
                    // The second slot, polled once meanwhile, waits for this.
                    2 => tx.send(()).expect("open"),
                    3 => return Poll::Ready(()),
                    _ => {}
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
        });
        let second_log = Arc::clone(&log);
        slots.add(move |_| async move {
            let _ = rx.recv().await;
            second_log.lock().expect("log").push("second".to_owned());
        });
        std::future::poll_fn(|cx| slots.poll(cx)).await;
        assert_eq!(*log.lock().expect("log"), ["first 1", "first 2", "second", "first 3"]);
    }
}
