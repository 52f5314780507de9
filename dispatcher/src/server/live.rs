//! The live page: `GET /` with its script and style (built into the binary, nothing
//! fetched from elsewhere: its Content-Security-Policy lets it talk to this origin only),
//! `GET /events` (server-sent events, a [`Frame`](crate::results::live::Frame) and the new
//! per-second rows each second), and the session the page keeps with an admin token: `POST
//! /login` checks the token and keeps it in an `HttpOnly`, `SameSite=Strict` cookie, `POST
//! /logout` forgets it, `GET /session` says whether one is needed and held.
//!
//! Each page has its own feed task writing into a channel of `PAGE_BUFFER` events. The job
//! never waits for a page: a frame is offered with `try_send`, and a page that has not taken
//! its events for `STALL_LIMIT` seconds is dropped (counted), so a stuck browser costs at
//! most a few frames of memory. The feeds end when the servers stop, so an open page never
//! holds a dispatcher's exit.
//!
//! The page is plain HTML, CSS and JavaScript without a framework: it draws its charts as
//! SVG and its tables from the frame, about 27 KB in all.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::auth::{COOKIE, Token};
use super::station::Station;
use crate::job::Job;
use crate::refusals::Refusal;
use crate::results::live::FrameCache;

/// Events a page may have waiting; past them its frames are skipped.
const PAGE_BUFFER: usize = 4;
/// Seconds a page may leave its events untaken before it is dropped.
const STALL_LIMIT: u32 = 10;
/// Per-second rows a page gets when it opens (the last ten minutes).
const ROWS_AT_OPEN: usize = 600;
/// How often a page is sent a frame.
const EVERY: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/live.js");
const STYLE: &str = include_str!("page/live.css");

/// The page may load its script and style, and talk to this origin, and nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) struct Live {
    pub station: Arc<Station>,
    pub token: Option<Token>,
    /// The servers' stop: every feed ends with it.
    pub stop: CancellationToken,
    /// Whether the admin port is behind TLS (the cookie is then `Secure`).
    pub tls: bool,
    frames: FrameCache,
}

impl Live {
    pub fn new(station: Arc<Station>, token: Option<Token>, stop: CancellationToken, tls: bool) -> Live {
        Live { station, token, stop, tls, frames: FrameCache::default() }
    }
}

pub(super) fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/live.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/live.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/events", get(events))
        .route("/session", get(session))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(live)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, body).into_response()
}

async fn events(State(live): State<Arc<Live>>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(PAGE_BUFFER);
    live.station.counters().pages.opened();
    tokio::spawn(feed(Arc::clone(&live), tx));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    ([(header::CACHE_CONTROL, "no-store")], Sse::new(stream))
}

/// Sends a page its events until it goes away, stalls or the servers stop.
async fn feed(live: Arc<Live>, tx: mpsc::Sender<Event>) {
    let mut last_row: Option<u64> = None;
    let mut following: Option<Arc<Job>> = None;
    let mut stalled = 0;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = live.stop.cancelled() => break,
            () = tx.closed() => break,
        }
        let Some(job) = live.station.current() else {
            // Before a standing dispatcher's first job.
            let _ = tx.try_send(Event::default().data(r#"{"frame":null,"rows":[]}"#));
            continue;
        };
        if !following.as_ref().is_some_and(|f| Arc::ptr_eq(f, &job)) {
            // Another job began: its seconds start again.
            (following, last_row) = (Some(Arc::clone(&job)), None);
        }
        let frame = live.frames.get(&job);
        let most = if last_row.is_none() { ROWS_AT_OPEN } else { usize::MAX };
        let rows = crate::results::merge::live_rows(&job, last_row, most);
        let rows_json = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
        let event = Event::default().data(format!("{{\"frame\":{frame},\"rows\":{rows_json}}}"));
        match tx.try_send(event) {
            Ok(()) => {
                stalled = 0;
                last_row = rows.last().map(|r| r.second).or(last_row);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                stalled += 1;
                if stalled >= STALL_LIMIT {
                    live.station.counters().pages.dropped();
                    tracing::warn!(
                        seconds = STALL_LIMIT,
                        "dropped a live page that stopped reading its events"
                    );
                    break;
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    live.station.counters().pages.closed();
}

/// Whether the page may follow the job: `signed_in` is false when a token is needed and
/// neither the header nor the cookie holds it. Open, and not counted as a refusal: a page
/// asks this before it shows the sign-in form.
async fn session(State(live): State<Arc<Live>>, headers: HeaderMap) -> Json<serde_json::Value> {
    let signed_in = live.token.as_ref().is_none_or(|t| {
        t.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) || t.admits_cookie(&headers)
    });
    let standing = live.station.is_standing();
    Json(json!({ "token_required": live.token.is_some(), "signed_in": signed_in, "standing": standing }))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(live): State<Arc<Live>>, Json(login): Json<Login>) -> Response {
    let Some(token) = &live.token else {
        return (StatusCode::OK, Json(json!({"token_required": false}))).into_response();
    };
    let presented = format!("Bearer {}", login.token);
    if !token.admits(Some(presented.as_bytes())) {
        live.station.counters().refusals.count(Refusal::AdminToken);
        tracing::warn!("live page login refused: wrong admin token");
        let body = json!({"error": "wrong token: give the dispatcher's REPRISE_ADMIN_TOKEN"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let secure = if live.tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}", hex(login.token.as_bytes()));
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            (StatusCode::OK, [(header::SET_COOKIE, v)], Json(json!({"token_required": true}))).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn logout() -> impl IntoResponse {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)])
}

/// The cookie carries the token hex-encoded: a token may hold `;` or `,`, which a cookie
/// value cannot.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
