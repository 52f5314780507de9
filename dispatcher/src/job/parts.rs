//! A run's results read back from its JSON report, statistics decoded: a [`Part`] of a
//! larger whole. `reprise merge` reads parts from report files; the coordinator of a
//! sharded job receives them from its shards every second (`job::shards`), and
//! `results::merge` adds them to a snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use prost::Message as _;
use reprise_proto::compare::EndpointCompare;
use reprise_proto::pb;
use reprise_proto::stats::{EndpointStats, OrderWait, TotalStats};
use serde::Deserialize;

use super::PageCounts;
use crate::accounting::Counts;
use crate::config::Baseline;
use crate::control::{Control, JobState};
use crate::fetchers::progress::SourceStatus;
use crate::fleet::{MemberStatus, Row, StatsReportCounts};
use crate::sinks::SinkCounts;
use crate::thresholds::{Gate, Threshold};

/// What a JSON report holds that a merge reads.
#[derive(Debug, Deserialize)]
pub struct RunFile {
    pub job: String,
    pub state: JobState,
    pub settings: Control,
    pub started_unix_us: u64,
    pub duration_s: f64,
    pub totals: TotalsFile,
    pub source: SourceStatus,
    pub total: EncodedFile,
    pub endpoints: Vec<EncodedFile>,
    pub replayers: Vec<MemberStatus>,
    pub reports: StatsReportCounts,
    pub thresholds: Vec<VerdictFile>,
    pub history: Vec<Row>,
    pub sinks: Vec<SinkCounts>,
    pub refused: BTreeMap<String, u64>,
    pub live_pages: PageCounts,
    pub aborted_by: Option<String>,
    pub peak_rss_bytes: Option<u64>,
    pub order_wait: Option<EncodedWait>,
    pub compare: Option<CompareFile>,
}

#[derive(Debug, Deserialize)]
pub struct TotalsFile {
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Deserialize)]
pub struct EncodedFile {
    pub endpoint: String,
    pub encoded: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EncodedWait {
    pub encoded: String,
}

#[derive(Debug, Deserialize)]
pub struct VerdictFile {
    pub endpoint: String,
    pub expression: String,
}

#[derive(Debug, Deserialize)]
pub struct CompareFile {
    pub baseline: String,
    pub endpoints: Vec<EncodedCompare>,
}

#[derive(Debug, Deserialize)]
pub struct EncodedCompare {
    pub endpoint: String,
    pub encoded: String,
}

/// A report file that cannot be read (`reprise merge`, `reprise diff`).
#[derive(Debug, thiserror::Error)]
pub enum ReportFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{} is not a reprise JSON report ({source}); give files written by --report-json or GET /jobs/ID/report.json",
        path.display()
    )]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// Reads the JSON report at `path` as `T` (the parts of it a reader needs).
pub fn read_report<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportFileError> {
    let text =
        std::fs::read(path).map_err(|source| ReportFileError::Read { path: path.to_owned(), source })?;
    serde_json::from_slice(&text).map_err(|source| ReportFileError::Parse { path: path.to_owned(), source })
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    File(#[from] ReportFileError),
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
        Ok(read_report(path)?)
    }

    /// The thresholds the runs were judged by, as the gate of a merge that names none.
    pub fn gate(runs: &[(PathBuf, RunFile)]) -> Result<Gate, MergeError> {
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

/// A run's statistics, decoded from its report.
#[derive(Debug, Default)]
pub struct Decoded {
    pub endpoints: BTreeMap<Arc<str>, EndpointStats>,
    pub total: TotalStats,
    pub order_wait: Option<OrderWait>,
    pub compare: Option<(Baseline, BTreeMap<Arc<str>, EndpointCompare>)>,
}

/// A run read back: its report and its statistics decoded.
#[derive(Debug)]
pub struct Part {
    pub run: RunFile,
    pub stats: Decoded,
}

impl Part {
    /// Decodes `run`'s statistics; `path` names where it came from in errors.
    pub fn of(path: &Path, run: RunFile) -> Result<Part, MergeError> {
        let mut stats = Decoded::default();
        stats.add(path, &run)?;
        Ok(Part { run, stats })
    }
}

impl Decoded {
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
