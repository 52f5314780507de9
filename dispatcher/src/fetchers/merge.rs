//! Puts the fetchers' streams in time order: a k-way merge across streams (each stream is
//! nearly ordered), then a reorder buffer that holds records until the newest one seen is a
//! window ahead of them. A record older than what was already released is late: counted and
//! passed on flagged, for the wheel to send at once or drop. `[begin, end]` is applied on the
//! ordered output: earlier records are counted out of range, and the first record after `end`
//! ends the input (end inclusive).
//!
//! Memory: one head per stream plus the records inside the window.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::accounting::Accounting;
use crate::record::Record;

/// A record in time order, or a late one.
#[derive(Debug)]
pub struct Ordered {
    pub record: Record,
    pub late: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct MergeOptions {
    pub window_ns: i64,
    pub begin: Option<i64>,
    pub end: Option<i64>,
}

/// Heap entry ordered by (ts, arrival) so equal timestamps keep their arrival order.
struct Entry {
    ts: i64,
    seq: u64,
    record: Record,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// The reorder buffer and range filter, fed in merge order.
struct Reorder {
    opts: MergeOptions,
    heap: BinaryHeap<Reverse<Entry>>,
    newest: i64,
    released: i64,
    seq: u64,
    accounting: Arc<Accounting>,
}

/// What the consumer should do next.
enum Flow {
    Continue,
    /// The end of the range was passed, or the consumer is gone.
    Stop,
}

impl Reorder {
    async fn push(&mut self, record: Record, out: &mpsc::Sender<Ordered>) -> Flow {
        let ts = record.ts;
        if ts < self.released {
            self.accounting.late();
            return self.emit(record, true, out).await;
        }
        self.seq += 1;
        self.newest = self.newest.max(ts);
        self.heap.push(Reverse(Entry { ts, seq: self.seq, record }));
        let horizon = self.newest.saturating_sub(self.opts.window_ns);
        while self.heap.peek().is_some_and(|Reverse(e)| e.ts <= horizon) {
            if let Flow::Stop = self.pop(out).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn pop(&mut self, out: &mpsc::Sender<Ordered>) -> Flow {
        let Some(Reverse(e)) = self.heap.pop() else {
            return Flow::Continue;
        };
        self.released = e.ts;
        self.emit(e.record, false, out).await
    }

    async fn drain(&mut self, out: &mpsc::Sender<Ordered>) {
        while !self.heap.is_empty() {
            if let Flow::Stop = self.pop(out).await {
                return;
            }
        }
    }

    async fn emit(&mut self, record: Record, late: bool, out: &mpsc::Sender<Ordered>) -> Flow {
        if self.opts.end.is_some_and(|end| record.ts > end) && !late {
            return Flow::Stop;
        }
        if self.opts.begin.is_some_and(|b| record.ts < b) || self.opts.end.is_some_and(|e| record.ts > e) {
            self.accounting.out_of_range();
            return Flow::Continue;
        }
        match out.send(Ordered { record, late }).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// Merges `streams` into `out` in time order until all are exhausted or `end` is passed.
pub async fn run(
    mut streams: Vec<mpsc::Receiver<Record>>,
    opts: MergeOptions,
    accounting: Arc<Accounting>,
    out: mpsc::Sender<Ordered>,
) {
    let mut heads: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut pending: Vec<Option<Record>> = Vec::with_capacity(streams.len());
    for (i, s) in streams.iter_mut().enumerate() {
        let head = s.recv().await;
        if let Some(r) = &head {
            heads.push(Reverse((r.ts, i)));
        }
        pending.push(head);
    }
    let mut reorder =
        Reorder { opts, heap: BinaryHeap::new(), newest: i64::MIN, released: i64::MIN, seq: 0, accounting };
    while let Some(Reverse((_, i))) = heads.pop() {
        let Some(record) = pending[i].take() else {
            continue;
        };
        if let Flow::Stop = reorder.push(record, &out).await {
            return;
        }
        if let Some(next) = streams[i].recv().await {
            heads.push(Reverse((next.ts, i)));
            pending[i] = Some(next);
        }
    }
    reorder.drain(&out).await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn rec(ts_ms: i64) -> Record {
        Record {
            ts: ts_ms * 1_000_000,
            method: "GET".into(),
            path: format!("/{ts_ms}"),
            host: None,
            headers: vec![],
            body: Bytes::new(),
            key: None,
        }
    }

    async fn merged(parts: Vec<Vec<i64>>, opts: MergeOptions) -> (Vec<(i64, bool)>, Arc<Accounting>) {
        let mut streams = Vec::new();
        for part in parts {
            let (tx, rx) = mpsc::channel(part.len().max(1));
            for ts in part {
                tx.send(rec(ts)).await.expect("send");
            }
            streams.push(rx);
        }
        let acc = Arc::new(Accounting::default());
        let (tx, mut rx) = mpsc::channel(1024);
        run(streams, opts, acc.clone(), tx).await;
        let mut out = Vec::new();
        while let Some(o) = rx.recv().await {
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
    async fn begin_and_end_are_inclusive_and_end_stops_the_input() {
        let opts = MergeOptions { window_ns: 0, begin: Some(2_000_000), end: Some(4_000_000) };
        let (out, acc) = merged(vec![vec![1, 2, 3, 4, 5, 6]], opts).await;
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(acc.counts().out_of_range, 1);
    }
}
