//! A replayer's own health and figures, served by `reprise replayer --http ADDR`:
//! `/healthz` (the process answers), `/readyz` (subscribed to a dispatcher, holding a job or
//! waiting for one, and not leaving) and `/metrics` (Prometheus text: connected, records
//! received, requests sent, held, connections, schedule lag). Kubernetes' probes and a
//! scrape of every replayer pod read them; the dispatcher's `/metrics` has the fleet's view.
//!
//! The figures are cheap to keep: the client sets a flag when it subscribes and hands the
//! running job's executor over, whose counters already exist; the reporter, which takes the
//! statistics once a second anyway, leaves the last second's schedule lag here. Nothing is
//! counted per request on this account. The port carries no recorded data (no paths, no
//! headers), so it needs no token.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::stats::LagInterval;

/// Records and requests of the jobs this process has finished.
#[derive(Clone, Copy, Debug, Default)]
struct Done {
    received: u64,
    completed: u64,
    cancelled: u64,
}

/// What `/readyz` and `/metrics` show; shared by the client, its reporter and the server.
#[derive(Default)]
pub struct Health {
    id: String,
    dispatcher: String,
    connected: AtomicBool,
    leaving: AtomicBool,
    jobs_refused: AtomicU64,
    jobs_done: AtomicU64,
    job: Mutex<Option<Arc<Executor>>>,
    done: Mutex<Done>,
    /// The last interval's lag, and the sum and count of every interval's.
    lag: Mutex<(LagInterval, f64, u64)>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("id", &self.id)
            .field("connected", &self.connected.load(Relaxed))
            .field("leaving", &self.leaving.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// Clears `connected` when the subscription it was made for ends.
pub(crate) struct Connected<'a>(&'a Health);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected.store(false, Relaxed);
    }
}

impl Health {
    pub fn new(id: &str, dispatcher: &str) -> Arc<Self> {
        Arc::new(Self { id: id.to_owned(), dispatcher: dispatcher.to_owned(), ..Self::default() })
    }

    /// Subscribed: ready until the guard drops (the stream ended).
    pub(crate) fn connected(&self) -> Connected<'_> {
        self.connected.store(true, Relaxed);
        Connected(self)
    }

    /// Asked to leave (SIGTERM): no longer ready, whatever it still sends.
    pub(crate) fn leaving(&self) {
        self.leaving.store(true, Relaxed);
    }

    pub(crate) fn refused_job(&self) {
        self.jobs_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn job_started(&self, exec: &Arc<Executor>) {
        *self.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(exec));
    }

    /// The job's executor is done (or abandoned): its counts move to the finished ones.
    pub(crate) fn job_ended(&self, exec: &Arc<Executor>) {
        let mut job = self.job.lock().unwrap_or_else(|p| p.into_inner());
        if job.as_ref().is_some_and(|j| Arc::ptr_eq(j, exec)) {
            *job = None;
        }
        let (completed, cancelled) = exec.recorder().counts();
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.received += exec.received();
        done.completed += completed;
        done.cancelled += cancelled;
        self.jobs_done.fetch_add(1, Relaxed);
    }

    pub(crate) fn lag_interval(&self, lag: LagInterval) {
        let mut l = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        l.1 += lag.sum_us;
        l.2 += lag.count;
        l.0 = lag;
    }

    /// Subscribed and not leaving.
    pub fn ready(&self) -> bool {
        self.connected.load(Relaxed) && !self.leaving.load(Relaxed)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in self.series() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        self.schedule_lag(&mut out);
        let _ = writeln!(
            out,
            "# HELP reprise_replayer_info This replayer.\n# TYPE reprise_replayer_info gauge\n\
             reprise_replayer_info{{id=\"{}\",dispatcher=\"{}\",version=\"{}\"}} 1",
            label(&self.id),
            label(&self.dispatcher),
            reprise_proto::VERSION
        );
        out
    }

    /// The counters and gauges: name, type, help and value.
    fn series(&self) -> [(&'static str, &'static str, &'static str, u64); 11] {
        let job = self.job.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut all = *self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (mut held, mut links) = (0, 0);
        if let Some(exec) = &job {
            let (completed, cancelled) = exec.recorder().counts();
            all.received += exec.received();
            all.completed += completed;
            all.cancelled += cancelled;
            held = exec.pending();
            links = u64::try_from(exec.links()).unwrap_or(u64::MAX);
        }
        let flag = |b: bool| u64::from(b);
        [
            (
                "reprise_replayer_connected",
                "gauge",
                "1 while subscribed to a dispatcher (holding a job or waiting for one).",
                flag(self.connected.load(Relaxed)),
            ),
            ("reprise_replayer_job_running", "gauge", "1 while it holds a job.", flag(job.is_some())),
            (
                "reprise_replayer_leaving",
                "gauge",
                "1 once asked to leave (SIGTERM).",
                flag(self.leaving.load(Relaxed)),
            ),
            (
                "reprise_replayer_records_received_total",
                "counter",
                "Records received from the dispatcher.",
                all.received,
            ),
            (
                "reprise_replayer_requests_sent_total",
                "counter",
                "Requests sent to the target (answered, failed or cut at a stop).",
                all.completed - all.cancelled,
            ),
            (
                "reprise_replayer_records_cancelled_total",
                "counter",
                "Records cancelled unsent (the job was stopped, or the drain timed out).",
                all.cancelled,
            ),
            (
                "reprise_replayer_records_held",
                "gauge",
                "Records received and not yet done with: waiting for their instant or in flight.",
                held,
            ),
            (
                "reprise_replayer_connections",
                "gauge",
                "Connections to the target the running job has opened (each keeps one alive).",
                links,
            ),
            (
                "reprise_replayer_jobs_total",
                "counter",
                "Jobs finished or abandoned.",
                self.jobs_done.load(Relaxed),
            ),
            (
                "reprise_replayer_jobs_refused_total",
                "counter",
                "Jobs refused (target outside --allow-target, unusable, or none).",
                self.jobs_refused.load(Relaxed),
            ),
            (
                "reprise_replayer_grpc_messages_received_total",
                "counter",
                "Whole messages in the answers to gRPC calls (a server stream's every one).",
                crate::rpc::messages_received(),
            ),
        ]
    }

    /// The schedule lag of the last second as a summary: p50, p99 and max, with the sum and
    /// count of the job so far.
    fn schedule_lag(&self, out: &mut String) {
        let (last, sum_us, count) = *self.lag.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP reprise_replayer_schedule_lag_seconds Due instant to send; quantiles of the last second.\n\
             # TYPE reprise_replayer_schedule_lag_seconds summary"
        );
        for (q, v) in [("0.5", last.p50_us), ("0.99", last.p99_us), ("1", last.max_us)] {
            let _ =
                writeln!(out, "reprise_replayer_schedule_lag_seconds{{quantile=\"{q}\"}} {}", v as f64 / 1e6);
        }
        let _ = writeln!(out, "reprise_replayer_schedule_lag_seconds_sum {}", sum_us / 1e6);
        let _ = writeln!(out, "reprise_replayer_schedule_lag_seconds_count {count}");
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn respond(health: &Health, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body, kind) = match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/healthz") => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        ("GET" | "HEAD", "/readyz") if health.ready() => (StatusCode::OK, "ready\n".to_owned(), "text/plain"),
        ("GET" | "HEAD", "/readyz") => {
            let why =
                if health.leaving.load(Relaxed) { "leaving\n" } else { "not subscribed to a dispatcher\n" };
            (StatusCode::SERVICE_UNAVAILABLE, why.to_owned(), "text/plain")
        }
        ("GET" | "HEAD", "/metrics") => (StatusCode::OK, health.metrics(), "text/plain; version=0.0.4"),
        ("GET" | "HEAD", _) => {
            (StatusCode::NOT_FOUND, "/healthz, /readyz or /metrics\n".to_owned(), "text/plain")
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned(), "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    resp
}

/// The `--http` server: [`serve`] starts it, [`HealthServer::shutdown`] stops it and waits
/// for it, connections included. It is meant to outlive the replayer's drain: probes must
/// answer while it leaves.
#[derive(Debug)]
pub struct HealthServer {
    /// Where it listens (port 0 resolved).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long connections open at shutdown (a scraper's keep-alive) may finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl HealthServer {
    /// Stops accepting, lets the connections open finish within a grace, then cuts them;
    /// returns once the server's tasks have all ended.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the health server's task failed");
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` of `health` on `addr`.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<HealthServer> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                () = cancel.cancelled() => break,
            };
            let Ok((stream, _)) = conn else { continue };
            let health = Arc::clone(&health);
            conns.spawn(async move {
                let service = service_fn(move |req| {
                    let resp = respond(&health, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
        drop(listener);
        let _ =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
        conns.shutdown().await;
    });
    Ok(HealthServer { addr: bound, stop, task })
}
