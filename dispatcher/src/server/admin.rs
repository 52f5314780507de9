//! The admin HTTP API: GET /healthz, GET /metrics (Prometheus), GET /status and GET /report (the current merged report:
//! state, replayers, accounting, results so far, as `--report-json` writes it at the end),
//! POST /job/start (start without waiting for min_replayers), POST /job/stop, POST
//! /job/config (`{"speed": 2, "rate": 1.5}` or `{"qps": 500}`: a pace and/or a rate;
//! applied within a slot, the schedule continuing from the last record released), POST /job/pause, POST /job/resume;
//! GET /report.html (the HTML report so far) and POST /shutdown (a dispatcher serving after
//! its job, `--serve-forever`, exits with the job's code: how a CI step that has copied the
//! reports out ends it).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use serde::Deserialize;

use crate::config::Speed;
use crate::job::Job;
use crate::results::{Report, Snapshot, metrics};

pub(super) fn router(job: Arc<Job>) -> Router {
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
        .with_state(job)
}

async fn status(State(job): State<Arc<Job>>) -> Json<Report> {
    Json(Report::of(&job))
}

async fn report_html(State(job): State<Arc<Job>>) -> axum::response::Html<String> {
    axum::response::Html(crate::results::html::render(&Report::of(&job)))
}

async fn shutdown(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    job.request_exit();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()})))
}

async fn metrics(
    State(job): State<Arc<Job>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&Snapshot::of(&job, false)),
    )
}

async fn start(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"})));
    }
    job.request_start();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()})))
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

async fn config(State(job): State<Arc<Job>>, Json(change): Json<ConfigChange>) -> (StatusCode, Json<Value>) {
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"})));
    }
    let pace = match (change.speed, change.qps) {
        (Some(_), Some(_)) => {
            let error = "give speed or qps, not both: each sets the pace";
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
        }
        (speed, qps) => speed.or(qps.map(Speed::Qps)),
    };
    match job.set_config(pace, change.rate) {
        Ok(control) => (StatusCode::OK, Json(json!(control))),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))),
    }
}

async fn pause(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    paused(&job, true)
}

async fn resume(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    paused(&job, false)
}

fn paused(job: &Job, paused: bool) -> (StatusCode, Json<Value>) {
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"})));
    }
    (StatusCode::OK, Json(json!(job.set_paused(paused))))
}

async fn stop(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    job.request_stop();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()})))
}
