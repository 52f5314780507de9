//! Analyzers turn the raw units a fetcher reads (a line, or a GoReplay record) into
//! [`Record`]s. They are sync and pure: bytes in, a record or a counted reason out. A bad
//! unit never stops the job.

mod answers;
mod combined;
mod gor;
mod har;
mod json;
mod times;

use bytes::Bytes;

use crate::config::{self, Format};
use crate::record::Record;

use crate::accounting::{Malformed, Skipped};
pub use answers::Answers;
pub use combined::Combined;
pub use gor::{GOR_SEPARATOR, Gor};
pub use har::Har;
pub use json::Json;
pub use times::Plausible;

/// What came of one raw unit.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Record(Record),
    /// Valid but not a request to replay (GoReplay responses), counted by reason.
    Skipped(Skipped),
    /// Not understood, counted by reason; `detail` goes into the few logged samples.
    Malformed {
        reason: Malformed,
        detail: String,
    },
    /// A request whose recorded answer comes in a later unit with the same `id` (GoReplay,
    /// when the job compares against recorded answers): the fetcher pairs them.
    Request {
        id: Bytes,
        record: Record,
    },
    /// The recorded answer to the request of `id`, encoded ([`Answers::encode`]).
    Answer {
        id: Bytes,
        expected: Box<Bytes>,
    },
}

impl Parsed {
    fn malformed(reason: Malformed, detail: impl Into<String>) -> Self {
        Parsed::Malformed { reason, detail: detail.into() }
    }
}

/// How a fetcher cuts a byte stream into units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One unit per line.
    Lines,
    /// Units end with GoReplay's separator line.
    Gor,
    /// Units are the elements of a HAR's `log.entries` array.
    HarEntries,
}

/// Where the hash key of a record comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Header(String),
    Query(String),
    /// A top-level field of a json record.
    Json(String),
}

impl KeySource {
    /// Parses "header:NAME", "query:NAME" or "json:NAME" (checked by config validation).
    pub fn parse(spec: &str) -> Option<Self> {
        let (kind, name) = spec.split_once(':')?;
        match kind {
            "header" => Some(KeySource::Header(name.into())),
            "query" => Some(KeySource::Query(name.into())),
            "json" => Some(KeySource::Json(name.into())),
            _ => None,
        }
    }

    /// The key of a parsed record, for header and query sources.
    fn key_of(&self, r: &Record) -> Option<String> {
        match self {
            KeySource::Header(n) => r.header(n).map(|v| String::from_utf8_lossy(v).into_owned()),
            KeySource::Query(n) => r.query_param(n).map(str::to_owned),
            KeySource::Json(_) => None,
        }
    }
}

/// The configured analyzer: a closed set.
#[derive(Clone, Debug)]
pub enum Analyzer {
    Json(Json),
    Gor(Gor),
    Combined(Combined),
    Har(Har),
}

impl Analyzer {
    pub fn build(cfg: &config::AnalyzerConfig) -> Self {
        let key = cfg.hash_field.as_deref().and_then(KeySource::parse);
        match cfg.format {
            Format::Json => Analyzer::Json(Json::new(cfg.fields.clone(), cfg.timestamp_unit, key)),
            Format::Gor => Analyzer::Gor(Gor::new(key)),
            Format::Combined => Analyzer::Combined(Combined::new(key)),
            Format::Har => Analyzer::Har(Har::new(key)),
        }
    }

    /// The job's analyzer: [`Analyzer::build`], reading the recording's answers too when
    /// the job compares against them (combined logs hold none: validation refuses that).
    pub fn for_job(cfg: &config::JobConfig) -> Self {
        Self::build(&cfg.analyzer).with_answers(Answers::of(cfg))
    }

    /// Reads the recording's answers too (GoReplay type 2 units, json and HAR `response`
    /// objects).
    pub fn with_answers(self, answers: Option<Answers>) -> Self {
        match self {
            Analyzer::Json(a) => Analyzer::Json(a.with_answers(answers)),
            Analyzer::Gor(a) => Analyzer::Gor(a.with_answers(answers)),
            Analyzer::Har(a) => Analyzer::Har(a.with_answers(answers)),
            other => other,
        }
    }

    pub fn framing(&self) -> Framing {
        match self {
            Analyzer::Gor(_) => Framing::Gor,
            Analyzer::Har(_) => Framing::HarEntries,
            Analyzer::Json(_) | Analyzer::Combined(_) => Framing::Lines,
        }
    }

    /// Parses one unit. Json records keep slices of `unit` instead of copies of their fields.
    pub fn parse(&self, unit: &Bytes) -> Parsed {
        let parsed = match self {
            Analyzer::Json(a) => a.parse(unit),
            Analyzer::Gor(a) => a.parse(unit),
            Analyzer::Combined(a) => a.parse(unit),
            Analyzer::Har(a) => a.parse(unit),
        };
        match parsed {
            Parsed::Record(r) => sendable(r),
            Parsed::Request { id, record } => match sendable(record) {
                Parsed::Record(record) => Parsed::Request { id, record },
                refused => refused,
            },
            other => other,
        }
    }
}

/// Headers a record may carry. Browsers send a few dozen and servers refuse a head past
/// 8 to 64 KiB, so more is not traffic to replay (and past 32,768 the `http` crate's header
/// map, which https requests are built in, cannot hold them).
pub const MAX_HEADERS: usize = 1000;
/// Bytes of all header names and values together.
pub const MAX_HEADER_BYTES: usize = 256 << 10;

/// A record that can be sent as it was recorded, or why not. Checked once here for every
/// format, so a replayer never meets a record it cannot write (it would drop the header, or
/// the request, where nobody counts it). Values are never quoted: they may be secrets.
fn sendable(r: Record) -> Parsed {
    if r.headers.len() > MAX_HEADERS {
        let detail = format!("{} headers; at most {MAX_HEADERS} are replayed", r.headers.len());
        return Parsed::malformed(Malformed::TooManyHeaders, detail);
    }
    // One pass, per record on the dispatch path (SIMD for values). Names need no check here:
    // the json and gor analyzers take only tokens, and combined names its two headers itself.
    let mut bytes = 0;
    for (name, value) in &r.headers {
        // As bytes: `name.len()` reads it as a `str`, and that check of every header name
        // was 4 % of the dispatcher's CPU on production-shaped records.
        bytes += name.as_bytes().len() + value.len();
        if memchr::memchr3(b'\r', b'\n', 0, value).is_some() {
            let detail =
                format!("the value of header `{name}` holds CR, LF or NUL: it cannot be sent as one header");
            return Parsed::malformed(Malformed::BadHeaders, detail);
        }
    }
    if bytes > MAX_HEADER_BYTES {
        let detail = format!("headers of {bytes} bytes; at most {MAX_HEADER_BYTES} are replayed");
        return Parsed::malformed(Malformed::HeadersTooLarge, detail);
    }
    Parsed::Record(r)
}

/// Sets the record's key from a header or query source.
fn with_key(mut r: Record, key: Option<&KeySource>) -> Record {
    if let Some(src) = key
        && r.key.is_none()
    {
        r.key = src.key_of(&r);
    }
    r
}

/// A method is a short HTTP token.
fn is_method(m: &str) -> bool {
    is_token(m) && m.len() <= 32
}

/// An HTTP token (methods, header names), by the wire's rule.
pub(super) fn is_token(m: &str) -> bool {
    reprise_proto::token::is_token(m.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency needed for a fuzz-style sweep).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    const SEEDS: [&[u8]; 3] = [
        br#"{"ts":"2024-05-01T12:00:00Z","method":"POST","url":"http://h/a?b=1","headers":{"A":["x","y"]},"body":"h\u00e9"}"#,
        b"1 id 1700000000000000000 0\nPOST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\n",
        br#"1.2.3.4 - - [10/Oct/2023:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 5 "r\"x" "ua""#,
    ];

    fn json_with_headers(headers: &str) -> Parsed {
        let unit = format!(r#"{{"ts":1,"method":"GET","url":"/a","headers":{{{headers}}}}}"#);
        Analyzer::build(&config::AnalyzerConfig::default()).parse(&Bytes::from(unit))
    }

    #[test]
    fn records_that_cannot_be_sent_as_recorded_are_malformed_by_reason() {
        let reason = |p: Parsed| match p {
            Parsed::Malformed { reason, detail } => (reason.as_str(), detail),
            other => panic!("{other:?}"),
        };
        let many: Vec<String> = (0..MAX_HEADERS + 1).map(|i| format!(r#""h{i}":"v""#)).collect();
        assert_eq!(reason(json_with_headers(&many.join(","))).0, "too_many_headers");
        let fine: Vec<String> = (0..MAX_HEADERS).map(|i| format!(r#""h{i}":"v""#)).collect();
        assert!(matches!(json_with_headers(&fine.join(",")), Parsed::Record(_)));
        let big = format!(r#""X-Big":"{}""#, "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(reason(json_with_headers(&big)).0, "headers_too_large");
        let (why, detail) = reason(json_with_headers(r#""Authorization":"Bearer s3cr3t\r\nX-Injected: 1""#));
        assert_eq!(why, "bad_headers");
        assert!(
            detail.contains("Authorization") && !detail.contains("s3cr3t"),
            "names, never quotes: {detail}"
        );
        assert_eq!(reason(json_with_headers(r#""Bad Name":"v""#)).0, "bad_headers");
        let long_name = format!(r#""X-{}":"v""#, "n".repeat(100));
        assert!(
            matches!(json_with_headers(&long_name), Parsed::Record(_)),
            "names longer than a method are fine"
        );
    }

    /// Random bytes and random mutations (flips, cuts, insertions of multi-byte UTF-8) of
    /// valid units: every analyzer answers a record, a skip or a reason, and never panics.
    #[test]
    fn no_input_makes_an_analyzer_panic() {
        let analyzers = [
            Analyzer::build(&config::AnalyzerConfig {
                hash_field: Some("json:ts".into()),
                ..Default::default()
            }),
            Analyzer::build(&config::AnalyzerConfig {
                format: Format::Gor,
                hash_field: Some("header:Host".into()),
                ..Default::default()
            }),
            Analyzer::build(&config::AnalyzerConfig {
                format: Format::Combined,
                hash_field: Some("query:b".into()),
                ..Default::default()
            }),
        ];
        let mut rng = Lcg(42);
        let mut records = 0;
        for round in 0..20_000 {
            let mut unit = SEEDS[round % 3].to_vec();
            for _ in 0..rng.next() % 4 {
                let at = (rng.next() as usize) % (unit.len() + 1);
                match rng.next() % 4 {
                    0 if at < unit.len() => unit[at] ^= 1 << (rng.next() % 8),
                    1 => unit.truncate(at),
                    2 => unit.splice(at..at, "é🙈\"\\{}[]\r\n".bytes()).for_each(drop),
                    _ => unit = (0..rng.next() % 64).map(|_| rng.next() as u8).collect(),
                }
            }
            for a in &analyzers {
                if let Parsed::Record(r) = a.parse(&Bytes::from(unit.clone())) {
                    assert!(r.path.starts_with('/'), "{r:?}");
                    records += 1;
                }
            }
        }
        assert!(records > 1000, "mutations keep many units valid: {records}");
    }
}
