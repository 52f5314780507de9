//! Reports of separate runs as one (`reprise merge A.json B.json …`): shards run on their
//! own, or several runs a team wants one report of. Counts are added and histograms merged
//! from the encoded statistics each JSON report carries (`encoded`, the wire's messages),
//! never from percentiles: the merged p99 is the p99 of all requests, as if one dispatcher
//! had run them all. The thresholds are judged again on the merge.
//!
//! What is not a sum: the duration runs from the earliest start to the latest end (shards
//! run at the same time, so their requests per second add up); each second of the history
//! adds the runs' counts at the same wall-clock second, and its percentiles are the
//! largest of the runs' for that second (an upper bound: a second's histogram is not kept);
//! the state is the first run's that did not finish, the peak memory the largest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use reprise_proto::compare::EndpointCompare;
use reprise_proto::pb;
use reprise_proto::stats::{EndpointStats, OrderWait, TotalStats};
use serde::Deserialize;

use super::{Report, Snapshot, StatsReportCounts};
use crate::accounting::Counts;
use crate::config::{Baseline, CompareConfig, JobConfig};
use crate::control::{Control, JobState};
use crate::fetchers::progress::SourceStatus;
use crate::fleet::{FleetSnapshot, MemberStatus, Row};
use crate::job::PageCounts;
use crate::sinks::SinkCounts;
use crate::thresholds::{Gate, Threshold};

/// What a JSON report holds that a merge reads.
#[derive(Debug, Deserialize)]
pub struct RunFile {
    job: String,
    state: JobState,
    settings: Control,
    started_unix_us: u64,
    duration_s: f64,
    totals: TotalsFile,
    source: SourceStatus,
    total: EncodedFile,
    endpoints: Vec<EncodedFile>,
    replayers: Vec<MemberStatus>,
    reports: StatsReportCounts,
    thresholds: Vec<VerdictFile>,
    history: Vec<Row>,
    sinks: Vec<SinkCounts>,
    refused: BTreeMap<String, u64>,
    live_pages: PageCounts,
    aborted_by: Option<String>,
    peak_rss_bytes: Option<u64>,
    order_wait: Option<EncodedWait>,
    compare: Option<CompareFile>,
}

#[derive(Debug, Deserialize)]
struct TotalsFile {
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Debug, Deserialize)]
struct EncodedFile {
    endpoint: String,
    encoded: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EncodedWait {
    encoded: String,
}

#[derive(Debug, Deserialize)]
struct VerdictFile {
    endpoint: String,
    expression: String,
}

#[derive(Debug, Deserialize)]
struct CompareFile {
    baseline: String,
    endpoints: Vec<EncodedCompare>,
}

#[derive(Debug, Deserialize)]
struct EncodedCompare {
    endpoint: String,
    encoded: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{} is not a reprise JSON report ({source}); give files written by --report-json or GET /jobs/ID/report.json",
        path.display()
    )]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error(
        "{}: {part} carries no encoded statistics (a report of an older reprise, or a live page's); \
         merge reports written by --report-json of this version",
        path.display()
    )]
    NotEncoded { path: PathBuf, part: String },
    #[error("{}: {part}: {reason}", path.display())]
    Decode { path: PathBuf, part: String, reason: String },
    #[error("{}: threshold {expression:?} of {endpoint:?}: {reason}", path.display())]
    Threshold { path: PathBuf, endpoint: String, expression: String, reason: String },
    #[error("--threshold {flag:?}: {reason}; give EXPR for all traffic or \"ENDPOINT: EXPR\"")]
    Flag { flag: String, reason: String },
}

impl RunFile {
    pub fn load(path: &Path) -> Result<RunFile, MergeError> {
        let text =
            std::fs::read(path).map_err(|source| MergeError::Read { path: path.to_owned(), source })?;
        serde_json::from_slice(&text).map_err(|source| MergeError::Parse { path: path.to_owned(), source })
    }

    /// The thresholds the runs were judged by, as the gate of a merge that names none.
    fn gate(runs: &[(PathBuf, RunFile)]) -> Result<Gate, MergeError> {
        let mut gate = Gate::default();
        for (path, run) in runs {
            for v in &run.thresholds {
                let expr = crate::thresholds::parse(&v.expression).map_err(|e| MergeError::Threshold {
                    path: path.clone(),
                    endpoint: v.endpoint.clone(),
                    expression: v.expression.clone(),
                    reason: e.to_string(),
                })?;
                let t = Threshold { endpoint: v.endpoint.clone(), text: v.expression.clone(), expr };
                if !gate.thresholds.contains(&t) {
                    gate.thresholds.push(t);
                }
            }
        }
        Ok(gate)
    }
}

/// The statistics of every run, merged.
#[derive(Default)]
struct Merged {
    endpoints: BTreeMap<Arc<str>, EndpointStats>,
    total: TotalStats,
    order_wait: Option<OrderWait>,
    compare: Option<(Baseline, BTreeMap<Arc<str>, EndpointCompare>)>,
}

impl Merged {
    fn add(&mut self, path: &Path, run: &RunFile) -> Result<(), MergeError> {
        let bytes = |part: &str, text: Option<&String>| {
            let text =
                text.ok_or_else(|| MergeError::NotEncoded { path: path.to_owned(), part: part.to_owned() })?;
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| MergeError::Decode {
                path: path.to_owned(),
                part: part.to_owned(),
                reason: e.to_string(),
            })
        };
        let bad = |part: &str, reason: String| MergeError::Decode {
            path: path.to_owned(),
            part: part.to_owned(),
            reason,
        };
        let total = pb::TotalDelta::decode(&*bytes("the total", run.total.encoded.as_ref())?)
            .map_err(|e| bad("the total", e.to_string()))?;
        self.total.merge(&TotalStats::from_wire(&total).map_err(|e| bad("the total", e.to_string()))?);
        for e in &run.endpoints {
            let part = format!("endpoint {:?}", e.endpoint);
            let delta = pb::EndpointDelta::decode(&*bytes(&part, e.encoded.as_ref())?)
                .map_err(|err| bad(&part, err.to_string()))?;
            let stats = EndpointStats::from_wire(&delta).map_err(|err| bad(&part, err.to_string()))?;
            self.endpoints.entry(Arc::from(e.endpoint.as_str())).or_default().merge(&stats);
        }
        if let Some(w) = &run.order_wait {
            let wire = pb::OrderWait::decode(&*bytes("order_wait", Some(&w.encoded))?)
                .map_err(|e| bad("order_wait", e.to_string()))?;
            let wait = OrderWait::from_wire(&wire).map_err(|e| bad("order_wait", e.to_string()))?;
            self.order_wait.get_or_insert_with(OrderWait::default).merge(&wait);
        }
        if let Some(c) = &run.compare {
            let baseline = if c.baseline == "recorded" { Baseline::Recorded } else { Baseline::Live };
            let (_, by_endpoint) = self.compare.get_or_insert_with(|| (baseline, BTreeMap::new()));
            for e in &c.endpoints {
                let part = format!("compare of endpoint {:?}", e.endpoint);
                let wire = pb::CompareDelta::decode(&*bytes(&part, Some(&e.encoded))?)
                    .map_err(|err| bad(&part, err.to_string()))?;
                by_endpoint
                    .entry(Arc::from(e.endpoint.as_str()))
                    .or_default()
                    .merge(&EndpointCompare::from_wire(&wire));
            }
        }
        Ok(())
    }
}

/// The runs' reports as one, judged by the `thresholds` given (`--threshold`), or without
/// any by the thresholds the runs were judged by.
pub fn merge(runs: &[(PathBuf, RunFile)], thresholds: &[String]) -> Result<Report, MergeError> {
    let gate = if thresholds.is_empty() {
        RunFile::gate(runs)?
    } else {
        let parse = |flag: &String| {
            Threshold::from_flag(flag)
                .map_err(|e| MergeError::Flag { flag: flag.clone(), reason: e.to_string() })
        };
        Gate { thresholds: thresholds.iter().map(parse).collect::<Result<_, _>>()?, abort_on_fail: false }
    };
    let mut merged = Merged::default();
    for (path, run) in runs {
        merged.add(path, run)?;
    }
    let start_us = runs.iter().map(|(_, r)| r.started_unix_us).min().unwrap_or(0);
    let end_us = runs.iter().map(|(_, r)| r.started_unix_us + (r.duration_s * 1e6) as u64).max().unwrap_or(0);
    let mut config = JobConfig::default();
    config.proxy.ordered = merged.order_wait.is_some();
    let (baseline, compare) = merged.compare.unzip();
    config.compare = baseline.map(|baseline| CompareConfig { baseline, ..CompareConfig::default() });
    let mut counts = Counts::default();
    let mut source = SourceStatus::default();
    let mut reports = StatsReportCounts::default();
    let mut members = Vec::new();
    let mut sinks: BTreeMap<&'static str, SinkCounts> = BTreeMap::new();
    let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pages = PageCounts::default();
    for (_, run) in runs {
        counts.add(&run.totals.counts);
        source.add(&run.source);
        reports.received += run.reports.received;
        reports.lost += run.reports.lost;
        reports.duplicate += run.reports.duplicate;
        members.extend(run.replayers.iter().cloned());
        for s in &run.sinks {
            let mine =
                sinks.entry(s.name).or_insert_with(|| SinkCounts { name: s.name, ..SinkCounts::default() });
            mine.written += s.written;
            mine.dropped += s.dropped;
        }
        for (why, n) in &run.refused {
            *refused.entry(crate::refusals::Refusal::name_of(why)).or_default() += n;
        }
        pages.open += run.live_pages.open;
        pages.dropped += run.live_pages.dropped;
    }
    let fleet = FleetSnapshot {
        endpoints: merged.endpoints,
        total: merged.total,
        reports: reports.received,
        lost_reports: reports.lost,
        duplicate_reports: reports.duplicate,
        history: history(runs, start_us),
        order_wait: merged.order_wait.unwrap_or_default(),
        compare: compare.unwrap_or_default(),
        error_samples: BTreeMap::new(),
        members,
        in_flight: 0,
        counts,
    };
    let first = runs.first().map(|(_, r)| r);
    let mut names: Vec<&str> = runs.iter().map(|(_, r)| r.job.as_str()).collect();
    names.dedup();
    let snap = Snapshot {
        config: &config,
        gate: &gate,
        job: names.join(" + "),
        fleet,
        state: runs
            .iter()
            .map(|(_, r)| r.state)
            .find(|s| *s != JobState::Finished)
            .unwrap_or(JobState::Finished),
        settings: first
            .map_or(Control { speed: crate::config::Speed::Factor(1.0), rate: 1.0, paused: false }, |r| {
                r.settings
            }),
        started_unix: start_us as f64 / 1e6,
        elapsed: Duration::from_micros(end_us.saturating_sub(start_us)),
        progress: Duration::ZERO,
        source,
        sinks: sinks.into_values().collect(),
        refused,
        aborted_by: runs
            .iter()
            .find_map(|(p, r)| r.aborted_by.as_ref().map(|why| format!("{}: {why}", p.display()))),
        pages,
        shard: crate::shard::Shard::WHOLE,
        shards: Vec::new(),
    };
    let mut report = Report::from_snapshot(&snap);
    report.peak_rss_bytes = runs.iter().filter_map(|(_, r)| r.peak_rss_bytes).max();
    report.runtime_threads = None;
    report.merged_from = runs.iter().map(|(p, _)| p.display().to_string()).collect();
    Ok(report)
}

/// The runs' seconds at the same wall-clock second added up: counts summed, percentiles the
/// largest of the runs' (see the module's doc).
fn history(runs: &[(PathBuf, RunFile)], start_us: u64) -> Vec<Row> {
    let mut by_second: BTreeMap<u64, Row> = BTreeMap::new();
    for (_, run) in runs {
        let shift = (run.started_unix_us - start_us + 500_000) / 1_000_000;
        for row in &run.history {
            let second = row.second + shift;
            let Some(mine) = by_second.get_mut(&second) else {
                by_second.insert(second, Row { second, ..row.clone() });
                continue;
            };
            mine.requests += row.requests;
            mine.ok += row.ok;
            mine.failed += row.failed;
            mine.p50_ms = mine.p50_ms.max(row.p50_ms);
            mine.p90_ms = mine.p90_ms.max(row.p90_ms);
            mine.p95_ms = mine.p95_ms.max(row.p95_ms);
            mine.p99_ms = mine.p99_ms.max(row.p99_ms);
            mine.max_ms = mine.max_ms.max(row.max_ms);
            mine.lag_p99_ms = mine.lag_p99_ms.max(row.lag_p99_ms);
        }
    }
    by_second.into_values().collect()
}
