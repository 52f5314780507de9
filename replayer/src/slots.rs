//! A fixed set of long-lived futures polled by one task, each with a waker of its own.
//!
//! The executor's driver keeps one future per connection for the whole job. When a socket
//! becomes ready, its future's waker sets that slot's bit and wakes the driver; the driver
//! polls only the slots whose bits are set. This is the readiness loop of wrk (one thread,
//! many connections) on tokio: no task per connection and no allocation per request (a
//! `FuturesUnordered` holds one future per *request*, allocated and moved on each push;
//! measured in this file's git history).

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
    driver: AtomicWaker,
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
        self.woken.bits[self.index / 64].fetch_or(1 << (self.index % 64), Ordering::AcqRel);
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
                    if slot.as_mut().poll(&mut slot_cx).is_ready() {
                        self.slots[index] = None;
                        self.live -= 1;
                    }
                }
            }
            if self.live == 0 {
                return Poll::Ready(());
            }
            if !polled {
                return Poll::Pending;
            }
            if budget == 0 {
                if self.woken.bits.iter().any(|w| w.load(Ordering::Acquire) != 0) {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
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
}
