//! Per-second history of a job: each statistics report merged is also added to a bucket of
//! one second since the job's start. A report covers the second before it arrives (replayers
//! report once a second), so it counts for the middle of that interval, half a second before
//! its arrival. Seconds without reports appear as empty rows, so a chart's time axis has no
//! holes.

use reprise_proto::stats::{Dist, TotalStats};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One second of traffic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Seconds since the job started (the row covers [second, second + 1)).
    pub second: u64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Latency from the due instant, ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Schedule lag (due instant to send), p99, ms.
    pub lag_p99_ms: f64,
}

impl Row {
    fn of(second: u64, s: &TotalStats) -> Row {
        let ms = |q: f64| s.latency.value_at_quantile(q) as f64 / 1000.0;
        Row {
            second,
            requests: s.count(),
            ok: s.ok,
            failed: s.failed,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: s.latency.max() as f64 / 1000.0,
            lag_p99_ms: s.lag.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}

/// Rows are kept for at most this many seconds (a week); older ones are dropped first.
const MAX_ROWS: usize = 7 * 24 * 3600;

#[derive(Debug, Default)]
pub struct History {
    start: Option<Instant>,
    rows: std::collections::VecDeque<Row>,
    second: u64,
    current: TotalStats,
}

impl History {
    pub fn start(&mut self, at: Instant) {
        self.start = Some(at);
    }

    /// The bucket a report arriving now belongs to.
    fn now_second(&self) -> u64 {
        const HALF_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
        self.start.map_or(0, |s| {
            Instant::now().saturating_duration_since(s).saturating_sub(HALF_INTERVAL).as_secs()
        })
    }

    /// Closes the buckets of the seconds that have passed.
    fn roll(&mut self) {
        let now = self.now_second();
        while self.second < now {
            let done = std::mem::take(&mut self.current);
            self.rows.push_back(Row::of(self.second, &done));
            if self.rows.len() > MAX_ROWS {
                self.rows.pop_front();
            }
            self.second += 1;
        }
    }

    /// Adds a merged delta to the current second.
    pub fn add(&mut self, delta: &TotalStats) {
        self.roll();
        self.current.merge(delta);
    }

    /// Every closed second, and the current one so far.
    pub fn rows(&mut self) -> Vec<Row> {
        self.roll();
        let mut rows: Vec<Row> = self.rows.iter().cloned().collect();
        if self.current.count() > 0 {
            rows.push(Row::of(self.second, &self.current));
        }
        rows
    }

    /// The closed seconds after `after` (all of them for `None`), the last `most` at most:
    /// what a live page has not been sent yet.
    pub fn closed_since(&mut self, after: Option<u64>, most: usize) -> Vec<Row> {
        self.roll();
        let first = after.map_or(0, |a| a + 1);
        let skip = self.rows.iter().take_while(|r| r.second < first).count();
        let new = self.rows.len() - skip;
        self.rows.iter().skip(skip + new.saturating_sub(most)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reprise_proto::stats::Outcome;

    use super::*;

    fn delta(n: u64) -> TotalStats {
        let mut s = TotalStats::default();
        for i in 0..n {
            s.record(&Outcome { answer: Ok(Some(200)), latency_us: 1000 + i, service_us: 1, lag_us: 1 });
        }
        s
    }

    #[tokio::test(start_paused = true)]
    async fn deltas_land_in_the_second_they_cover_and_gaps_are_empty_rows() {
        let mut h = History::default();
        h.start(Instant::now());
        tokio::time::advance(Duration::from_millis(1000)).await;
        h.add(&delta(3)); // arrives at 1.0 s: covers 0..1 s
        h.add(&delta(2));
        tokio::time::advance(Duration::from_millis(2200)).await;
        h.add(&delta(4)); // arrives at 3.2 s: covers 2.2..3.2 s
        let rows = h.rows();
        let counts: Vec<(u64, u64)> = rows.iter().map(|r| (r.second, r.requests)).collect();
        assert_eq!(counts, vec![(0, 5), (1, 0), (2, 4)]);
        assert!((rows[0].p50_ms - 1.0).abs() < 0.01);
        let seconds = |rows: Vec<Row>| rows.iter().map(|r| r.second).collect::<Vec<_>>();
        assert_eq!(seconds(h.closed_since(None, 10)), [0, 1], "the current second is not closed");
        assert_eq!(seconds(h.closed_since(Some(0), 10)), [1]);
        assert_eq!(seconds(h.closed_since(None, 1)), [1], "the latest when there are more");
        assert!(h.closed_since(Some(1), 10).is_empty());
    }
}
