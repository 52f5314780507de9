//! The admin HTTP API: GET /healthz, GET /status and GET /report (the current merged report:
//! state, replayers, accounting, results so far, as `--report-json` writes it at the end),
//! POST /job/start (start without waiting for min_replayers), POST /job/stop.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::job::Job;
use crate::report::Report;

pub fn router(job: Arc<Job>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/report", get(status))
        .route("/job/start", post(start))
        .route("/job/stop", post(stop))
        .with_state(job)
}

async fn status(State(job): State<Arc<Job>>) -> Json<Report> {
    Json(Report::of(&job))
}

async fn start(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    if job.is_over() {
        return (StatusCode::CONFLICT, Json(json!({"error": "the job is over"})));
    }
    job.request_start();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()})))
}

async fn stop(State(job): State<Arc<Job>>) -> (StatusCode, Json<Value>) {
    job.request_stop();
    (StatusCode::ACCEPTED, Json(json!({"state": job.state()})))
}
