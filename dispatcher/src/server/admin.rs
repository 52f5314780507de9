//! The admin HTTP API: GET /healthz, GET /metrics (Prometheus), GET /status and GET /report (the current merged report:
//! state, replayers, accounting, results so far, as `--report-json` writes it at the end),
//! POST /job/start (start without waiting for min_replayers), POST /job/stop, POST
//! /job/config (`{"speed": 2, "rate": 1.5}` or `{"qps": 500}`: a pace and/or a rate;
//! applied within a slot, the schedule continuing from the last record released), POST /job/pause, POST /job/resume;
//! GET /report.html (the HTML report so far) and POST /shutdown (a dispatcher serving after
//! its job, `--serve-forever`, exits with the job's code: how a CI step that has copied the
//! reports out ends it).
//!
//! A standing dispatcher ([`super::station`]) also takes `POST /jobs` (a job file; 201 with
//! its entry, or 422 with every problem), lists them at `GET /jobs` and serves a finished
//! job's kept reports at `GET /jobs/{id}/report.json` and `.html`, two of them side by side
//! at `GET /jobs/{base}/diff/{candidate}`. The job routes act on
//! the job running now (or the last one); before the first, they answer 409.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use serde::Deserialize;

use super::station::{Refused, Station};
use crate::config::Speed;
use crate::job::Job;
use crate::results::diff::{Limits as DiffLimits, ReportFile, RunDiff};
use crate::results::{Report, Snapshot, metrics};

pub(super) fn router(station: Arc<Station>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/report", get(status))
        .route("/report.html", get(report_html))
        .route("/shutdown", post(shutdown))
        .route("/metrics", get(metrics))
        .route("/job/start", post(start))
        .route("/job/stop", post(stop))
        .route("/job/config", post(config))
        .route("/job/pause", post(pause))
        .route("/job/resume", post(resume))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/{id}/{file}", get(kept_report))
        .route("/jobs/{base}/diff/{candidate}", get(diff))
        .with_state(station)
}

/// An answer that is an error: its status and what to do about it, as `{"error": …}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The job now, or 409 before the first.
fn current(station: &Station) -> Result<Arc<Job>, Failure> {
    station.current().ok_or_else(|| {
        let error = "no job has run on this dispatcher yet: submit one with POST /jobs";
        Failure(StatusCode::CONFLICT, error.to_owned())
    })
}

async fn status(State(station): State<Arc<Station>>) -> Response {
    match station.current() {
        Some(job) => Json(Report::of(&job)).into_response(),
        None => Json(json!({"state": "idle", "jobs": station.jobs()})).into_response(),
    }
}

async fn report_html(State(station): State<Arc<Station>>) -> Response {
    match current(&station) {
        Ok(job) => axum::response::Html(crate::results::html::render(&Report::of(&job))).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn shutdown(State(station): State<Arc<Station>>) -> (StatusCode, Json<Value>) {
    station.request_exit();
    let state = station.current().map(|j| json!(j.state())).unwrap_or(json!("idle"));
    (StatusCode::ACCEPTED, Json(json!({ "state": state })))
}

async fn metrics(State(station): State<Arc<Station>>) -> Response {
    let text = match station.current() {
        Some(job) => metrics::render(&Snapshot::of(&job, false)),
        None => "# no job has run on this dispatcher yet\n".to_owned(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn start(State(station): State<Arc<Station>>) -> Response {
    let job = match current(&station) {
        Ok(j) => j,
        Err(f) => return f.into_response(),
    };
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"}))).into_response();
    }
    job.request_start();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()}))).into_response()
}

/// Body of POST /job/config: either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    speed: Option<Speed>,
    /// Requests a second (see `[job] qps`); replaces the speed.
    qps: Option<f64>,
    rate: Option<f64>,
}

async fn config(State(station): State<Arc<Station>>, Json(change): Json<ConfigChange>) -> Response {
    let job = match current(&station) {
        Ok(j) => j,
        Err(f) => return f.into_response(),
    };
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"}))).into_response();
    }
    let pace = match (change.speed, change.qps) {
        (Some(_), Some(_)) => {
            let error = "give speed or qps, not both: each sets the pace";
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
        }
        (speed, qps) => speed.or(qps.map(Speed::Qps)),
    };
    match job.set_config(pace, change.rate) {
        Ok(control) => (StatusCode::OK, Json(json!(control))).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn pause(State(station): State<Arc<Station>>) -> Response {
    paused(&station, true)
}

async fn resume(State(station): State<Arc<Station>>) -> Response {
    paused(&station, false)
}

fn paused(station: &Station, paused: bool) -> Response {
    let job = match current(station) {
        Ok(j) => j,
        Err(f) => return f.into_response(),
    };
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"}))).into_response();
    }
    (StatusCode::OK, Json(json!(job.set_paused(paused)))).into_response()
}

async fn stop(State(station): State<Arc<Station>>) -> Response {
    let job = match current(&station) {
        Ok(j) => j,
        Err(f) => return f.into_response(),
    };
    job.request_stop();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()}))).into_response()
}

async fn jobs(State(station): State<Arc<Station>>) -> Json<Value> {
    Json(json!({ "standing": station.is_standing(), "jobs": station.jobs() }))
}

/// POST /jobs: the body is a job file (TOML). Relative paths in it are relative to the
/// dispatcher's working directory.
async fn submit(State(station): State<Arc<Station>>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        let error = "the body must be a job file (TOML, UTF-8)";
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": error, "problems": [] })))
            .into_response();
    };
    let base = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    match station.submit(text, &base) {
        Ok(entry) => (StatusCode::CREATED, Json(json!(entry))).into_response(),
        Err(Refused::OneJob) => {
            let error = "this dispatcher runs the one job of --config; start `reprise dispatcher` without --config to take jobs";
            (StatusCode::CONFLICT, Json(json!({ "error": error }))).into_response()
        }
        Err(Refused::Invalid(problems)) => {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            let error = format!("the job file has {} problem(s): {}", problems.len(), listed.join("; "));
            let body = json!({ "error": error, "problems": problems });
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

async fn kept_report(
    State(station): State<Arc<Station>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let content_type = match file.as_str() {
        "report.json" => "application/json",
        "report.html" => "text/html; charset=utf-8",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let Some(path) = station.report_file(&id, &file) else {
        let error = format!("no kept report for job {id:?}: GET /jobs lists those kept");
        return (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) => {
            let error = format!("cannot read {}: {e}", path.display());
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": error }))).into_response()
        }
    }
}

/// GET /jobs/{base}/diff/{candidate}: two kept reports side by side per endpoint, as
/// `reprise diff` puts them (no limits: the page shows, the command gates).
async fn diff(
    State(station): State<Arc<Station>>,
    Path((base, candidate)): Path<(String, String)>,
) -> Response {
    let load = |id: &str| {
        let path = station.report_file(id, "report.json").ok_or_else(|| {
            Failure(
                StatusCode::NOT_FOUND,
                format!("no kept report for job {id:?}: GET /jobs lists those kept"),
            )
        })?;
        ReportFile::load(&path).map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    match (load(&base), load(&candidate)) {
        (Ok(b), Ok(c)) => {
            let names = (format!("job {base} ({})", b.job), format!("job {candidate} ({})", c.job));
            let limits = DiffLimits { min_requests: 1, ..DiffLimits::default() };
            Json(RunDiff::of(&b, &c, (&names.0, &names.1), limits)).into_response()
        }
        (Err(f), _) | (_, Err(f)) => f.into_response(),
    }
}
