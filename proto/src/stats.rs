//! Statistics of requests: what a replayer records for each request, ships as an interval
//! delta, and what the dispatcher merges exactly (counter sums, histogram `add`).
//! Percentiles are never shipped; only histograms are. Per endpoint the histograms are
//! [`Sparse`]; the totals are full [`Hdr`] histograms (see [`crate::dist`]).

use std::collections::BTreeMap;

pub use crate::dist::{Dist, Hdr, MAX_MICROS, Sparse};
use crate::pb;

/// A bad histogram in a report.
#[derive(Debug, thiserror::Error)]
#[error("{part}: cannot decode {which} histogram: {reason}")]
pub struct DecodeError {
    /// "endpoint 12" or "total".
    pub part: String,
    pub which: &'static str,
    pub reason: String,
}

/// Statistics of requests over some interval, with histograms of kind `H`.
#[derive(Clone, Debug, Default)]
pub struct Stats<H> {
    pub ok: u64,
    pub failed: u64,
    /// Count per HTTP status code received.
    pub status: StatusCounts,
    /// Count per error kind (connect, timeout, reset, tls, body, other).
    pub errors: BTreeMap<String, u64>,
    /// µs from the due instant to the end of the response: free of coordinated omission.
    pub latency: H,
    /// µs from the actual send to the end of the response.
    pub service: H,
    /// µs from the due instant to the actual send: the schedule error.
    pub lag: H,
}

/// Count per HTTP status code. The first few codes are held inline, so counting a response
/// touches no memory beyond its [`Stats`]: a `BTreeMap` lookup per request (a pointer to a
/// node elsewhere, a search in it) was 4 % of a replayer's user time (perf, bench (b)).
/// Codes beyond those go to a map. Compared and read as the set of (code, count) it holds.
#[derive(Clone, Debug, Default)]
pub struct StatusCounts {
    inline: [(u32, u64); STATUS_INLINE],
    len: usize,
    more: BTreeMap<u32, u64>,
}

/// Status codes held inline (an endpoint answers with few: 200, 204, 304, 404, 503…).
const STATUS_INLINE: usize = 4;

impl StatusCounts {
    pub fn add(&mut self, code: u32, n: u64) {
        if let Some(slot) = self.inline[..self.len].iter_mut().find(|(c, _)| *c == code) {
            slot.1 += n;
        } else if self.len < STATUS_INLINE {
            self.inline[self.len] = (code, n);
            self.len += 1;
        } else {
            *self.more.entry(code).or_default() += n;
        }
    }

    pub fn get(&self, code: u32) -> Option<u64> {
        match self.inline[..self.len].iter().find(|(c, _)| *c == code) {
            Some((_, n)) => Some(*n),
            None => self.more.get(&code).copied(),
        }
    }

    /// (code, count) by code.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + use<> {
        let mut all: Vec<(u32, u64)> = self.inline[..self.len].to_vec();
        all.extend(self.more.iter().map(|(c, n)| (*c, *n)));
        all.sort_unstable();
        all.into_iter()
    }

    /// Distinct codes.
    pub fn len(&self) -> usize {
        self.len + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.more.clear();
    }
}

impl PartialEq for StatusCounts {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for StatusCounts {}

impl FromIterator<(u32, u64)> for StatusCounts {
    fn from_iter<I: IntoIterator<Item = (u32, u64)>>(codes: I) -> Self {
        let mut counts = StatusCounts::default();
        for (code, n) in codes {
            counts.add(code, n);
        }
        counts
    }
}

/// One endpoint's statistics: compact histograms whose cost follows the values they hold.
pub type EndpointStats = Stats<Sparse>;
/// All endpoints together: full-resolution histograms.
pub type TotalStats = Stats<Hdr>;

/// How a request failed: no answer came, or (gRPC) the answer's `grpc-status` was not OK.
/// The names of `errors` in the report, the metrics and the raw rows, listed here once for
/// replayers and the dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No connection could be opened (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake or a TLS record failed.
    Tls,
    /// No whole answer within `[replayer] timeout`.
    Timeout,
    /// The connection was closed or reset before the answer was whole.
    Reset,
    /// The answer's body broke off or could not be read.
    Body,
    /// Still in flight when a stopped job's grace ran out.
    Cancelled,
    /// Anything else: an answer that is not HTTP, a record that cannot be sent.
    Other,
    /// HTTP/2: the server sent GOAWAY before answering this stream.
    GoAway,
    /// HTTP/2: the server reset this stream (RST_STREAM) with an error.
    StreamReset,
    /// HTTP/2: the server refused the stream unprocessed (REFUSED_STREAM).
    RefusedStream,
    /// gRPC: the answer's body is not length-prefixed messages (a wrong length prefix, a
    /// message cut short).
    GrpcFraming,
    /// gRPC: the answer ended without a `grpc-status`.
    GrpcNoStatus,
    /// gRPC status 1, CANCELLED.
    GrpcCancelled,
    /// gRPC status 2, UNKNOWN.
    GrpcUnknown,
    /// gRPC status 3, INVALID_ARGUMENT.
    GrpcInvalidArgument,
    /// gRPC status 4, DEADLINE_EXCEEDED.
    GrpcDeadlineExceeded,
    /// gRPC status 5, NOT_FOUND.
    GrpcNotFound,
    /// gRPC status 6, ALREADY_EXISTS.
    GrpcAlreadyExists,
    /// gRPC status 7, PERMISSION_DENIED.
    GrpcPermissionDenied,
    /// gRPC status 8, RESOURCE_EXHAUSTED.
    GrpcResourceExhausted,
    /// gRPC status 9, FAILED_PRECONDITION.
    GrpcFailedPrecondition,
    /// gRPC status 10, ABORTED.
    GrpcAborted,
    /// gRPC status 11, OUT_OF_RANGE.
    GrpcOutOfRange,
    /// gRPC status 12, UNIMPLEMENTED.
    GrpcUnimplemented,
    /// gRPC status 13, INTERNAL.
    GrpcInternal,
    /// gRPC status 14, UNAVAILABLE.
    GrpcUnavailable,
    /// gRPC status 15, DATA_LOSS.
    GrpcDataLoss,
    /// gRPC status 16, UNAUTHENTICATED.
    GrpcUnauthenticated,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 28] = [
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Body,
        ErrorKind::Cancelled,
        ErrorKind::Other,
        ErrorKind::GoAway,
        ErrorKind::StreamReset,
        ErrorKind::RefusedStream,
        ErrorKind::GrpcFraming,
        ErrorKind::GrpcNoStatus,
        ErrorKind::GrpcCancelled,
        ErrorKind::GrpcUnknown,
        ErrorKind::GrpcInvalidArgument,
        ErrorKind::GrpcDeadlineExceeded,
        ErrorKind::GrpcNotFound,
        ErrorKind::GrpcAlreadyExists,
        ErrorKind::GrpcPermissionDenied,
        ErrorKind::GrpcResourceExhausted,
        ErrorKind::GrpcFailedPrecondition,
        ErrorKind::GrpcAborted,
        ErrorKind::GrpcOutOfRange,
        ErrorKind::GrpcUnimplemented,
        ErrorKind::GrpcInternal,
        ErrorKind::GrpcUnavailable,
        ErrorKind::GrpcDataLoss,
        ErrorKind::GrpcUnauthenticated,
    ];

    /// The kind of a gRPC status code other than 0 (OK); codes past 16 are UNKNOWN, as the
    /// gRPC spec says a client is to read them.
    pub fn of_grpc_status(code: u32) -> ErrorKind {
        // The gRPC kinds are listed last in `ALL`, in code order from CANCELLED (1).
        const CANCELLED_AT: usize = ErrorKind::GrpcCancelled as usize;
        match code {
            1..=16 => ErrorKind::ALL[CANCELLED_AT + code as usize - 1],
            _ => ErrorKind::GrpcUnknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Body => "body",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Other => "other",
            ErrorKind::GoAway => "goaway",
            ErrorKind::StreamReset => "stream_reset",
            ErrorKind::RefusedStream => "refused_stream",
            ErrorKind::GrpcFraming => "grpc_framing",
            ErrorKind::GrpcNoStatus => "grpc_no_status",
            ErrorKind::GrpcCancelled => "grpc_cancelled",
            ErrorKind::GrpcUnknown => "grpc_unknown",
            ErrorKind::GrpcInvalidArgument => "grpc_invalid_argument",
            ErrorKind::GrpcDeadlineExceeded => "grpc_deadline_exceeded",
            ErrorKind::GrpcNotFound => "grpc_not_found",
            ErrorKind::GrpcAlreadyExists => "grpc_already_exists",
            ErrorKind::GrpcPermissionDenied => "grpc_permission_denied",
            ErrorKind::GrpcResourceExhausted => "grpc_resource_exhausted",
            ErrorKind::GrpcFailedPrecondition => "grpc_failed_precondition",
            ErrorKind::GrpcAborted => "grpc_aborted",
            ErrorKind::GrpcOutOfRange => "grpc_out_of_range",
            ErrorKind::GrpcUnimplemented => "grpc_unimplemented",
            ErrorKind::GrpcInternal => "grpc_internal",
            ErrorKind::GrpcUnavailable => "grpc_unavailable",
            ErrorKind::GrpcDataLoss => "grpc_data_loss",
            ErrorKind::GrpcUnauthenticated => "grpc_unauthenticated",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished request, as the replayer measured it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The answer's status, or the kind of failure when no answer came; `Ok(None)` for a
    /// dry run, which sends nothing.
    pub answer: Result<Option<u16>, ErrorKind>,
    pub latency_us: u64,
    pub service_us: u64,
    pub lag_us: u64,
}

impl Outcome {
    /// The status of an answer that came.
    pub fn status(&self) -> Option<u16> {
        self.answer.ok().flatten()
    }

    /// The kind of failure when no answer came.
    pub fn error(&self) -> Option<ErrorKind> {
        self.answer.err()
    }
}

impl<H: Dist> Stats<H> {
    pub fn count(&self) -> u64 {
        self.ok + self.failed
    }

    /// Responses by status class, as ("1xx" … "5xx", count), classes without responses left out.
    pub fn status_classes(&self) -> Vec<(String, u64)> {
        let mut classes = [0u64; 6];
        for (code, n) in self.status.iter() {
            classes[(code as usize / 100).min(5)] += n;
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
    pub fn record(&mut self, outcome: &Outcome) {
        let failed = match outcome.answer {
            Ok(status) => status.is_some_and(|s| s >= 400),
            Err(_) => true,
        };
        if failed {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        match outcome.answer {
            Ok(Some(status)) => self.status.add(u32::from(status), 1),
            Ok(None) => {}
            Err(kind) => *self.errors.entry(kind.as_str().to_owned()).or_default() += 1,
        }
        self.latency.record(outcome.latency_us.clamp(1, MAX_MICROS));
        self.service.record(outcome.service_us.clamp(1, MAX_MICROS));
        self.lag.record(outcome.lag_us.clamp(1, MAX_MICROS));
    }

    /// Adds `other` into `self`, exactly: merging two halves gives the whole.
    pub fn merge(&mut self, other: &Stats<H>) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (code, n) in other.status.iter() {
            self.status.add(code, n);
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.latency.add(&other.latency);
        self.service.add(&other.service);
        self.lag.add(&other.lag);
    }

    fn counts_to_wire(&self) -> pb::Counts {
        pb::Counts {
            ok: self.ok,
            failed: self.failed,
            status: self.status.iter().collect(),
            errors: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    fn with_counts(c: Option<&pb::Counts>, latency: H, service: H, lag: H) -> Self {
        Self {
            ok: c.map_or(0, |c| c.ok),
            failed: c.map_or(0, |c| c.failed),
            status: c.map(|c| c.status.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default(),
            errors: c.map(|c| c.errors.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default(),
            latency,
            service,
            lag,
        }
    }
}

impl EndpointStats {
    /// Prefetches what [`Stats::record`] touches in this value, so that a caller about to
    /// record into many endpoints has their cache misses outstanding together (the
    /// replayer's batch fold). Then [`EndpointStats::prefetch_pending`].
    pub fn prefetch(&self) {
        crate::hint::prefetch(&self.ok);
        crate::hint::prefetch(&self.failed);
        crate::hint::prefetch(&self.status.inline);
        crate::hint::prefetch(&self.status.len);
        for h in [&self.latency, &self.service, &self.lag] {
            h.prefetch();
        }
    }

    /// Prefetches where the histograms keep their next values (reads their fields).
    pub fn prefetch_pending(&self) {
        for h in [&self.latency, &self.service, &self.lag] {
            h.prefetch_pending();
        }
    }

    /// Folds the values its histograms hold unsorted (see [`Sparse`]), so that reading
    /// them (encoding, quantiles) needs no copy.
    pub fn settle(&mut self) {
        self.latency.settle();
        self.service.settle();
        self.lag.settle();
    }

    pub fn to_wire(&self, endpoint: u32) -> pb::EndpointDelta {
        pb::EndpointDelta {
            endpoint,
            counts: Some(self.counts_to_wire()),
            latency: Some(self.latency.to_wire()),
            service: Some(self.service.to_wire()),
            lag: Some(self.lag.to_wire()),
        }
    }

    pub fn from_wire(delta: &pb::EndpointDelta) -> Result<Self, DecodeError> {
        let decode = |d: &Option<pb::Distribution>, which: &'static str| {
            Sparse::from_wire(&d.clone().unwrap_or_default()).map_err(|reason| DecodeError {
                part: format!("endpoint {}", delta.endpoint),
                which,
                reason,
            })
        };
        let (latency, service, lag) = (
            decode(&delta.latency, "latency")?,
            decode(&delta.service, "service")?,
            decode(&delta.lag, "lag")?,
        );
        Ok(Self::with_counts(delta.counts.as_ref(), latency, service, lag))
    }
}

impl TotalStats {
    pub fn to_wire(&self) -> pb::TotalDelta {
        pb::TotalDelta {
            counts: Some(self.counts_to_wire()),
            latency_hist: self.latency.to_wire().into(),
            service_hist: self.service.to_wire().into(),
            lag_hist: self.lag.to_wire().into(),
        }
    }

    pub fn from_wire(delta: &pb::TotalDelta) -> Result<Self, DecodeError> {
        let decode = |bytes: &[u8], which: &'static str| {
            Hdr::from_wire(bytes).map_err(|reason| DecodeError { part: "total".into(), which, reason })
        };
        let (latency, service, lag) = (
            decode(&delta.latency_hist, "latency")?,
            decode(&delta.service_hist, "service")?,
            decode(&delta.lag_hist, "lag")?,
        );
        Ok(Self::with_counts(delta.counts.as_ref(), latency, service, lag))
    }
}

/// How long records of an ordered job (`[proxy] ordered`) waited for their order key's
/// previous response: only records that waited count. Kept apart from [`Stats`]: the wait is
/// the price of the order the user asked for, not the target's latency nor the schedule's
/// error (both count from the instant a record was let go).
#[derive(Clone, Debug, Default)]
pub struct OrderWait {
    /// µs each waiting record waited.
    pub waited: Hdr,
    /// Of those, let go by the order timeout while the previous request was still in flight.
    pub timed_out: u64,
}

impl OrderWait {
    pub fn record(&mut self, waited_us: u64, timed_out: bool) {
        self.waited.record(waited_us.clamp(1, MAX_MICROS));
        self.timed_out += u64::from(timed_out);
    }

    /// Records that waited.
    pub fn count(&self) -> u64 {
        self.waited.len()
    }

    pub fn merge(&mut self, other: &OrderWait) {
        self.waited.add(&other.waited);
        self.timed_out += other.timed_out;
    }

    pub fn reset(&mut self) {
        self.waited.reset();
        self.timed_out = 0;
    }

    pub fn to_wire(&self) -> pb::OrderWait {
        pb::OrderWait { hist: self.waited.to_wire().into(), timed_out: self.timed_out }
    }

    pub fn from_wire(w: &pb::OrderWait) -> Result<Self, DecodeError> {
        let waited = Hdr::from_wire(&w.hist).map_err(|reason| DecodeError {
            part: "order wait".into(),
            which: "wait",
            reason,
        })?;
        // More let go by timeout than waited at all cannot be: the rest is not believed.
        Ok(Self { timed_out: w.timed_out.min(waited.len()), waited })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_has_its_own_name() {
        let names: std::collections::BTreeSet<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::Cancelled.to_string(), "cancelled");
        assert!(ErrorKind::ALL.iter().enumerate().all(|(i, k)| *k as usize == i), "ALL is in order");
        let kinds: Vec<&str> = [1, 5, 14, 16, 17, 0].map(|c| ErrorKind::of_grpc_status(c).as_str()).to_vec();
        assert_eq!(
            kinds,
            [
                "grpc_cancelled",
                "grpc_not_found",
                "grpc_unavailable",
                "grpc_unauthenticated",
                "grpc_unknown",
                "grpc_unknown"
            ]
        );
    }

    fn outcome(status: Option<u16>, error: Option<ErrorKind>, us: u64) -> Outcome {
        let answer = error.map_or(Ok(status), Err);
        Outcome { answer, latency_us: us, service_us: us / 2, lag_us: 3 }
    }

    fn halves_and_whole<H: Dist>() -> (Stats<H>, Stats<H>) {
        let (mut whole, mut a, mut b) = (Stats::<H>::default(), Stats::<H>::default(), Stats::<H>::default());
        for i in 0..1000u64 {
            let o = if i % 7 == 0 {
                outcome(None, Some(ErrorKind::Timeout), 1_000 + i * 37)
            } else {
                outcome(Some(if i % 5 == 0 { 503 } else { 200 }), None, 1_000 + i * 37)
            };
            whole.record(&o);
            if i % 2 == 0 { a.record(&o) } else { b.record(&o) }
        }
        a.merge(&b);
        (a, whole)
    }

    fn assert_same<H: Dist>(a: &Stats<H>, whole: &Stats<H>) {
        assert_eq!((a.ok, a.failed), (whole.ok, whole.failed));
        assert_eq!(a.status, whole.status);
        assert_eq!(a.errors, whole.errors);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.latency.value_at_quantile(q), whole.latency.value_at_quantile(q));
        }
        assert_eq!(a.latency.len(), 1000);
    }

    #[test]
    fn merging_two_halves_equals_the_whole() {
        let (a, whole) = halves_and_whole::<Sparse>();
        assert_same(&a, &whole);
        let (a, whole) = halves_and_whole::<Hdr>();
        assert_same(&a, &whole);
    }

    /// Codes inline and beyond read as one map: by code, whatever order they came in, and
    /// equal to the same counts added in another order.
    #[test]
    fn status_counts_read_as_one_map_past_the_inline_ones() {
        let codes = [503, 200, 200, 404, 301, 204, 200, 500, 404, 418];
        let mut forward = StatusCounts::default();
        let mut plain = BTreeMap::<u32, u64>::new();
        for c in codes {
            forward.add(c, 1);
            *plain.entry(c).or_default() += 1;
        }
        let backward: StatusCounts = codes.iter().rev().map(|c| (*c, 1)).collect();
        let read: Vec<_> = forward.iter().collect();
        assert_eq!(read, plain.iter().map(|(c, n)| (*c, *n)).collect::<Vec<_>>());
        assert_eq!(forward, backward);
        assert_eq!(
            (forward.len(), forward.get(200), forward.get(418), forward.get(999)),
            (7, Some(3), Some(1), None)
        );
        forward.add(418, 1);
        assert_ne!(forward, backward);
        forward.clear();
        assert!(forward.is_empty() && forward.iter().next().is_none());
    }

    #[test]
    fn wire_round_trip_keeps_everything() {
        let mut s = EndpointStats::default();
        let mut t = TotalStats::default();
        for o in [
            outcome(Some(200), None, 12_345),
            outcome(Some(404), None, 99),
            outcome(None, Some(ErrorKind::Connect), 7),
        ] {
            s.record(&o);
            t.record(&o);
        }
        let back = EndpointStats::from_wire(&s.to_wire(7)).expect("decodes");
        let total = TotalStats::from_wire(&t.to_wire()).expect("decodes");
        assert_eq!((back.ok, back.failed), (1, 2));
        assert_eq!(back.status.get(404), Some(1));
        assert_eq!(back.status_classes(), vec![("2xx".to_owned(), 1), ("4xx".to_owned(), 1)]);
        assert_eq!(back.errors.get("connect"), Some(&1));
        assert_eq!(back.latency.max(), 12_345, "exact extremes");
        assert_eq!(back.service.len(), 3);
        assert_eq!((total.ok, total.failed, total.status.len()), (1, 2, 2));
        assert!(total.latency.max() >= 12_345 && total.latency.max() <= 12_360);
    }

    #[test]
    fn values_up_to_a_minute_keep_three_significant_figures_in_the_total() {
        let mut s = TotalStats::default();
        for us in [3, 1_500, 2_345_678, 59_000_000, 90_000_000] {
            s.record(&outcome(Some(200), None, us));
        }
        let back = TotalStats::from_wire(&s.to_wire()).expect("decodes");
        assert_eq!(back.latency.min(), 3);
        let p60 = back.latency.value_at_quantile(0.6) as f64;
        assert!((p60 - 2_345_678.0).abs() < 2_345_678.0 / 1000.0, "{p60}");
        let max = back.latency.max() as f64;
        assert!((max - MAX_MICROS as f64).abs() < MAX_MICROS as f64 / 1000.0, "clamped at 60 s: {max}");
    }

    /// Waits merge exactly and cross the wire whole; a corrupt one is an error naming it.
    #[test]
    fn order_waits_merge_and_travel() {
        let (mut a, mut b, mut whole) = (OrderWait::default(), OrderWait::default(), OrderWait::default());
        for i in 0..500u64 {
            let timed_out = i % 100 == 0;
            whole.record(i * 1_000, timed_out);
            if i % 2 == 0 { a.record(i * 1_000, timed_out) } else { b.record(i * 1_000, timed_out) }
        }
        a.merge(&OrderWait::from_wire(&b.to_wire()).expect("decodes"));
        assert_eq!((a.count(), a.timed_out), (500, 5));
        for q in [0.5, 0.99, 1.0] {
            assert_eq!(a.waited.value_at_quantile(q), whole.waited.value_at_quantile(q));
        }
        assert_eq!(a.waited.min(), 1, "a wait of 0 counts as 1 µs: it waited");
        let mut wire = whole.to_wire();
        wire.timed_out = 10_000;
        assert_eq!(OrderWait::from_wire(&wire).expect("decodes").timed_out, 500);
        wire.hist = vec![9, 9].into();
        let err = OrderWait::from_wire(&wire).expect_err("corrupt");
        assert!(err.to_string().contains("order wait: cannot decode wait"), "{err}");
        a.reset();
        assert_eq!((a.count(), a.timed_out), (0, 0));
    }

    #[test]
    fn a_corrupt_histogram_is_an_error_not_a_panic() {
        let mut wire = TotalStats::default().to_wire();
        wire.latency_hist = vec![1, 2, 3].into();
        let err = TotalStats::from_wire(&wire).expect_err("corrupt");
        assert!(err.to_string().contains("total: cannot decode latency"), "{err}");
        let mut wire = EndpointStats::default().to_wire(3);
        wire.lag = Some(pb::Distribution { bucket: vec![1], count: vec![], ..Default::default() });
        let err = EndpointStats::from_wire(&wire).expect_err("corrupt");
        assert!(err.to_string().contains("endpoint 3: cannot decode lag"), "{err}");
    }
}
