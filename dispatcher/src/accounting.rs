//! Every record is accounted for. Three identities hold at the end of a job (and are shown
//! in /status, the table and the JSON report; `balanced` is all three):
//!
//! - `input = in_range + out_of_range`: every record taken from the source is either in
//!   `[begin, end]` or not (a stopped job's records still in the reorder window are in range,
//!   dropped as stopped);
//! - `scheduled = sent + Σ dropped{reason}`, where `scheduled` is the copies realised from the
//!   in-range input (`rate` applied) and `sent` is what the replayers fired;
//! - `sent = ok + failed`.
//!
//! Malformed units and skipped units are counted apart: they never become input. Skipped
//! are GoReplay responses, and records the shaping rules left out: a `[[filter]]` rule
//! (`skipped.filtered`, by rule in `filtered`), a `[[substitute]]` with `unmapped = "drop"`
//! (`skipped.unmapped`) and a `[[rewrite]]` with `on_failure = "skip"`
//! (`skipped.rewrite_failed`). What each substitute and rewrite did is counted by rule in
//! `substitutes` and `rewrites`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::redact::Redactor;

/// Samples logged per malformed reason; the rest are only counted.
const SAMPLES_PER_REASON: u64 = 5;

/// Why a scheduled copy was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Later than the reorder window, with `late = "drop"`.
    Late,
    /// No replayer was connected when it was due.
    NoReplayer,
    /// Held, un-acknowledged, by a replayer that went away.
    LostInFlight,
    /// The job was stopped before it was sent.
    Stopped,
    /// Scheduled by a shard of a sharded job that was lost before its end: what it had not
    /// reported sent or dropped by its last report.
    ShardLost,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Late,
        DropReason::NoReplayer,
        DropReason::LostInFlight,
        DropReason::Stopped,
        DropReason::ShardLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Late => "late",
            DropReason::NoReplayer => "no_replayer",
            DropReason::LostInFlight => "lost_in_flight",
            DropReason::Stopped => "stopped",
            DropReason::ShardLost => "shard_lost",
        }
    }
}

/// Why a unit of the recording was not understood: the names of `malformed` in the report,
/// the metrics and the logs. Every name lives here, so a new one is a variant, never a
/// string typed at the place it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    // Any format: a unit past the line limit, a time outside `[analyzer] earliest/max_ahead`,
    // headers that cannot be sent as they are.
    TooLong,
    ImplausibleTime,
    TooManyHeaders,
    HeadersTooLarge,
    BadHeaders,
    // json records.
    JsonSyntax,
    MissingTs,
    BadTs,
    MissingMethod,
    BadMethod,
    MissingUrl,
    BadUrl,
    BadBody,
    BadResponse,
    // HAR entries: one that is not an entry (no request object, broken JSON), one without a
    // usable `startedDateTime`, and the whole file when it has no `log.entries`.
    HarEntry,
    HarTime,
    HarNoEntries,
    // GoReplay units.
    GorTruncated,
    GorMeta,
    HttpHead,
    HttpHeader,
    HttpBody,
    HttpStatusLine,
    HttpRequestLine,
    // Combined access-log lines.
    NotUtf8,
    NoTime,
    BadTime,
    NoRequest,
    BadRequest,
    // Sources: a part that could not be read, a Kafka message without a time.
    ReadError,
    UnreadableFile,
    UnreadableObject,
    NoKafkaTimestamp,
}

impl Malformed {
    pub const ALL: [Malformed; 33] = [
        Malformed::TooLong,
        Malformed::ImplausibleTime,
        Malformed::TooManyHeaders,
        Malformed::HeadersTooLarge,
        Malformed::BadHeaders,
        Malformed::JsonSyntax,
        Malformed::MissingTs,
        Malformed::BadTs,
        Malformed::MissingMethod,
        Malformed::BadMethod,
        Malformed::MissingUrl,
        Malformed::BadUrl,
        Malformed::BadBody,
        Malformed::BadResponse,
        Malformed::HarEntry,
        Malformed::HarTime,
        Malformed::HarNoEntries,
        Malformed::GorTruncated,
        Malformed::GorMeta,
        Malformed::HttpHead,
        Malformed::HttpHeader,
        Malformed::HttpBody,
        Malformed::HttpStatusLine,
        Malformed::HttpRequestLine,
        Malformed::NotUtf8,
        Malformed::NoTime,
        Malformed::BadTime,
        Malformed::NoRequest,
        Malformed::BadRequest,
        Malformed::ReadError,
        Malformed::UnreadableFile,
        Malformed::UnreadableObject,
        Malformed::NoKafkaTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::TooLong => "too_long",
            Malformed::ImplausibleTime => "implausible_time",
            Malformed::TooManyHeaders => "too_many_headers",
            Malformed::HeadersTooLarge => "headers_too_large",
            Malformed::BadHeaders => "bad_headers",
            Malformed::JsonSyntax => "json_syntax",
            Malformed::HarEntry => "har_entry",
            Malformed::HarTime => "har_time",
            Malformed::HarNoEntries => "har_no_entries",
            Malformed::MissingTs => "missing_ts",
            Malformed::BadTs => "bad_ts",
            Malformed::MissingMethod => "missing_method",
            Malformed::BadMethod => "bad_method",
            Malformed::MissingUrl => "missing_url",
            Malformed::BadUrl => "bad_url",
            Malformed::BadBody => "bad_body",
            Malformed::BadResponse => "bad_response",
            Malformed::GorTruncated => "gor_truncated",
            Malformed::GorMeta => "gor_meta",
            Malformed::HttpHead => "http_head",
            Malformed::HttpHeader => "http_header",
            Malformed::HttpBody => "http_body",
            Malformed::HttpStatusLine => "http_status_line",
            Malformed::HttpRequestLine => "http_request_line",
            Malformed::NotUtf8 => "not_utf8",
            Malformed::NoTime => "no_time",
            Malformed::BadTime => "bad_time",
            Malformed::NoRequest => "no_request",
            Malformed::BadRequest => "bad_request",
            Malformed::ReadError => "read_error",
            Malformed::UnreadableFile => "unreadable_file",
            Malformed::UnreadableObject => "unreadable_object",
            Malformed::NoKafkaTimestamp => "no_kafka_timestamp",
        }
    }
}

/// Why a unit that was understood is not replayed: the names of `skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// A GoReplay response (type 2 paired with its request, or type 3).
    GorResponse,
    /// A GoReplay answer to no request waiting for one.
    GorResponseUnpaired,
    /// Left out by a `[[filter]]` rule.
    Filtered,
    /// A `[[substitute]]` value its table lacks, with `unmapped = "drop"`.
    Unmapped,
    /// A `[[rewrite]]` that could not be applied, with `on_failure = "skip"`.
    RewriteFailed,
    /// A request whose body the capture kept only in part (`reprise record --max-body`):
    /// it cannot be sent as it was.
    BodyCut,
}

impl Skipped {
    pub const ALL: [Skipped; 6] = [
        Skipped::GorResponse,
        Skipped::GorResponseUnpaired,
        Skipped::Filtered,
        Skipped::Unmapped,
        Skipped::RewriteFailed,
        Skipped::BodyCut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::GorResponse => "gor_response",
            Skipped::GorResponseUnpaired => "gor_response_unpaired",
            Skipped::Filtered => "filtered",
            Skipped::Unmapped => "unmapped",
            Skipped::RewriteFailed => "rewrite_failed",
            Skipped::BodyCut => "body_cut",
        }
    }
}

/// A counter on a cache line of its own (128 bytes: a pair of lines, which x86 fetches
/// together).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Apart(AtomicU64);

/// Counters shared by the pipeline's stages (cheap atomics on the hot path).
#[derive(Debug, Default)]
pub struct Accounting {
    input: AtomicU64,
    in_range: AtomicU64,
    /// Added to by the reader threads for every unit, while the dispatch loop adds to
    /// `input`, `in_range` and `scheduled` for every record: on one cache line, each add
    /// would move the line between the two cores.
    bytes: Apart,
    out_of_range: AtomicU64,
    late: AtomicU64,
    scheduled: AtomicU64,
    dispatched: AtomicU64,
    malformed: Mutex<BTreeMap<Malformed, u64>>,
    skipped: Mutex<BTreeMap<Skipped, u64>>,
    dropped: Mutex<BTreeMap<DropReason, u64>>,
    /// Records each `[[filter]]` rule left out, by the rule's index: an add per record
    /// filtered, from every reader thread, so an atomic each rather than a map behind a lock.
    filtered: Box<[(String, AtomicU64)]>,
    /// Each `[[substitute]]` rule's counts, by its index (`hits`: values replaced from the
    /// table; `misses`: values it lacks).
    substitutes: Box<[RuleCounter]>,
    /// Each `[[rewrite]]` rule's counts, by its index (`hits`: records changed; `misses`:
    /// records it could not be applied to).
    rewrites: Box<[RuleCounter]>,
    /// Input at the end of each pass over the recording (`loop`, `duration`).
    pass_ends: Mutex<Vec<u64>>,
    /// Takes secrets out of the samples of malformed input.
    redactor: Redactor,
    /// The samples logged (the first few of each reason), for the live page.
    samples: Mutex<Vec<InputSample>>,
}

/// A malformed unit as logged: where, why, and its start with secrets redacted.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InputSample {
    pub reason: &'static str,
    pub source: String,
    /// The unit's number in its source, 1-based (the line number for line formats).
    pub unit: u64,
    pub detail: String,
    pub sample: String,
}

/// The names of a job's shaping rules, in the order of their sections, for their counts.
#[derive(Clone, Debug, Default)]
pub struct RuleNames {
    pub filters: Vec<String>,
    /// With whether a value the table lacks leaves the record out (`unmapped = "drop"`).
    pub substitutes: Vec<(String, bool)>,
    /// With whether a record the rule fails on is left out (`on_failure = "skip"`).
    pub rewrites: Vec<(String, bool)>,
}

/// One substitute's or rewrite's counts, added to from every reader thread.
#[derive(Debug)]
struct RuleCounter {
    name: String,
    hits: AtomicU64,
    misses: AtomicU64,
    /// A miss leaves the record out (counted in `skipped` too).
    miss_skips: bool,
}

impl RuleCounter {
    fn new((name, miss_skips): (String, bool)) -> Self {
        RuleCounter { name, hits: AtomicU64::new(0), misses: AtomicU64::new(0), miss_skips }
    }

    fn skipped(rules: &[RuleCounter]) -> u64 {
        rules.iter().filter(|r| r.miss_skips).map(|r| r.misses.load(Relaxed)).sum()
    }
}

/// What a `[[substitute]]` rule did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubstituteCount {
    /// Values replaced by the table's.
    pub replaced: u64,
    /// Values the table lacks (or the pattern does not match): kept, replaced by the
    /// default or their record left out, as `unmapped` says.
    pub unmapped: u64,
}

/// What a `[[rewrite]]` rule did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteCount {
    /// Records it changed.
    pub applied: u64,
    /// Records it could not be applied to (a body not json, a pointer's parent missing):
    /// sent with the rest of the rule applied, or left out with `on_failure = "skip"`.
    pub failed: u64,
}

/// A consistent-enough copy of the counters for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Records taken from the source (parsed, merged in time order).
    pub input: u64,
    /// Records inside `[begin, end]` handed to the wheel (or, when the job stopped, held in
    /// the reorder window: dropped as stopped); `input = in_range + out_of_range`.
    pub in_range: u64,
    /// Bytes read from the source (after decompression).
    pub bytes: u64,
    /// Records outside `[begin, end]` (not scheduled).
    pub out_of_range: u64,
    /// Records later than the reorder window (sent at once or dropped, per `late`).
    pub late: u64,
    /// Copies realised from in-range records (`rate` applied).
    pub scheduled: u64,
    /// Copies handed to replayers.
    pub dispatched: u64,
    pub malformed: BTreeMap<Malformed, u64>,
    /// Units that are not requests to replay: GoReplay responses (`response`), records left
    /// out by a filter (`filtered`).
    pub skipped: BTreeMap<Skipped, u64>,
    /// Records left out by each `[[filter]]` rule, by its name (every rule, zeros included).
    pub filtered: BTreeMap<String, u64>,
    /// Each `[[substitute]]` rule's counts, by its name.
    pub substitutes: BTreeMap<String, SubstituteCount>,
    /// Each `[[rewrite]]` rule's counts, by its name.
    pub rewrites: BTreeMap<String, RewriteCount>,
    pub dropped: BTreeMap<DropReason, u64>,
    /// Records taken from the source in each pass over the recording, for a job that loops
    /// (`loop`, `duration`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<u64>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) -> u64 {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let v = m.entry(key).or_default();
    *v += n;
    *v
}

impl Accounting {
    /// Counters whose malformed-input samples are redacted by `redactor`, with counts for
    /// each shaping rule, named.
    pub fn new(redactor: Redactor, rules: RuleNames) -> Self {
        Accounting {
            redactor,
            filtered: rules.filters.into_iter().map(|name| (name, AtomicU64::new(0))).collect(),
            substitutes: rules.substitutes.into_iter().map(RuleCounter::new).collect(),
            rewrites: rules.rewrites.into_iter().map(RuleCounter::new).collect(),
            ..Accounting::default()
        }
    }

    /// A record taken from the source's merge.
    pub fn input(&self) {
        self.input.fetch_add(1, Relaxed);
    }

    /// A record handed to the wheel (inside `[begin, end]`).
    pub fn in_range(&self) {
        self.in_range.fetch_add(1, Relaxed);
    }

    pub fn out_of_range_n(&self, n: u64) {
        self.out_of_range.fetch_add(n, Relaxed);
    }

    pub fn unit_bytes(&self, bytes: u64) {
        self.bytes.0.fetch_add(bytes, Relaxed);
    }

    /// Counts a malformed unit and logs the first few of each reason: where (`source`, and the
    /// unit's number in it, 1-based: the line number for line formats), what is wrong, and the
    /// start of the unit itself, secret header values and bodies redacted.
    pub fn malformed(&self, reason: Malformed, detail: &str, unit: &[u8], source: &str, at: u64) {
        let n = bump(&self.malformed, reason, 1);
        if n <= SAMPLES_PER_REASON {
            let sample = self.redactor.sample(unit, 160);
            let reason = reason.as_str();
            tracing::warn!(reason, source, unit = at, detail, sample = %sample.escape_debug(), "malformed input skipped");
            let kept = InputSample {
                reason,
                source: source.to_owned(),
                unit: at,
                detail: detail.to_owned(),
                sample,
            };
            self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(kept);
        }
    }

    /// The malformed units logged so far (at most five of each reason), secrets redacted.
    pub fn input_samples(&self) -> Vec<InputSample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn skipped(&self, reason: Skipped) {
        bump(&self.skipped, reason, 1);
    }

    /// A record the `[[filter]]` rule at `rule` left out.
    pub fn filtered(&self, rule: usize) {
        if let Some((_, n)) = self.filtered.get(rule) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// A value the `[[substitute]]` rule at `rule` replaced from its table.
    pub fn substituted(&self, rule: usize) {
        if let Some(r) = self.substitutes.get(rule) {
            r.hits.fetch_add(1, Relaxed);
        }
    }

    /// A value the `[[substitute]]` rule at `rule` found no mapping for.
    pub fn unmapped(&self, rule: usize) {
        if let Some(r) = self.substitutes.get(rule) {
            r.misses.fetch_add(1, Relaxed);
        }
    }

    /// A record the `[[rewrite]]` rule at `rule` changed.
    pub fn rewritten(&self, rule: usize) {
        if let Some(r) = self.rewrites.get(rule) {
            r.hits.fetch_add(1, Relaxed);
        }
    }

    /// A record the `[[rewrite]]` rule at `rule` could not be applied to.
    pub fn rewrite_failed(&self, rule: usize) {
        if let Some(r) = self.rewrites.get(rule) {
            r.misses.fetch_add(1, Relaxed);
        }
    }

    /// A pass over the recording of a job that loops ended: its input is what came in since
    /// the last.
    pub fn pass_done(&self) {
        let input = self.input.load(Relaxed);
        self.pass_ends.lock().unwrap_or_else(|p| p.into_inner()).push(input);
    }

    pub fn out_of_range(&self) {
        self.out_of_range.fetch_add(1, Relaxed);
    }

    pub fn late(&self) {
        self.late.fetch_add(1, Relaxed);
    }

    pub fn scheduled(&self, copies: u64) {
        self.scheduled.fetch_add(copies, Relaxed);
    }

    pub fn dispatched(&self, n: u64) {
        self.dispatched.fetch_add(n, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            bump(&self.dropped, reason, n);
        }
    }

    pub fn counts(&self) -> Counts {
        fn lock<K: Clone>(m: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
            m.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
        Counts {
            input: self.input.load(Relaxed),
            in_range: self.in_range.load(Relaxed),
            bytes: self.bytes.0.load(Relaxed),
            out_of_range: self.out_of_range.load(Relaxed),
            late: self.late.load(Relaxed),
            scheduled: self.scheduled.load(Relaxed),
            dispatched: self.dispatched.load(Relaxed),
            malformed: lock(&self.malformed),
            skipped: {
                let mut skipped = lock(&self.skipped);
                let filtered: u64 = self.filtered.iter().map(|(_, n)| n.load(Relaxed)).sum();
                for (reason, n) in [
                    (Skipped::Filtered, filtered),
                    (Skipped::Unmapped, RuleCounter::skipped(&self.substitutes)),
                    (Skipped::RewriteFailed, RuleCounter::skipped(&self.rewrites)),
                ] {
                    if n > 0 {
                        skipped.insert(reason, n);
                    }
                }
                skipped
            },
            filtered: self.filtered.iter().map(|(name, n)| (name.clone(), n.load(Relaxed))).collect(),
            substitutes: self
                .substitutes
                .iter()
                .map(|r| {
                    let count =
                        SubstituteCount { replaced: r.hits.load(Relaxed), unmapped: r.misses.load(Relaxed) };
                    (r.name.clone(), count)
                })
                .collect(),
            rewrites: self
                .rewrites
                .iter()
                .map(|r| {
                    let count =
                        RewriteCount { applied: r.hits.load(Relaxed), failed: r.misses.load(Relaxed) };
                    (r.name.clone(), count)
                })
                .collect(),
            dropped: self.dropped.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            passes: {
                let ends = self.pass_ends.lock().unwrap_or_else(|p| p.into_inner());
                ends.iter().scan(0, |before, &end| Some(end - std::mem::replace(before, end))).collect()
            },
        }
    }
}

impl Counts {
    /// Adds the books of another part of the job (a shard, a separate run): every count is
    /// a sum, so the identities that hold for each part hold for the whole.
    pub fn add(&mut self, other: &Counts) {
        fn add_map<K: Ord + Clone, V: Default>(
            to: &mut BTreeMap<K, V>,
            from: &BTreeMap<K, V>,
            add: fn(&mut V, &V),
        ) {
            for (k, v) in from {
                add(to.entry(k.clone()).or_default(), v);
            }
        }
        let sum = |a: &mut u64, b: &u64| *a += b;
        self.input += other.input;
        self.in_range += other.in_range;
        self.bytes += other.bytes;
        self.out_of_range += other.out_of_range;
        self.late += other.late;
        self.scheduled += other.scheduled;
        self.dispatched += other.dispatched;
        add_map(&mut self.malformed, &other.malformed, sum);
        add_map(&mut self.skipped, &other.skipped, sum);
        add_map(&mut self.filtered, &other.filtered, sum);
        add_map(&mut self.dropped, &other.dropped, sum);
        add_map(&mut self.substitutes, &other.substitutes, |a, b| {
            a.replaced += b.replaced;
            a.unmapped += b.unmapped;
        });
        add_map(&mut self.rewrites, &other.rewrites, |a, b| {
            a.applied += b.applied;
            a.failed += b.failed;
        });
        if self.passes.len() < other.passes.len() {
            self.passes.resize(other.passes.len(), 0);
        }
        for (a, b) in self.passes.iter_mut().zip(&other.passes) {
            *a += b;
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is the same in the report (serde), the metrics and the logs (`as_str`), and
    /// no two reasons share one.
    #[test]
    fn every_reason_has_one_name_everywhere() {
        fn check<T: Serialize + Copy>(all: &[T], as_str: fn(T) -> &'static str) {
            let names: BTreeMap<&str, usize> = all.iter().map(|&r| (as_str(r), 0)).collect();
            assert_eq!(names.len(), all.len(), "names are unique");
            for &r in all {
                assert_eq!(serde_json::to_value(r).expect("json"), as_str(r));
            }
        }
        check(&Malformed::ALL, Malformed::as_str);
        check(&Skipped::ALL, Skipped::as_str);
        check(&DropReason::ALL, DropReason::as_str);
    }
}
