//! Who was turned away at the dispatcher's door, counted by reason: a caller without the
//! right token, a cross-site request from a browser, a TLS handshake that failed (no client certificate, a wrong one, plain text
//! on a TLS port). `/status`, the report and the metrics show the counts, so a fleet
//! misconfigured after a secret rotation is seen, not only logged. Never the token itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Subscribe or Report without the replayer token, or with another one.
    ReplayerToken,
    /// An admin request without the admin token, or with another one.
    AdminToken,
    /// A TLS handshake on either port failed (or timed out).
    TlsHandshake,
    /// A report for a subscription or job that is not the sender's live one: a retry that came
    /// after its replayer subscribed again, or a forgery (subscription ids are unguessable).
    ForeignReport,
    /// Reports past a replayer's budget (a flood).
    ReportFlood,
    /// A gRPC message past the size limit.
    Oversized,
    /// A state-changing admin request sent by a page of another site (its `Origin` or
    /// `Sec-Fetch-Site` says so): any page a user visits could otherwise steer their job.
    CrossSite,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::ReplayerToken,
        Refusal::AdminToken,
        Refusal::TlsHandshake,
        Refusal::ForeignReport,
        Refusal::ReportFlood,
        Refusal::Oversized,
        Refusal::CrossSite,
    ];

    /// The name this build gives the reason written as `name` (a report read back), or
    /// "unknown".
    pub fn name_of(name: &str) -> &'static str {
        Refusal::ALL.iter().map(|r| r.as_str()).find(|n| *n == name).unwrap_or("unknown")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ReplayerToken => "replayer_token",
            Refusal::AdminToken => "admin_token",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::ForeignReport => "foreign_report",
            Refusal::ReportFlood => "report_flood",
            Refusal::Oversized => "oversized",
            Refusal::CrossSite => "cross_site",
        }
    }
}

#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Relaxed);
    }

    /// Every reason with its count (zeros included, so a dashboard sees the series).
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        Refusal::ALL.iter().map(|&r| (r.as_str(), self.counts[r as usize].load(Relaxed))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_apart() {
        let r = Refusals::default();
        r.count(Refusal::AdminToken);
        r.count(Refusal::AdminToken);
        r.count(Refusal::TlsHandshake);
        let s = r.snapshot();
        assert_eq!(s["admin_token"], 2);
        assert_eq!(s["tls_handshake"], 1);
        assert_eq!(s["replayer_token"], 0);
    }
}
