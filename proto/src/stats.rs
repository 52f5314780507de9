//! Per-endpoint statistics: what a replayer records for each request, ships as an interval
//! delta, and what the dispatcher merges exactly (HdrHistogram `add`, counter sums).
//! Percentiles are never shipped; only histograms are.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use crate::pb;

/// Largest latency a histogram holds, in µs (60 s); longer values are clamped to it.
pub const MAX_MICROS: u64 = 60_000_000;

/// A bad histogram in a report.
#[derive(Debug, thiserror::Error)]
#[error("endpoint `{endpoint}`: cannot decode {which} histogram: {reason}")]
pub struct DecodeError {
    pub endpoint: String,
    pub which: &'static str,
    pub reason: String,
}

/// Statistics of one endpoint over some interval.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    pub ok: u64,
    pub failed: u64,
    /// Count per HTTP status code received.
    pub status: BTreeMap<u32, u64>,
    /// Count per error kind (connect, timeout, reset, tls, body, other).
    pub errors: BTreeMap<String, u64>,
    /// µs from the due instant to the end of the response: free of coordinated omission.
    pub latency: Histogram<u64>,
    /// µs from the actual send to the end of the response.
    pub service: Histogram<u64>,
    /// µs from the due instant to the actual send: the schedule error.
    pub lag: Histogram<u64>,
}

/// µs, 3 significant figures, sized to the largest value recorded so far. Values are clamped
/// to [`MAX_MICROS`], so a histogram never outgrows the fixed 1 µs..60 s layout, but one that
/// has only seen milliseconds is a quarter of that: cheaper to zero, encode and merge every
/// second. Merging auto-sized histograms is exact (`add` grows the target).
fn new_histogram() -> Histogram<u64> {
    // invariant: 3 significant figures is within hdrhistogram's 0..=5.
    #[allow(clippy::unwrap_used)]
    let mut h = Histogram::new(3).unwrap();
    h.auto(true);
    h
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            latency: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
        }
    }
}

/// One finished request, as the replayer measured it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    /// HTTP status, or `None` when no response came.
    pub status: Option<u16>,
    /// Error kind when the request failed without a response (or its body failed).
    pub error: Option<&'a str>,
    pub latency_us: u64,
    pub service_us: u64,
    pub lag_us: u64,
}

impl EndpointStats {
    pub fn count(&self) -> u64 {
        self.ok + self.failed
    }

    /// Responses by status class, as ("1xx" … "5xx", count), classes without responses left out.
    pub fn status_classes(&self) -> Vec<(String, u64)> {
        let mut classes = [0u64; 6];
        for (code, n) in &self.status {
            classes[(*code as usize / 100).min(5)] += n;
        }
        classes
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (format!("{c}xx"), *n))
            .collect()
    }

    /// Back to empty, keeping the histograms' memory.
    pub fn reset(&mut self) {
        self.ok = 0;
        self.failed = 0;
        self.status.clear();
        self.errors.clear();
        self.latency.reset();
        self.service.reset();
        self.lag.reset();
    }

    /// A request failed when it got no response (an error kind) or a status of 400 or more, as
    /// k6 and Locust count. An outcome with neither status nor error is a dry run: ok.
    pub fn record(&mut self, outcome: &Outcome<'_>) {
        let failed = outcome.error.is_some() || outcome.status.is_some_and(|s| s >= 400);
        if failed {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        if let Some(status) = outcome.status {
            *self.status.entry(u32::from(status)).or_default() += 1;
        }
        if let Some(kind) = outcome.error {
            *self.errors.entry(kind.to_owned()).or_default() += 1;
        }
        // `record` grows an auto-sized histogram (`saturating_record` would clamp to its
        // current size); the clamp keeps it within 60 s, so it cannot fail.
        let _ = self.latency.record(outcome.latency_us.clamp(1, MAX_MICROS));
        let _ = self.service.record(outcome.service_us.clamp(1, MAX_MICROS));
        let _ = self.lag.record(outcome.lag_us.clamp(1, MAX_MICROS));
    }

    /// Adds `other` into `self`, exactly: merging two halves gives the whole.
    pub fn merge(&mut self, other: &EndpointStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (code, n) in &other.status {
            *self.status.entry(*code).or_default() += n;
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        // invariant: auto-sized targets grow to fit, so `add` cannot fail.
        #[allow(clippy::unwrap_used)]
        {
            self.latency.add(&other.latency).unwrap();
            self.service.add(&other.service).unwrap();
            self.lag.add(&other.lag).unwrap();
        }
    }

    pub fn to_wire(&self, endpoint: &str) -> pb::EndpointDelta {
        pb::EndpointDelta {
            endpoint: endpoint.to_owned(),
            ok: self.ok,
            failed: self.failed,
            status: self.status.iter().map(|(k, v)| (*k, *v)).collect(),
            errors: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            latency_hist: encode(&self.latency).into(),
            service_hist: encode(&self.service).into(),
            lag_hist: encode(&self.lag).into(),
        }
    }

    pub fn from_wire(delta: &pb::EndpointDelta) -> Result<Self, DecodeError> {
        let decode = |bytes: &[u8], which: &'static str| {
            decode(bytes).map_err(|reason| DecodeError { endpoint: delta.endpoint.clone(), which, reason })
        };
        Ok(Self {
            ok: delta.ok,
            failed: delta.failed,
            status: delta.status.iter().map(|(k, v)| (*k, *v)).collect(),
            errors: delta.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            latency: decode(&delta.latency_hist, "latency")?,
            service: decode(&delta.service_hist, "service")?,
            lag: decode(&delta.lag_hist, "lag")?,
        })
    }
}

fn encode(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    // V2 without deflate: it already run-length encodes the empty buckets, and compressing
    // every endpoint's histograms each second cost CPU right when requests were due.
    // invariant: serializing into a Vec cannot fail for a histogram within its own bounds.
    #[allow(clippy::unwrap_used)]
    V2Serializer::new().serialize(h, &mut out).unwrap();
    out
}

fn decode(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    let decoded: Histogram<u64> =
        Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).map_err(|e| format!("{e:?}"))?;
    // Re-home into the standard bounds so later merges cannot fail on a foreign histogram.
    let mut h = new_histogram();
    h.add(&decoded).map_err(|e| format!("{e:?}"))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Option<u16>, error: Option<&str>, us: u64) -> Outcome<'_> {
        Outcome { status, error, latency_us: us, service_us: us / 2, lag_us: 3 }
    }

    #[test]
    fn merging_two_halves_equals_the_whole() {
        let mut whole = EndpointStats::default();
        let mut a = EndpointStats::default();
        let mut b = EndpointStats::default();
        for i in 0..1000u64 {
            let o = if i % 7 == 0 {
                outcome(None, Some("timeout"), 1_000 + i * 37)
            } else {
                outcome(Some(if i % 5 == 0 { 503 } else { 200 }), None, 1_000 + i * 37)
            };
            whole.record(&o);
            if i % 2 == 0 { a.record(&o) } else { b.record(&o) }
        }
        a.merge(&b);
        assert_eq!((a.ok, a.failed), (whole.ok, whole.failed));
        assert_eq!(a.status, whole.status);
        assert_eq!(a.errors, whole.errors);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.latency.value_at_quantile(q), whole.latency.value_at_quantile(q));
        }
        assert_eq!(a.latency.len(), 1000);
    }

    #[test]
    fn wire_round_trip_keeps_everything() {
        let mut s = EndpointStats::default();
        s.record(&outcome(Some(200), None, 12_345));
        s.record(&outcome(Some(404), None, 99));
        s.record(&outcome(None, Some("connect"), 7));
        let back = EndpointStats::from_wire(&s.to_wire("GET /x")).expect("decodes");
        assert_eq!((back.ok, back.failed), (1, 2));
        assert_eq!(back.status.get(&404), Some(&1));
        assert_eq!(back.status_classes(), vec![("2xx".to_owned(), 1), ("4xx".to_owned(), 1)]);
        assert_eq!(back.errors.get("connect"), Some(&1));
        assert_eq!(back.latency.max(), s.latency.max());
        assert_eq!(back.service.len(), 3);
    }

    #[test]
    fn values_up_to_a_minute_keep_three_significant_figures() {
        let mut s = EndpointStats::default();
        for us in [3, 1_500, 2_345_678, 59_000_000, 90_000_000] {
            s.record(&outcome(Some(200), None, us));
        }
        let back = EndpointStats::from_wire(&s.to_wire("GET /x")).expect("decodes");
        assert_eq!(back.latency.min(), 3);
        assert!(back.latency.equivalent(back.latency.value_at_quantile(0.6), 2_345_678));
        assert!(back.latency.equivalent(back.latency.max(), MAX_MICROS), "clamped at 60 s");
    }

    #[test]
    fn a_corrupt_histogram_is_an_error_not_a_panic() {
        let mut wire = EndpointStats::default().to_wire("GET /x");
        wire.latency_hist = vec![1, 2, 3].into();
        let err = EndpointStats::from_wire(&wire).expect_err("corrupt");
        assert!(err.to_string().contains("latency"), "{err}");
    }
}
