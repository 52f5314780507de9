//! What the live page shows each second ([`Frame`]): the report of a snapshot (no
//! history) cut to what a screen holds — the busiest endpoints with p50/p95/p99 read off
//! their merged histograms, errors by kind with the endpoints they hit most and the latest
//! cause a replayer logged, the malformed
//! input logged (secrets redacted), the fleet, the accounting and the source. The per-second
//! rows for the charts travel beside it ([`super::merge::live_rows`]: a coordinator's with
//! its shards' seconds added), each sent once to each page.
//!
//! A frame is made once a second at most, however many pages are open ([`FrameCache`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reprise_proto::stats::EndpointStats;
use serde::Serialize;
use tokio::time::Instant;

use super::{EndpointReport, Report, Snapshot, Totals};
use crate::accounting::InputSample;
use crate::control::{Control, JobState};
use crate::fetchers::progress::SourceStatus;
use crate::fleet::{ErrorSample, MemberStatus, Window};
use crate::job::Job;
use crate::thresholds::{Span, Verdict};

/// Endpoint rows a frame carries at most, the busiest; the reports list them all.
const ENDPOINTS_SHOWN: usize = 200;
/// Endpoints named under each error kind.
const ENDPOINTS_PER_ERROR: usize = 3;

#[derive(Debug, Serialize)]
pub struct Frame {
    pub job: String,
    pub state: JobState,
    pub settings: Control,
    pub started_unix_us: u64,
    pub elapsed_s: f64,
    /// Recorded time replayed so far, s (against `elapsed_s`: how fast the replay goes).
    pub progress_s: f64,
    pub in_flight: u64,
    pub totals: Totals,
    /// Both identities with their figures, as the terminal prints them.
    pub accounting: String,
    pub source: SourceStatus,
    pub total: LiveEndpoint,
    /// The busiest first, at most `ENDPOINTS_SHOWN`.
    pub endpoints: Vec<LiveEndpoint>,
    /// Endpoints in all (more than `endpoints` holds when there are many).
    pub endpoint_count: usize,
    /// Requests that got no answer (or a gRPC error), by kind, the most frequent first.
    pub errors: Vec<ErrorKind>,
    /// Malformed input, the first few of each reason, secrets redacted.
    pub input_samples: Vec<InputSample>,
    pub replayers: Vec<MemberStatus>,
    pub thresholds: Vec<Verdict>,
    pub thresholds_passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_by: Option<String>,
    /// `[compare]`: all traffic's diff rate (per-endpoint rates are in `endpoints`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareTotal>,
    pub refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct LiveEndpoint {
    pub endpoint: String,
    pub requests: u64,
    pub failed: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub lag_p99_ms: f64,
    /// Responses by class ("2xx" …).
    pub status_class: BTreeMap<String, u64>,
    /// Under `[compare]`: the share of its compared answers that differed, over the job
    /// and over the last window closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_diff_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ErrorKind {
    pub kind: String,
    pub count: u64,
    /// Where it happened most: (endpoint, count).
    pub endpoints: Vec<(String, u64)>,
    /// The latest cause a replayer logged for it, as the network stack words it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<ErrorSample>,
}

#[derive(Debug, Serialize)]
pub struct CompareTotal {
    pub baseline: &'static str,
    pub compared: u64,
    pub differing: u64,
    pub diff_rate: f64,
    /// `[compare] window`, s, and the last windows closed (all traffic), oldest first: the
    /// chart of what the candidate answers over time.
    pub window_s: u64,
    pub windows: Vec<Window>,
}

impl LiveEndpoint {
    fn of(e: &EndpointReport, diff_rate: Option<f64>, window_diff_rate: Option<f64>) -> LiveEndpoint {
        let l = &e.latency_ms;
        LiveEndpoint {
            endpoint: e.endpoint.clone(),
            requests: e.requests,
            failed: e.failed,
            rps: e.rps,
            p50_ms: l.p50,
            p95_ms: l.p95,
            p99_ms: l.p99,
            max_ms: l.max,
            lag_p99_ms: e.schedule_lag_ms.p99,
            status_class: e.status_class.clone(),
            diff_rate,
            window_diff_rate,
        }
    }
}

impl Frame {
    pub fn of(job: &Job) -> Frame {
        let snap = Snapshot::of(job, false);
        let in_flight = snap.fleet.in_flight;
        let progress_s = snap.progress.as_secs_f64();
        let errors =
            errors_by_kind(&snap.fleet.total.errors, &snap.fleet.endpoints, &snap.fleet.error_samples);
        let report = Report::of_busiest(&snap, ENDPOINTS_SHOWN);
        let diff_rate = |name: &str| report.compare.as_ref().and_then(|c| c.diff_rate_of(name));
        let window = |name: &str| {
            snap.fleet.compared_in(name, Span::Window).map(|(n, differing)| differing as f64 / n as f64)
        };
        let endpoints = report
            .endpoints
            .iter()
            .map(|e| LiveEndpoint::of(e, diff_rate(&e.endpoint), window(&e.endpoint)))
            .collect();
        Frame {
            job: report.job.clone(),
            state: report.state,
            settings: report.settings,
            started_unix_us: report.started_unix_us,
            elapsed_s: report.duration_s,
            progress_s,
            in_flight,
            accounting: report.accounting_line_as(!report.state.is_over()),
            totals: report.totals.clone(),
            source: report.source.clone(),
            total: LiveEndpoint::of(&report.total, diff_rate("*"), window("*")),
            endpoints,
            endpoint_count: snap.fleet.endpoints.len(),
            errors,
            input_samples: job.accounting().input_samples(),
            replayers: report.replayers.clone(),
            thresholds: report.thresholds.clone(),
            thresholds_passed: report.thresholds_passed,
            aborted_by: report.aborted_by.clone(),
            compare: report.compare.as_ref().map(|c| CompareTotal {
                baseline: c.baseline,
                compared: c.compared,
                differing: c.differing,
                diff_rate: c.diff_rate,
                window_s: snap.fleet.window_length.as_secs(),
                windows: snap.fleet.windows.clone(),
            }),
            refused: report.refused.clone(),
        }
    }
}

/// Each error kind of all traffic with the endpoints it hit most.
fn errors_by_kind(
    total: &BTreeMap<String, u64>,
    endpoints: &BTreeMap<Arc<str>, EndpointStats>,
    samples: &BTreeMap<String, ErrorSample>,
) -> Vec<ErrorKind> {
    let mut kinds: Vec<ErrorKind> = total
        .iter()
        .map(|(kind, &count)| {
            let mut hit: Vec<(String, u64)> = endpoints
                .iter()
                .filter_map(|(name, e)| e.errors.get(kind).map(|&n| (name.to_string(), n)))
                .collect();
            hit.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            hit.truncate(ENDPOINTS_PER_ERROR);
            ErrorKind { kind: kind.clone(), count, endpoints: hit, sample: samples.get(kind).cloned() }
        })
        .collect();
    kinds.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    kinds
}

/// How old a frame may be and still be sent (a little under the pages' second, so each
/// tick of a page gets a fresh one).
const FRAME_TTL: Duration = Duration::from_millis(900);

/// The last frame made, as JSON, shared by every open page.
#[derive(Debug, Default)]
pub struct FrameCache {
    /// When it was made, of which job (a standing dispatcher runs one after another).
    last: Mutex<Option<(Instant, String, Arc<str>)>>,
}

impl FrameCache {
    /// The job's frame as JSON, made now unless one younger than `FRAME_TTL` exists.
    pub fn get(&self, job: &Job) -> Arc<str> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, of, json)) = &*last
            && at.elapsed() < FRAME_TTL
            && *of == job.id()
        {
            return Arc::clone(json);
        }
        let started = (Instant::now(), thread_cpu());
        let json: Arc<str> =
            serde_json::to_string(&Frame::of(job)).unwrap_or_else(|_| "{}".to_owned()).into();
        // What a page costs the dispatcher (scripts/bench (p) reads it): the CPU of this
        // thread, which made the frame without yielding, and the time it took.
        tracing::debug!(
            cpu_us = thread_cpu().saturating_sub(started.1).as_micros() as u64,
            took_us = started.0.elapsed().as_micros() as u64,
            bytes = json.len(),
            "live frame made"
        );
        *last = Some((Instant::now(), job.id().to_owned(), Arc::clone(&json)));
        json
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}
