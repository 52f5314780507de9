//! Response comparison in the report (`[compare]`, issue 13): per endpoint compared, how
//! many requests answered differently from the baseline (noise cancelled), the diff rate,
//! the fields that differed most with example pairs, and the fields found noisy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use reprise_proto::compare::EndpointCompare;

use crate::config::Baseline;
use crate::fleet::Window;
use serde::Serialize;

/// Fields listed per endpoint in the reports, most often differing first.
const FIELDS_SHOWN: usize = 10;
/// Endpoints with differences listed in the terminal summary.
const ENDPOINTS_SHOWN: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// "live": primary and secondary answered beside the candidate; "recorded": the
    /// recording's answers.
    pub baseline: &'static str,
    /// All endpoints together.
    pub compared: u64,
    pub differing: u64,
    pub diff_rate: f64,
    /// Requests whose bodies were longer than `max_body` (compared by length and hash).
    pub over_max_body: u64,
    /// Requests not compared: the candidate, the primary or the secondary did not answer
    /// (live); the candidate did not answer, or the recording held no answer (recorded).
    pub uncompared: u64,
    /// Every endpoint compared, the highest diff rate first.
    pub endpoints: Vec<CompareEndpoint>,
    /// `[compare] window`, s, and each window closed (all traffic), oldest first: when the
    /// candidate started or stopped differing. Absent in a merged report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareEndpoint {
    pub endpoint: String,
    pub compared: u64,
    pub differing: u64,
    pub diff_rate: f64,
    pub over_max_body: u64,
    pub uncompared: u64,
    /// Fields whose differences count, most often first (at most 10).
    pub fields: Vec<CompareField>,
    /// Fields found noisy (they differ between primary and secondary about as often as
    /// between primary and candidate): not counted.
    pub noisy: Vec<CompareField>,
    /// Everything compared of the endpoint, encoded (the wire's `CompareDelta`), so that
    /// `reprise merge` judges noise and diff rates on the merged counts.
    pub encoded: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareField {
    pub field: String,
    /// Requests where the candidate's value differed from the primary's.
    pub differing: u64,
    /// Requests where the secondary's differed from the primary's.
    pub noise: u64,
    /// Examples: the primary's value and the candidate's (null: missing there).
    pub samples: Vec<SamplePair>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplePair {
    pub baseline: Option<String>,
    pub candidate: Option<String>,
}

impl CompareReport {
    pub fn of(baseline: Baseline, by_endpoint: &BTreeMap<Arc<str>, EndpointCompare>) -> CompareReport {
        let mut endpoints: Vec<CompareEndpoint> = by_endpoint
            .iter()
            .map(|(name, c)| {
                let s = c.summary();
                let field = |f: &reprise_proto::compare::FieldSummary| CompareField {
                    field: f.field.clone(),
                    differing: f.counts.differing,
                    noise: f.counts.noise,
                    samples: f
                        .counts
                        .samples
                        .iter()
                        .map(|p| SamplePair { baseline: p.left.clone(), candidate: p.right.clone() })
                        .collect(),
                };
                CompareEndpoint {
                    endpoint: name.to_string(),
                    compared: s.compared,
                    differing: s.differing,
                    diff_rate: s.diff_rate,
                    over_max_body: s.over_max_body,
                    uncompared: s.uncompared,
                    fields: s.fields.iter().filter(|f| !f.noisy).take(FIELDS_SHOWN).map(field).collect(),
                    noisy: s.fields.iter().filter(|f| f.noisy).take(FIELDS_SHOWN).map(field).collect(),
                    encoded: super::encoded(&c.to_wire(0)),
                }
            })
            .collect();
        endpoints
            .sort_by(|a, b| b.diff_rate.total_cmp(&a.diff_rate).then_with(|| a.endpoint.cmp(&b.endpoint)));
        let compared = endpoints.iter().map(|e| e.compared).sum();
        let differing = endpoints.iter().map(|e| e.differing).sum();
        CompareReport {
            baseline: match baseline {
                Baseline::Live => "live",
                Baseline::Recorded => "recorded",
            },
            compared,
            differing,
            diff_rate: if compared == 0 { 0.0 } else { differing as f64 / compared as f64 },
            over_max_body: endpoints.iter().map(|e| e.over_max_body).sum(),
            uncompared: endpoints.iter().map(|e| e.uncompared).sum(),
            endpoints,
            windows: Vec::new(),
            window_s: None,
        }
    }

    /// What the candidate was compared to, as the summaries say it.
    pub fn compared_to(&self) -> &'static str {
        if self.baseline == "recorded" { "the recording" } else { "the primary" }
    }

    /// The diff rate of `endpoint` ("*" for all traffic), when some of it was compared.
    pub fn diff_rate_of(&self, endpoint: &str) -> Option<f64> {
        if endpoint == "*" {
            return (self.compared > 0).then_some(self.diff_rate);
        }
        self.endpoints.iter().find(|e| e.endpoint == endpoint && e.compared > 0).map(|e| e.diff_rate)
    }

    /// The terminal's summary: a line for all traffic, then each endpoint with differences
    /// and its top fields.
    pub fn lines(&self) -> String {
        let mut out = format!(
            "responses compared to {}: {} compared, {} differing ({:.2} %), {} over max_body, {} not compared ({})\n",
            self.compared_to(),
            self.compared,
            self.differing,
            self.diff_rate * 100.0,
            self.over_max_body,
            self.uncompared,
            if self.baseline == "recorded" {
                "no answer recorded, or none from the candidate"
            } else {
                "no answer from one of the three"
            }
        );
        let differing: Vec<&CompareEndpoint> = self.endpoints.iter().filter(|e| e.differing > 0).collect();
        for e in differing.iter().take(ENDPOINTS_SHOWN) {
            let fields: Vec<String> =
                e.fields.iter().take(3).map(|f| format!("{} ({})", f.field, f.differing)).collect();
            let _ = writeln!(
                out,
                "  {}: {} of {} differ ({:.2} %): {}",
                e.endpoint,
                e.differing,
                e.compared,
                e.diff_rate * 100.0,
                fields.join(", ")
            );
        }
        if differing.len() > ENDPOINTS_SHOWN {
            let _ = writeln!(
                out,
                "  … and {} more endpoints that differ: --report-json lists them",
                differing.len() - ENDPOINTS_SHOWN
            );
        }
        let mut noisy: Vec<&str> =
            self.endpoints.iter().flat_map(|e| e.noisy.iter().map(|f| f.field.as_str())).collect();
        noisy.sort_unstable();
        noisy.dedup();
        if !noisy.is_empty() {
            let _ = writeln!(out, "  noisy fields, not counted: {}", noisy.join(", "));
        }
        out
    }
}
