//! What the proxy counts, and the names those counts have in `/metrics`. Every exchange
//! that passes is accounted for: recorded, sampled out, or dropped for a reason, besides
//! those still in flight or queued.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an exchange that was to be recorded was not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The sink's queue was full (its bound in bytes reached): the sink is slower than
    /// the traffic, or stalled.
    QueueFull,
    /// The sink failed to write it (a full disk, a file that cannot be opened).
    WriteFailed,
    /// The exchange did not finish: the client or the upstream broke off a body.
    Incomplete,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [DropReason::QueueFull, DropReason::WriteFailed, DropReason::Incomplete];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteFailed => "write_failed",
            DropReason::Incomplete => "incomplete",
        }
    }
}

/// Why a client's connection was closed by the proxy before it was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request's head did not arrive in time (slowloris).
    HeaderTimeout,
    /// The request's head was larger than the proxy takes.
    TooLarge,
    /// Not HTTP the proxy can read: a malformed request or HTTP/2 frame.
    Malformed,
    /// The TLS handshake failed.
    Tls,
    /// More connections than `--max-connections` were open.
    TooManyConnections,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::HeaderTimeout,
        Refusal::TooLarge,
        Refusal::Malformed,
        Refusal::Tls,
        Refusal::TooManyConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
            Refusal::Tls => "tls",
            Refusal::TooManyConnections => "too_many_connections",
        }
    }

    /// What hyper's error on a connection says about the client, if it is the client's doing.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(h) = c.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return Some(Refusal::HeaderTimeout);
                }
                if h.is_parse_too_large() {
                    return Some(Refusal::TooLarge);
                }
                if h.is_parse() || h.is_parse_version_h2() {
                    return Some(Refusal::Malformed);
                }
            }
            // A frame the HTTP/2 codec refused (a protocol error of the client's).
            if c.downcast_ref::<h2::Error>().is_some_and(|e| e.reason().is_some() && !e.is_io()) {
                return Some(Refusal::Malformed);
            }
            cause = c.source();
        }
        None
    }
}

/// The proxy's counters, shared by its connections, its sink and its `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub exchanges: AtomicU64,
    pub recorded: AtomicU64,
    pub sampled_out: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub written_bytes: AtomicU64,
    pub queued_bytes: AtomicU64,
    pub connections: AtomicU64,
    dropped: [AtomicU64; 3],
    refused: [AtomicU64; 5],
    /// Exchanges each `--filter` rule left out, by its name.
    filtered: Box<[(String, AtomicU64)]>,
}

impl Counters {
    /// Counters for a proxy with these `--filter` rules.
    pub fn with_rules(names: Vec<String>) -> Counters {
        let filtered = names.into_iter().map(|n| (n, AtomicU64::new(0))).collect();
        Counters { filtered, ..Counters::default() }
    }

    /// The rule at `index` left an exchange out.
    pub fn count_filtered(&self, index: usize) {
        if let Some((_, n)) = self.filtered.get(index) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// Exchanges the `--filter` rules left out, all rules together.
    pub fn filtered(&self) -> u64 {
        self.filtered.iter().map(|(_, n)| n.load(Relaxed)).sum()
    }

    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    pub fn refuse(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// The Prometheus text of `/metrics`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one("reprise_record_exchanges_total", "counter", "Exchanges proxied.", self.exchanges.load(Relaxed));
        one(
            "reprise_record_recorded_total",
            "counter",
            "Exchanges written to the sink.",
            self.recorded.load(Relaxed),
        );
        one(
            "reprise_record_sampled_out_total",
            "counter",
            "Exchanges proxied and not recorded, by --sample.",
            self.sampled_out.load(Relaxed),
        );
        one(
            "reprise_record_upstream_errors_total",
            "counter",
            "Requests the upstream did not answer (the client got 502).",
            self.upstream_errors.load(Relaxed),
        );
        one(
            "reprise_record_written_bytes_total",
            "counter",
            "Bytes written to the sink.",
            self.written_bytes.load(Relaxed),
        );
        one(
            "reprise_record_queue_bytes",
            "gauge",
            "Bytes of exchanges waiting for the sink.",
            self.queued_bytes.load(Relaxed),
        );
        one(
            "reprise_record_connections",
            "gauge",
            "Client connections open.",
            self.connections.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP reprise_record_dropped_total Exchanges not recorded, by reason.\n# TYPE reprise_record_dropped_total counter"
        );
        for r in DropReason::ALL {
            let _ =
                writeln!(s, "reprise_record_dropped_total{{reason=\"{}\"}} {}", r.as_str(), self.dropped(r));
        }
        let _ = writeln!(
            s,
            "# HELP reprise_record_refused_total Client connections closed unserved, by reason.\n# TYPE reprise_record_refused_total counter"
        );
        for r in Refusal::ALL {
            let _ =
                writeln!(s, "reprise_record_refused_total{{reason=\"{}\"}} {}", r.as_str(), self.refused(r));
        }
        if !self.filtered.is_empty() {
            let _ = writeln!(
                s,
                "# HELP reprise_record_filtered_total Exchanges proxied and not recorded, by --filter rule.\n# TYPE reprise_record_filtered_total counter"
            );
            for (rule, n) in &self.filtered {
                let rule = rule.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(s, "reprise_record_filtered_total{{rule=\"{rule}\"}} {}", n.load(Relaxed));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason is in the text, with its count, even at zero (a rate needs the series).
    #[test]
    fn metrics_name_every_reason() {
        let c = Counters::default();
        c.count_drop(DropReason::QueueFull, 3);
        c.refuse(Refusal::TooLarge);
        let text = c.render();
        assert!(text.contains("reprise_record_dropped_total{reason=\"queue_full\"} 3"), "{text}");
        assert!(text.contains("reprise_record_dropped_total{reason=\"write_failed\"} 0"), "{text}");
        assert!(text.contains("reprise_record_refused_total{reason=\"too_large\"} 1"), "{text}");
        assert!(text.contains("reprise_record_refused_total{reason=\"tls\"} 0"), "{text}");
    }
}
