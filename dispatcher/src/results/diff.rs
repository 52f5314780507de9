//! Run against run: two JSON reports side by side per endpoint (`reprise diff BASE
//! CANDIDATE`, and the live page's history). Each endpoint's requests, error rate, p50 and
//! p99 in both runs with the change in per cent, and the candidate's diff rate under
//! `[compare]`; limits on the changes (`--max-p99-increase 10%`) make it a CI gate.
//!
//! Percentiles are compared, not merged: each run's were read off its own merged
//! histograms, and "p99 rose 12 %" is a statement about two distributions, not an average.
//! Endpoints with fewer requests than `min_requests` in either run are shown but not judged:
//! the p99 of a handful of requests is its maximum, and moves by chance.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a report file holds that a diff reads (the rest of the report is ignored).
#[derive(Debug, Deserialize)]
pub struct ReportFile {
    pub job: String,
    #[serde(default)]
    pub started_unix_us: u64,
    pub total: EndpointFigures,
    pub endpoints: Vec<EndpointFigures>,
    #[serde(default)]
    pub compare: Option<CompareFigures>,
}

#[derive(Debug, Deserialize)]
pub struct EndpointFigures {
    pub endpoint: String,
    pub requests: u64,
    pub failed: u64,
    pub latency_ms: LatencyFigures,
}

#[derive(Debug, Deserialize)]
pub struct LatencyFigures {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Deserialize)]
pub struct CompareFigures {
    pub diff_rate: f64,
    pub endpoints: Vec<CompareEndpointFigures>,
}

#[derive(Debug, Deserialize)]
pub struct CompareEndpointFigures {
    pub endpoint: String,
    pub diff_rate: f64,
}

/// A report that cannot be read.
pub type DiffError = crate::job::parts::ReportFileError;

impl ReportFile {
    pub fn load(path: &Path) -> Result<ReportFile, DiffError> {
        crate::job::parts::read_report(path)
    }
}

/// How much worse the candidate may be; `None` is not judged.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Limits {
    /// Per cent of the base's p99.
    pub p99_increase_pct: Option<f64>,
    /// Per cent of the base's p50.
    pub p50_increase_pct: Option<f64>,
    /// Percentage points of error rate.
    pub error_rate_increase_pp: Option<f64>,
    /// Endpoints with fewer requests in either run are not judged (the total always is).
    pub min_requests: u64,
}

/// One run's figures for an endpoint.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Side {
    pub requests: u64,
    /// Failed requests over requests, per cent.
    pub error_rate_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Side {
    fn of(e: &EndpointFigures) -> Side {
        let error_rate_pct = if e.requests == 0 { 0.0 } else { e.failed as f64 * 100.0 / e.requests as f64 };
        Side { requests: e.requests, error_rate_pct, p50_ms: e.latency_ms.p50, p99_ms: e.latency_ms.p99 }
    }
}

/// An endpoint in both runs, or in one (the other side is `None`).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub endpoint: String,
    pub base: Option<Side>,
    pub candidate: Option<Side>,
    /// Change of p50 and p99, per cent of the base's (None when the base's is 0 or absent).
    pub p50_change_pct: Option<f64>,
    pub p99_change_pct: Option<f64>,
    /// Change of the error rate, percentage points.
    pub error_rate_change_pp: Option<f64>,
    /// The candidate's diff rate under `[compare]`, per cent.
    pub diff_rate_pct: Option<f64>,
    /// The limits this row crosses, as sentences.
    pub crossed: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunDiff {
    pub base: String,
    pub candidate: String,
    pub limits: Limits,
    /// All endpoints together first, then the candidate's busiest first; endpoints only in
    /// the base last.
    pub rows: Vec<Row>,
    /// True when no limit is crossed.
    pub passed: bool,
}

fn change_pct(base: f64, candidate: f64) -> Option<f64> {
    (base > 0.0).then(|| (candidate - base) * 100.0 / base)
}

impl RunDiff {
    /// Puts `candidate` beside `base`; `names` say what each is (file names, job ids).
    pub fn of(base: &ReportFile, candidate: &ReportFile, names: (&str, &str), limits: Limits) -> RunDiff {
        let diff_rates: BTreeMap<&str, f64> = candidate
            .compare
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| (e.endpoint.as_str(), e.diff_rate * 100.0)))
            .collect();
        let base_by: BTreeMap<&str, &EndpointFigures> =
            base.endpoints.iter().map(|e| (e.endpoint.as_str(), e)).collect();
        let mut cand: Vec<&EndpointFigures> = candidate.endpoints.iter().collect();
        cand.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.endpoint.cmp(&b.endpoint)));
        let mut rows = vec![Row::of(
            "*",
            Some(&base.total),
            Some(&candidate.total),
            candidate.compare.as_ref().map(|c| c.diff_rate * 100.0),
            &limits,
            true,
        )];
        for c in &cand {
            let b = base_by.get(c.endpoint.as_str()).copied();
            let rate = diff_rates.get(c.endpoint.as_str()).copied();
            rows.push(Row::of(&c.endpoint, b, Some(c), rate, &limits, false));
        }
        let in_candidate: std::collections::BTreeSet<&str> =
            candidate.endpoints.iter().map(|e| e.endpoint.as_str()).collect();
        for b in base.endpoints.iter().filter(|b| !in_candidate.contains(b.endpoint.as_str())) {
            rows.push(Row::of(&b.endpoint, Some(b), None, None, &limits, false));
        }
        let passed = rows.iter().all(|r| r.crossed.is_empty());
        RunDiff { base: names.0.to_owned(), candidate: names.1.to_owned(), limits, rows, passed }
    }

    /// The side-by-side table, then each crossed limit on a line of its own.
    pub fn table(&self) -> String {
        let mut out = format!("base {} → candidate {}\n", self.base, self.candidate);
        let width = self.rows.iter().map(|r| r.endpoint.len()).max().unwrap_or(8).clamp(8, 60);
        let with_diff = self.rows.iter().any(|r| r.diff_rate_pct.is_some());
        let _ = write!(
            out,
            "{:<width$} {:>21} {:>17} {:>26} {:>26}",
            "endpoint", "requests", "errors %", "p50 ms", "p99 ms"
        );
        out.push_str(if with_diff { "  diff %\n" } else { "\n" });
        for r in &self.rows {
            let name = if r.endpoint == "*" { "total" } else { r.endpoint.as_str() };
            let pair = |f: &dyn Fn(&Side) -> String| {
                let side = |s: Option<Side>| s.map_or_else(|| "-".to_owned(), |s| f(&s));
                format!("{} → {}", side(r.base), side(r.candidate))
            };
            let pct = |c: Option<f64>| c.map_or_else(String::new, |c| format!(" ({c:+.1}%)"));
            let _ = write!(
                out,
                "{name:<width$} {:>21} {:>17} {:>26} {:>26}",
                pair(&|s| s.requests.to_string()),
                pair(&|s| format!("{:.2}", s.error_rate_pct)),
                format!("{}{}", pair(&|s| format!("{:.2}", s.p50_ms)), pct(r.p50_change_pct)),
                format!("{}{}", pair(&|s| format!("{:.2}", s.p99_ms)), pct(r.p99_change_pct)),
            );
            if with_diff {
                let _ = write!(
                    out,
                    "  {}",
                    r.diff_rate_pct.map_or_else(|| "-".to_owned(), |d| format!("{d:.2}"))
                );
            }
            out.push_str(if r.crossed.is_empty() { "\n" } else { "  !\n" });
        }
        for r in &self.rows {
            for why in &r.crossed {
                let name = if r.endpoint == "*" { "total" } else { r.endpoint.as_str() };
                let _ = writeln!(out, "FAIL {name}: {why}");
            }
        }
        out
    }
}

impl Row {
    fn of(
        endpoint: &str,
        base: Option<&EndpointFigures>,
        candidate: Option<&EndpointFigures>,
        diff_rate_pct: Option<f64>,
        limits: &Limits,
        always_judged: bool,
    ) -> Row {
        let (base, candidate) = (base.map(Side::of), candidate.map(Side::of));
        let both = base.zip(candidate);
        let p50_change_pct = both.and_then(|(b, c)| change_pct(b.p50_ms, c.p50_ms));
        let p99_change_pct = both.and_then(|(b, c)| change_pct(b.p99_ms, c.p99_ms));
        let error_rate_change_pp = both.map(|(b, c)| c.error_rate_pct - b.error_rate_pct);
        let judged = both
            .is_some_and(|(b, c)| always_judged || b.requests.min(c.requests) >= limits.min_requests.max(1));
        let mut crossed = Vec::new();
        if judged {
            let mut check = |what: &str, change: Option<f64>, limit: Option<f64>, unit: &str| {
                if let (Some(change), Some(limit)) = (change, limit)
                    && change > limit
                {
                    crossed.push(format!("{what} rose {change:.1}{unit} (limit {limit}{unit})"));
                }
            };
            check("p99", p99_change_pct, limits.p99_increase_pct, "%");
            check("p50", p50_change_pct, limits.p50_increase_pct, "%");
            check("error rate", error_rate_change_pp, limits.error_rate_increase_pp, " points");
        }
        Row {
            endpoint: endpoint.to_owned(),
            base,
            candidate,
            p50_change_pct,
            p99_change_pct,
            error_rate_change_pp,
            diff_rate_pct,
            crossed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(job: &str, endpoints: &[(&str, u64, u64, f64, f64)]) -> ReportFile {
        let ep = |&(name, requests, failed, p50, p99): &(&str, u64, u64, f64, f64)| EndpointFigures {
            endpoint: name.to_owned(),
            requests,
            failed,
            latency_ms: LatencyFigures { p50, p99 },
        };
        let requests = endpoints.iter().map(|e| e.1).sum();
        let failed = endpoints.iter().map(|e| e.2).sum();
        let p99 = endpoints.iter().map(|e| e.4).fold(0.0, f64::max);
        ReportFile {
            job: job.to_owned(),
            started_unix_us: 0,
            total: ep(&("*", requests, failed, 1.0, p99)),
            endpoints: endpoints.iter().map(ep).collect(),
            compare: None,
        }
    }

    #[test]
    fn a_p99_increase_past_the_limit_is_flagged_where_it_happened() {
        let base = report("a", &[("GET /a", 100, 0, 1.0, 10.0), ("GET /b", 100, 1, 1.0, 20.0)]);
        let cand = report("b", &[("GET /a", 100, 0, 1.0, 10.5), ("GET /b", 120, 1, 1.0, 30.0)]);
        let limits = Limits { p99_increase_pct: Some(10.0), min_requests: 20, ..Limits::default() };
        let d = RunDiff::of(&base, &cand, ("a.json", "b.json"), limits);
        assert!(!d.passed);
        assert_eq!(d.rows[0].endpoint, "*");
        assert_eq!(d.rows[1].endpoint, "GET /b", "the candidate's busiest first");
        assert_eq!(d.rows[1].p99_change_pct, Some(50.0));
        assert_eq!(d.rows[1].crossed, vec!["p99 rose 50.0% (limit 10%)".to_owned()]);
        assert!(d.rows[2].crossed.is_empty(), "GET /a rose 5 %");
        assert!(d.rows[0].crossed[0].contains("50.0%"), "the total's p99 rose from 20 to 30 ms");
        let table = d.table();
        assert!(table.contains("FAIL GET /b: p99 rose 50.0% (limit 10%)"), "{table}");
        assert!(table.contains("20.00 → 30.00 (+50.0%)"), "{table}");
    }

    #[test]
    fn small_endpoints_and_one_sided_ones_are_shown_not_judged() {
        let base = report("a", &[("GET /a", 1000, 0, 1.0, 10.0), ("GET /gone", 5, 0, 1.0, 1.0)]);
        let cand = report("b", &[("GET /a", 1000, 10, 1.0, 10.0), ("GET /new", 5, 5, 1.0, 99.0)]);
        let limits = Limits {
            p99_increase_pct: Some(10.0),
            error_rate_increase_pp: Some(0.5),
            min_requests: 20,
            ..Limits::default()
        };
        let d = RunDiff::of(&base, &cand, ("a", "b"), limits);
        let names: Vec<&str> = d.rows.iter().map(|r| r.endpoint.as_str()).collect();
        assert_eq!(names, ["*", "GET /a", "GET /new", "GET /gone"]);
        assert_eq!(d.rows[1].crossed, vec!["error rate rose 1.0 points (limit 0.5 points)".to_owned()]);
        assert!(d.rows[2].crossed.is_empty() && d.rows[2].base.is_none());
        assert!(d.rows[3].candidate.is_none());
        let lenient = Limits { error_rate_increase_pp: Some(5.0), ..limits };
        assert!(RunDiff::of(&base, &cand, ("a", "b"), lenient).rows[1].crossed.is_empty());
    }
}
