//! Entry points of the fuzz targets (`fuzz/`, run with cargo-fuzz): each takes arbitrary
//! bytes, as a hostile recording, job file or replayer could send them, and must neither
//! panic nor hang. The seed corpus and every input that once crashed one of them live in
//! `fuzz/corpus/<target>/`; a unit test below runs them all on stable with the other tests.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use reprise_proto::pb;

use crate::accounting::Accounting;
use crate::analyzers::{Analyzer, Answers, Parsed};
use crate::config::{AnalyzerConfig, Format, JobConfig};
use crate::fleet::Fleet;
use crate::routing::HashStrategy;
use crate::shaping::{Shaping, json};

/// Rewrites of every kind, applied to each record the analyzers make of an input.
const REWRITES: &str = r#"
[[rewrite]]
path = { from = "^/(\\w+)/(.*)$", to = "/v2/$2/${1}" }
set_host = "h"
remove_headers = ["a"]
rename_headers = { "b" = "c" }
set_headers = { "d" = "e" }
remove_query = ["u"]
set_query = { "q" = "1" }
remove_json = ["/a/0", "/b"]
set_json = { "/user/id" = 1, "/-" = [true], "/x~1y" = "z" }
"#;

/// The job's shaping with [`REWRITES`], built once.
fn shaping() -> Option<&'static (Shaping, Accounting)> {
    static SHAPING: OnceLock<Option<(Shaping, Accounting)>> = OnceLock::new();
    SHAPING
        .get_or_init(|| {
            let cfg = JobConfig::parse(&format!(
                "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n{REWRITES}"
            ))
            .ok()?;
            let accounting = Accounting::new(crate::redact::Redactor::default(), Shaping::rule_names(&cfg));
            Some((Shaping::new(&cfg).ok()?, accounting))
        })
        .as_ref()
}

/// One unit of a recording, through every analyzer (with a key source, so that path runs),
/// each record through rewrites of every kind; and the unit as a json body, each field
/// pointer edit made on it.
pub fn analyzers(data: &[u8]) {
    let unit = Bytes::copy_from_slice(data);
    let shaping = shaping();
    for format in [Format::Json, Format::Gor, Format::Combined, Format::Har] {
        for key in [None, Some("header:X-User"), Some("query:u"), Some("json:user")] {
            let cfg =
                AnalyzerConfig { format, hash_field: key.map(str::to_owned), ..AnalyzerConfig::default() };
            if let (Parsed::Record(r), Some((shaping, acc))) = (Analyzer::build(&cfg).parse(&unit), shaping) {
                let _ = shaping.apply(r, acc);
            }
        }
        // Reading the recording's answers too (`[compare] baseline = "recorded"`).
        let cfg = AnalyzerConfig { format, ..AnalyzerConfig::default() };
        let _ = Analyzer::build(&cfg).with_answers(Some(Answers::new(&["etag"], 16))).parse(&unit);
    }
    for pointer in ["", "/a", "/a/0", "/a/-", "/a/b/c", "/0"] {
        for op in [json::Op::Remove, json::Op::Set("[1]".into())] {
            let _ = json::edit(data, &json::tokens(pointer), &op);
        }
    }
}

/// A HAR file: cut into its entries as a file source cuts it, each entry parsed (with its
/// recorded answer).
pub fn har_file(data: &[u8]) {
    let cfg = AnalyzerConfig { format: Format::Har, ..AnalyzerConfig::default() };
    let har = Analyzer::build(&cfg).with_answers(Some(Answers::new(&["etag"], 16)));
    let mut entries = crate::fetchers::HarEntries::default();
    let mut reader = std::io::BufReader::with_capacity(64, data);
    let mut buf = bytes::BytesMut::new();
    while let Ok(crate::fetchers::HarCut::Entry | crate::fetchers::HarCut::TooLong) =
        entries.next(&mut reader, &mut buf, 1 << 20)
    {
        let _ = har.parse(&buf.split().freeze());
    }
}

/// A job file: parsed and validated (thresholds, key patterns and all).
pub fn job_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = JobConfig::parse(text);
    }
}

/// One threshold expression.
pub fn threshold(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::thresholds::parse(text);
    }
}

/// A replayer's report as the gRPC service receives it: decoded, then taken by a fleet
/// whose member it is (so its histograms are inflated, checked and merged).
pub fn report(data: &[u8]) {
    let Ok(mut report) = pb::StatsReport::decode(data) else { return };
    let fleet = Fleet::new(HashStrategy::RoundRobin, 64, Arc::new(Accounting::default()), Arc::default());
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let Ok(subscription) = fleet.join("fuzz", None, tx) else { return };
    for _ in 0..8 {
        let _ = fleet.reserve(None);
    }
    report.replayer_id = "fuzz".into();
    report.subscription = subscription;
    report.job_id.clear();
    let _ = fleet.intake().receive(&fleet, &report, |_| {});
    // Response comparison's counts are judged (noise decided) when read.
    let _ = fleet.intake().with_stats(|s| s.compared("*"));
    fleet.leave("fuzz", subscription, "fuzz");
}

/// A batch of records as a replayer receives it: split, and every record read.
pub fn batch(data: &[u8]) {
    let Ok(batch) = pb::RecordBatch::decode(data) else { return };
    if let Ok(records) = reprise_proto::batch::split(batch) {
        for r in &records {
            if let Ok(view) = r.view() {
                let _ = view.expected();
            }
        }
    }
}

/// A fuzz target: arbitrary bytes in, no panic, no hang.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fuzz/corpus/` name them.
pub const TARGETS: [(&str, Target); 6] = [
    ("analyzers", analyzers),
    ("har_file", har_file),
    ("job_file", job_file),
    ("threshold", threshold),
    ("report", report),
    ("batch", batch),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the seed corpus, and every input that once crashed a target, runs
    /// through its target without a panic.
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut ran = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("entry").path();
                target(&std::fs::read(&path).expect("read"));
                ran += 1;
            }
        }
        assert!(ran >= TARGETS.len() * 2, "each target has seeds: {ran} files");
    }

    /// The analyzers target's rewrites are a valid job, so the fuzzer runs them; a json
    /// seed comes out rewritten.
    #[test]
    fn the_analyzers_target_rewrites_what_it_parses() {
        let (shaping, acc) = shaping().expect("the rewrites parse");
        let line = br#"{"ts":1700000000000,"method":"POST","url":"/api/x?u=1","headers":{"b":"2"},"body":"{\"a\":[1,2],\"b\":0}"}"#;
        let cfg = AnalyzerConfig::default();
        let Parsed::Record(r) = Analyzer::build(&cfg).parse(&Bytes::from_static(line)) else {
            panic!("a record")
        };
        let r = shaping.apply(r, acc).expect("kept");
        assert_eq!(r.path, "/v2/x/api?q=1");
        let body = std::str::from_utf8(&r.body).expect("utf-8");
        assert_eq!(
            body, r#"{"a":[2],"-":[true],"x/y":"z"}"#,
            "/user/id has no parent; `-` names a field of an object"
        );
    }
}

#[cfg(test)]
mod seeds {
    use reprise_proto::stats::{EndpointStats, ErrorKind, OrderWait, Outcome, TotalStats};

    use super::*;

    /// The `report` and `batch` seeds are messages, generated here rather than written by
    /// hand; the corpus holds them as encoded. `REPRISE_WRITE_FUZZ_SEEDS=1 cargo test -p
    /// reprise-dispatcher generated_fuzz_seeds` writes them again after a wire change.
    #[test]
    fn generated_fuzz_seeds_are_in_the_corpus_as_the_wire_encodes_them_now() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let write = std::env::var_os("REPRISE_WRITE_FUZZ_SEEDS").is_some();
        let (mut e, mut t) = (EndpointStats::default(), TotalStats::default());
        for (i, status) in [(1u64, Some(200)), (2, Some(503)), (3, None)] {
            let o = Outcome {
                answer: status.map(Some).ok_or(ErrorKind::Timeout),
                latency_us: 100 * i,
                service_us: 90 * i,
                lag_us: i,
            };
            e.record(&o);
            t.record(&o);
        }
        let mut wait = OrderWait::default();
        wait.record(1_500, false);
        wait.record(200_000, true);
        let mut compare = reprise_proto::compare::EndpointCompare::default();
        let seen = |field| reprise_proto::compare::Seen { field, left: Some("1"), right: None };
        compare.record(&[seen("$.a[*].b"), seen("status")], &["$.a[*].b"], false);
        compare.record(&[seen("header:etag")], &[], true);
        let report = pb::StatsReport {
            replayer_id: "r".into(),
            seq: 1,
            completed_total: 3,
            endpoints: vec![e.to_wire(1)],
            total: Some(t.to_wire()),
            pending: 2,
            order_wait: Some(wait.to_wire()),
            compare: vec![compare.to_wire(1)],
            ..Default::default()
        };
        let ack = pb::StatsReport { completed_total: 5, ..Default::default() };
        let mut encoded = bytes::BytesMut::new();
        let headers = vec![(crate::record::Text::from("X-User"), Bytes::from_static(b"u1"))];
        let rec = reprise_proto::batch::RecordRef {
            due_offset_ns: 1_000_000,
            endpoint: 1,
            method: b"POST",
            path: b"/a?b=1",
            headers: &headers,
            body: &Bytes::from_static(b"{}"),
            host: b"h",
            order_key: 0,
            expected: &[],
        };
        rec.write_to(&mut encoded);
        // The second of an ordered job, with an order key, carrying a recorded answer.
        let expected = Answers::new(&["etag"], 16).encode(200, &headers, b"{\"a\":1}");
        reprise_proto::batch::RecordRef { order_key: 42, expected: &expected, ..rec }.write_to(&mut encoded);
        let batch = pb::RecordBatch { encoded: encoded.freeze(), count: 2 };
        let how = "run REPRISE_WRITE_FUZZ_SEEDS=1 cargo test -p reprise-dispatcher generated_fuzz_seeds";
        for (path, message) in [("report/stats", report), ("report/ack", ack)] {
            let path = root.join(path);
            if write {
                std::fs::write(&path, message.encode_to_vec()).expect("write");
            }
            let kept =
                pb::StatsReport::decode(std::fs::read(&path).expect("seed").as_slice()).expect("decodes");
            assert_eq!(kept, message, "{} is out of date: {how}", path.display());
        }
        let path = root.join("batch/two");
        if write {
            std::fs::write(&path, batch.encode_to_vec()).expect("write");
        }
        let kept = pb::RecordBatch::decode(std::fs::read(&path).expect("seed").as_slice()).expect("decodes");
        assert_eq!(kept, batch, "{} is out of date: {how}", path.display());
    }
}
