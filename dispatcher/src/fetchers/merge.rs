//! Puts the fetchers' streams in time order, pulled by the dispatch loop through
//! [`Merger::next`]: a k-way merge across streams (each stream is nearly ordered), then a
//! reorder buffer that holds records until the newest one seen is a window ahead of them. A
//! record older than what was already released is late: counted and passed on flagged, for
//! the wheel to send at once or drop. `[begin, end]` is applied to the ordered output: earlier
//! records are counted out of range, and the first record after `end` ends the input.
//!
//! Two kinds of stream beside the plain one (a file):
//! - A *lazy* stream (an object whose key says it holds nothing before some time) sits in the
//!   merge as a placeholder keyed by that time and is opened when the merge reaches it, so
//!   a bucket of many objects is read a few at a time, in order, in bounded memory.
//! - A *live* stream (a Kafka partition in follow mode) sends an empty chunk when it has
//!   caught up. The merge then stops waiting for it: an idle partition must not hold up the
//!   others. When every open stream is idle, what the reorder buffer holds is released once
//!   a window of real time has passed without news, so the tail of live traffic is not held
//!   back until more arrives.
//!
//! The reorder buffer keeps in-order records in a queue (each moved once) and only the
//! stragglers in a heap, so the common, ordered case costs no heap sifting of whole records.
//! Memory: one chunk per open stream plus the records inside the window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::accounting::Accounting;
use crate::record::Record;

/// What a stream sends the merge: records, each boxed. A record is ~180 bytes and moves
/// through the merge and the reorder buffer several times; moving a pointer instead was
/// ~5 % of the dispatcher's CPU in bench (a).
pub type Chunk = Vec<Box<Record>>;

/// Shortest real-time wait before idle live streams let the reorder buffer go.
const MIN_IDLE_FLUSH: Duration = Duration::from_millis(100);

/// One nearly ordered stream of record chunks into the merge.
pub struct Stream {
    rx: mpsc::Receiver<Chunk>,
    /// Lazy: holds no record before this instant (ns) and is opened when the merge gets there.
    opens_at: Option<i64>,
    /// Told when a lazy stream is opened, so its producer may start.
    on_open: Option<oneshot::Sender<()>>,
}

impl Stream {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Self { rx, opens_at: None, on_open: None }
    }

    /// The channel itself (for tests of a fetcher alone).
    #[cfg(test)]
    pub fn into_receiver(self) -> mpsc::Receiver<Chunk> {
        self.rx
    }

    pub fn lazy(rx: mpsc::Receiver<Chunk>, opens_at: i64, on_open: oneshot::Sender<()>) -> Self {
        Self { rx, opens_at: Some(opens_at), on_open: Some(on_open) }
    }
}

impl From<mpsc::Receiver<Chunk>> for Stream {
    fn from(rx: mpsc::Receiver<Chunk>) -> Self {
        Self::new(rx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Lazy, not opened yet; its placeholder is in the heap.
    Pending,
    /// Has a head in the heap, or is being refilled.
    Active,
    /// Live and caught up: not waited for until it sends records.
    Idle,
    Closed,
}

/// What the k-way merge yields.
enum Merged {
    Record(Box<Record>),
    /// Every open stream is idle and a window passed: release what the buffer holds.
    Flush,
    End,
}

/// A record in time order, or a late one.
#[derive(Debug)]
pub struct Ordered {
    pub record: Box<Record>,
    pub late: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct MergeOptions {
    pub window_ns: i64,
    pub begin: Option<i64>,
    pub end: Option<i64>,
}

/// A straggler, ordered by (ts, arrival) so equal timestamps keep their arrival order.
struct Straggler {
    ts: i64,
    seq: u64,
    record: Box<Record>,
}

impl PartialEq for Straggler {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Straggler {}
impl PartialOrd for Straggler {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Straggler {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// The reorder buffer.
#[derive(Default)]
struct Reorder {
    run: VecDeque<(u64, Box<Record>)>,
    stragglers: BinaryHeap<Reverse<Straggler>>,
    newest: Option<i64>,
    released: Option<i64>,
    seq: u64,
}

impl Reorder {
    /// Takes a record in; returns it back if it is late.
    fn push(&mut self, record: Box<Record>) -> Option<Box<Record>> {
        if self.released.is_some_and(|r| record.ts < r) {
            return Some(record);
        }
        self.seq += 1;
        self.newest = Some(self.newest.map_or(record.ts, |n| n.max(record.ts)));
        if self.run.back().is_none_or(|(_, b)| record.ts >= b.ts) {
            self.run.push_back((self.seq, record));
        } else {
            self.stragglers.push(Reverse(Straggler { ts: record.ts, seq: self.seq, record }));
        }
        None
    }

    /// The oldest record at or before `horizon`, if any.
    fn pop_until(&mut self, horizon: i64) -> Option<Box<Record>> {
        let run = self.run.front().map(|(s, r)| (r.ts, *s));
        let straggler = self.stragglers.peek().map(|Reverse(s)| (s.ts, s.seq));
        let record = match (run, straggler) {
            (Some(a), Some(b)) if b < a && b.0 <= horizon => self.stragglers.pop().map(|Reverse(s)| s.record),
            (Some(a), _) if a.0 <= horizon => self.run.pop_front().map(|(_, r)| r),
            (None, Some(b)) if b.0 <= horizon => self.stragglers.pop().map(|Reverse(s)| s.record),
            _ => None,
        }?;
        self.released = Some(record.ts);
        Some(record)
    }

    fn horizon(&self, window_ns: i64) -> i64 {
        self.newest.map_or(i64::MIN, |n| n.saturating_sub(window_ns))
    }
}

/// Merges chunked streams into one ordered sequence.
pub struct Merger {
    streams: Vec<Stream>,
    state: Vec<State>,
    buffers: Vec<VecDeque<Box<Record>>>,
    heads: BinaryHeap<Reverse<(i64, usize)>>,
    started: bool,
    reorder: Reorder,
    /// Every stream has ended; what the reorder buffer holds is all that is left.
    exhausted: bool,
    /// Idle live streams: release the whole reorder buffer.
    flushing: bool,
    /// The first record, taken early by [`Merger::prime`].
    primed: Option<Ordered>,
    /// A stream whose buffer the last record emptied: refilled at the next pull, not before
    /// returning that record, so a pull dropped while it waits (the job stopped) has taken
    /// nothing it did not hand over.
    refill_due: Option<usize>,
    done: bool,
    opts: MergeOptions,
    accounting: Arc<Accounting>,
}

impl Merger {
    pub fn new(streams: Vec<Stream>, opts: MergeOptions, accounting: Arc<Accounting>) -> Self {
        let n = streams.len();
        Self {
            streams,
            state: vec![State::Active; n],
            buffers: (0..n).map(|_| VecDeque::new()).collect(),
            heads: BinaryHeap::with_capacity(n),
            started: false,
            reorder: Reorder::default(),
            exhausted: false,
            flushing: false,
            primed: None,
            refill_due: None,
            done: false,
            opts,
            accounting,
        }
    }

    /// Waits until the first record is at hand (or the input turns out empty).
    pub async fn prime(&mut self) {
        if self.primed.is_none() {
            self.primed = self.next_ordered().await;
        }
    }

    /// The recorded time of the first record, once [`Merger::prime`]d (none: no record).
    pub fn first_ts(&self) -> Option<i64> {
        self.primed.as_ref().map(|o| o.record.ts)
    }

    /// The next record in time order (or a late one), or `None` at the end of the input.
    pub async fn next(&mut self) -> Option<Ordered> {
        match self.primed.take() {
            Some(first) => Some(first),
            None => self.next_ordered().await,
        }
    }

    async fn next_ordered(&mut self) -> Option<Ordered> {
        loop {
            if self.done {
                return None;
            }
            let horizon = if self.exhausted || self.flushing {
                i64::MAX
            } else {
                self.reorder.horizon(self.opts.window_ns)
            };
            if let Some(r) = self.reorder.pop_until(horizon) {
                match self.release(r, false) {
                    Some(o) => return Some(o),
                    None => continue,
                }
            }
            self.flushing = false;
            if self.exhausted {
                self.finish();
                return None;
            }
            match self.next_merged().await {
                Merged::Record(record) => {
                    if let Some(late) = self.reorder.push(record) {
                        self.accounting.late();
                        if let Some(o) = self.release(late, true) {
                            return Some(o);
                        }
                    }
                }
                Merged::Flush => self.flushing = true,
                Merged::End => self.exhausted = true,
            }
        }
    }

    /// Applies the range to a released record: `None` when it is out of range or past the end.
    fn release(&mut self, record: Box<Record>, late: bool) -> Option<Ordered> {
        if !late && self.opts.end.is_some_and(|end| record.ts > end) {
            // It and all the reorder buffer holds (all later still) are past the end.
            let held = self.reorder.run.len() + self.reorder.stragglers.len();
            self.accounting.out_of_range_n(1 + held as u64);
            self.finish();
            return None;
        }
        let before = self.opts.begin.is_some_and(|b| record.ts < b);
        let after = self.opts.end.is_some_and(|e| record.ts > e);
        if before || after {
            self.accounting.out_of_range();
            return None;
        }
        Some(Ordered { record, late })
    }

    /// The job stopped: what was taken from the source and not released yet (the reorder
    /// buffer, a primed first record), in order, with the range applied (what is outside
    /// counts out of range, as ever). Ends the input. The caller accounts for these records,
    /// so `input = in_range + out_of_range` holds for a stopped job too.
    pub fn take_held(&mut self) -> Vec<Ordered> {
        let mut held: Vec<Ordered> = self.primed.take().into_iter().collect();
        while !self.done {
            let Some(r) = self.reorder.pop_until(i64::MAX) else { break };
            held.extend(self.release(r, false));
        }
        self.finish();
        held
    }

    /// Ends the input: the fetchers see their streams closed and stop.
    fn finish(&mut self) {
        self.done = true;
        self.streams.clear();
        self.state.clear();
        self.buffers.clear();
        self.heads.clear();
    }

    /// The next record of the k-way merge.
    async fn next_merged(&mut self) -> Merged {
        if !self.started {
            self.started = true;
            for i in 0..self.streams.len() {
                match self.streams[i].opens_at {
                    Some(at) => {
                        self.state[i] = State::Pending;
                        self.heads.push(Reverse((at, i)));
                    }
                    None => self.refill(i).await,
                }
            }
        }
        if let Some(i) = self.refill_due.take() {
            self.refill(i).await;
        }
        loop {
            self.poll_idle();
            if let Some(Reverse((_, i))) = self.heads.pop() {
                if self.state[i] == State::Pending {
                    if let Some(tx) = self.streams[i].on_open.take() {
                        let _ = tx.send(());
                    }
                    self.refill(i).await;
                    continue;
                }
                let Some(record) = self.buffers[i].pop_front() else { continue };
                self.accounting.input();
                match self.buffers[i].front() {
                    Some(next) => self.heads.push(Reverse((next.ts, i))),
                    None => self.refill_due = Some(i),
                }
                return Merged::Record(record);
            }
            if !self.state.contains(&State::Idle) {
                return Merged::End;
            }
            let holding = self.reorder.run.len() + self.reorder.stragglers.len() > 0;
            let quiet = Duration::from_nanos(self.opts.window_ns.max(0) as u64).max(MIN_IDLE_FLUSH);
            let woken = if holding {
                tokio::time::timeout(quiet, self.wait_idle()).await
            } else {
                Ok(self.wait_idle().await)
            };
            match woken {
                Ok((i, chunk)) => self.take(i, chunk),
                Err(_) => return Merged::Flush,
            }
        }
    }

    /// Refills an open stream's buffer, waiting for its next chunk.
    async fn refill(&mut self, i: usize) {
        while self.state[i] != State::Closed && self.buffers[i].is_empty() {
            let chunk = self.streams[i].rx.recv().await;
            self.take(i, chunk);
            if self.state[i] == State::Idle {
                return;
            }
        }
    }

    /// Takes what a stream sent: records (its head goes in the heap), an idle mark, or its end.
    fn take(&mut self, i: usize, chunk: Option<Chunk>) {
        match chunk {
            None => self.state[i] = State::Closed,
            Some(c) if c.is_empty() => {
                if self.buffers[i].is_empty() {
                    self.state[i] = State::Idle;
                }
            }
            Some(c) => {
                let had_head = !self.buffers[i].is_empty();
                self.buffers[i].extend(c);
                self.state[i] = State::Active;
                if !had_head && let Some(head) = self.buffers[i].front() {
                    self.heads.push(Reverse((head.ts, i)));
                }
            }
        }
    }

    /// Takes whatever idle streams have sent since, without waiting.
    fn poll_idle(&mut self) {
        for i in 0..self.streams.len() {
            while self.state[i] == State::Idle {
                match self.streams[i].rx.try_recv() {
                    Ok(chunk) => self.take(i, Some(chunk)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => self.take(i, None),
                }
            }
        }
    }

    /// Waits for any idle stream to send something (or end).
    async fn wait_idle(&mut self) -> (usize, Option<Chunk>) {
        let (streams, state) = (&mut self.streams, &self.state);
        std::future::poll_fn(|cx| {
            for (i, s) in streams.iter_mut().enumerate() {
                if state[i] == State::Idle
                    && let Poll::Ready(chunk) = s.rx.poll_recv(cx)
                {
                    return Poll::Ready((i, chunk));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn rec(ts_ms: i64) -> Box<Record> {
        Box::new(Record {
            ts: ts_ms * 1_000_000,
            method: "GET".into(),
            path: format!("/{ts_ms}").into(),
            host: None,
            headers: vec![],
            body: Bytes::new(),
            key: None,
            expected: None,
        })
    }

    async fn merged(parts: Vec<Vec<i64>>, opts: MergeOptions) -> (Vec<(i64, bool)>, Arc<Accounting>) {
        let mut streams = Vec::new();
        for part in parts {
            let (tx, rx) = mpsc::channel(part.len().max(1));
            // Chunks of two, to cross chunk boundaries.
            for chunk in part.chunks(2) {
                tx.send(chunk.iter().map(|&t| rec(t)).collect()).await.expect("send");
            }
            streams.push(rx);
        }
        let acc = Arc::new(Accounting::default());
        let mut m = Merger::new(streams.into_iter().map(Stream::from).collect(), opts, acc.clone());
        let mut out = Vec::new();
        while let Some(o) = m.next().await {
            out.push((o.record.ts / 1_000_000, o.late));
        }
        (out, acc)
    }

    const NONE: MergeOptions = MergeOptions { window_ns: 1_000_000_000, begin: None, end: None };

    #[tokio::test]
    async fn streams_merge_in_time_order() {
        let (out, _) = merged(vec![vec![1, 4, 7], vec![2, 5, 8], vec![3, 6, 9]], NONE).await;
        let ts: Vec<i64> = out.iter().map(|o| o.0).collect();
        assert_eq!(ts, (1..=9).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn disorder_within_the_window_is_put_right_and_later_is_late() {
        let opts = MergeOptions { window_ns: 100_000_000, ..NONE };
        let (out, acc) = merged(vec![vec![0, 50, 20, 300, 400, 10, 500]], opts).await;
        assert_eq!(
            out,
            vec![(0, false), (20, false), (50, false), (300, false), (10, true), (400, false), (500, false)]
        );
        assert_eq!(acc.counts().late, 1);
    }

    #[tokio::test]
    async fn equal_timestamps_keep_their_arrival_order() {
        let mut streams = Vec::new();
        let (tx, rx) = mpsc::channel(4);
        let mut a = rec(5);
        a.path = "/first".into();
        let mut b = rec(5);
        b.path = "/second".into();
        tx.send(vec![rec(9), a, b]).await.expect("send");
        drop(tx);
        streams.push(rx);
        let mut m = Merger::new(streams.into_iter().map(Stream::from).collect(), NONE, Arc::default());
        let mut paths = Vec::new();
        while let Some(o) = m.next().await {
            paths.push(o.record.path);
        }
        assert_eq!(paths, ["/first", "/second", "/9"]);
    }

    #[tokio::test]
    async fn begin_and_end_are_inclusive_and_end_stops_the_input() {
        let opts = MergeOptions { window_ns: 0, begin: Some(2_000_000), end: Some(4_000_000) };
        let (out, acc) = merged(vec![vec![1, 2, 3, 4, 5, 6]], opts).await;
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![2, 3, 4]);
        let c = acc.counts();
        assert_eq!(c.out_of_range, 2, "1 before begin, 5 after end (6 never taken)");
        assert_eq!(c.input, 5, "records taken: 1..=5");
    }

    #[tokio::test]
    async fn a_lazy_stream_opens_when_the_merge_reaches_its_time() {
        let mut streams = Vec::new();
        let mut opened = Vec::new();
        for (at, ts) in [(0, vec![0, 5, 20]), (10, vec![10, 12]), (100, vec![100])] {
            let (tx, rx) = mpsc::channel(4);
            tx.send(ts.into_iter().map(rec).collect()).await.expect("send");
            let (open_tx, open_rx) = oneshot::channel();
            streams.push(Stream::lazy(rx, at * 1_000_000, open_tx));
            opened.push(open_rx);
        }
        let mut m = Merger::new(streams, MergeOptions { window_ns: 0, ..NONE }, Arc::default());
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(m.next().await.expect("record").record.ts / 1_000_000);
        }
        assert_eq!(got, [0, 5, 10, 12, 20]);
        assert!(opened[1].try_recv().is_ok(), "the 10 ms object was opened");
        assert!(opened[2].try_recv().is_err(), "the 100 ms object is not opened before the merge gets there");
        assert_eq!(m.next().await.map(|o| o.record.ts / 1_000_000), Some(100));
        assert!(m.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_live_stream_does_not_hold_back_the_others() {
        let (live_tx, live_rx) = mpsc::channel(4);
        let (other_tx, other_rx) = mpsc::channel(4);
        live_tx.send(vec![rec(1), rec(2)]).await.expect("send");
        live_tx.send(Vec::new()).await.expect("idle mark");
        other_tx.send(vec![rec(3), rec(4)]).await.expect("send");
        drop(other_tx);
        let opts = MergeOptions { window_ns: 50_000_000, ..NONE };
        let mut m = Merger::new(vec![Stream::new(live_rx), Stream::new(other_rx)], opts, Arc::default());
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(m.next().await.expect("released after a quiet window").record.ts / 1_000_000);
        }
        assert_eq!(got, [1, 2, 3, 4], "the live stream is open and silent, yet the rest flows");
        live_tx.send(vec![rec(10)]).await.expect("send");
        drop(live_tx);
        assert_eq!(m.next().await.map(|o| (o.record.ts / 1_000_000, o.late)), Some((10, false)));
        assert!(m.next().await.is_none());
    }
}
