//! Sessions in order (`[proxy] ordered`) in the report: how long requests waited for their
//! session's previous response.

use reprise_proto::stats::OrderWait;
use serde::Serialize;

use super::Percentiles;

/// How long requests of an ordered job waited for their session's previous response
/// before they were sent. Latency and schedule lag count from the end of that wait.
#[derive(Clone, Debug, Serialize)]
pub struct OrderWaitReport {
    /// Requests that waited (the others found their session idle).
    pub requests: u64,
    /// Of those, let go by `[proxy] order_timeout` while the previous one was in flight.
    pub timed_out: u64,
    /// How long those that waited waited.
    pub wait_ms: Percentiles,
    /// The wait's histogram, encoded (the wire's `OrderWait`), for `reprise merge`.
    pub encoded: String,
}

impl OrderWaitReport {
    pub(super) fn of(w: &OrderWait) -> Self {
        Self {
            requests: w.count(),
            timed_out: w.timed_out,
            wait_ms: Percentiles::of(&w.waited),
            encoded: super::encoded(&w.to_wire()),
        }
    }

    /// The terminal's line.
    pub fn line(&self, sent: u64) -> String {
        if self.requests == 0 {
            return format!(
                "ordered sessions: none of {sent} requests waited for its session's previous response"
            );
        }
        let w = &self.wait_ms;
        format!(
            "ordered sessions: {} of {sent} requests waited for their session's previous response, \
             p50 {:.2} ms p99 {:.2} ms max {:.2} ms; {} let go by order_timeout",
            self.requests, w.p50, w.p99, w.max, self.timed_out
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal's line says how many waited and how long, and says so briefly when none did.
    #[test]
    fn the_order_wait_line_gives_the_waits_or_says_none_waited() {
        let mut w = OrderWait::default();
        assert_eq!(
            OrderWaitReport::of(&w).line(60),
            "ordered sessions: none of 60 requests waited for its session's previous response"
        );
        for us in [1_000, 2_000, 40_000] {
            w.record(us, us == 40_000);
        }
        let line = OrderWaitReport::of(&w).line(60);
        assert!(line.starts_with("ordered sessions: 3 of 60 requests waited"), "{line}");
        assert!(line.contains("p50 2.00 ms") && line.contains("max 40.0"), "3 significant figures: {line}");
        assert!(line.ends_with("; 1 let go by order_timeout"), "{line}");
    }
}
