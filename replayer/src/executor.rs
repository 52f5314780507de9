//! Fires records at the target at their due instants. Records arrive in due order; the
//! loop sleeps until each one's instant (absolute: job start + due offset), takes a
//! concurrency permit and sends it on a keep-alive HTTP/1.1 pool. Latency is measured from
//! the due instant (so a saturated target shows in it) and from the actual send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reprise_proto::pb;
use reprise_proto::stats::Outcome;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::Recorder;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Headers that belong to one connection, not to the request; never replayed.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "trailer",
];

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("target `{0}` is not an http(s) base URL")]
    BadTarget(String),
}

/// One job at one replayer.
pub struct Executor {
    cfg: pb::JobConfig,
    base: String,
    client: HttpClient,
    recorder: Arc<Recorder>,
    start: Instant,
    dry_run: bool,
    received: AtomicU64,
    /// Signalled when enough completions wait to be acknowledged.
    pub ack_due: Notify,
}

impl Executor {
    pub fn new(cfg: pb::JobConfig, dry_run: bool) -> Result<Arc<Self>, ExecError> {
        let base = cfg.target.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|_| ExecError::BadTarget(cfg.target.clone()))?;
        if !dry_run && !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(ExecError::BadTarget(cfg.target.clone()));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms.max(1))));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(cfg.insecure_tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.concurrency as usize)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let start = instant_of(cfg.start_unix_ns);
        Ok(Arc::new(Self {
            recorder: Arc::new(Recorder::new(cfg.max_endpoints)),
            base,
            client,
            start,
            dry_run: dry_run || cfg.dry_run,
            received: AtomicU64::new(0),
            ack_due: Notify::new(),
            cfg,
        }))
    }

    pub fn config(&self) -> &pb::JobConfig {
        &self.cfg
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn recorder_handle(&self) -> Arc<Recorder> {
        Arc::clone(&self.recorder)
    }

    /// Records received and not yet done with.
    pub fn pending(&self) -> u64 {
        self.received.load(Relaxed).saturating_sub(self.recorder.completed())
    }

    /// Sends every record of every batch at its instant, until the batches end or `cancel`
    /// fires (then what is left is counted cancelled). Waits for requests in flight.
    pub async fn run(
        self: Arc<Self>,
        mut batches: mpsc::Receiver<Vec<pb::Record>>,
        cancel: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1) as usize));
        let tracker = TaskTracker::new();
        'batches: while let Some(batch) =
            tokio::select! { b = batches.recv() => b, () = cancel.cancelled() => None }
        {
            self.received.fetch_add(batch.len() as u64, Relaxed);
            let mut records = batch.into_iter();
            while let Some(rec) = records.next() {
                let due = self.start + Duration::from_nanos(rec.due_offset_ns.max(0) as u64);
                let permit = tokio::select! {
                    p = async {
                        // A timer only for a record still ahead: at speed "max" none is.
                        if due > Instant::now() {
                            tokio::time::sleep_until(due).await;
                        }
                        Arc::clone(&permits).acquire_owned().await
                    } => p,
                    () = cancel.cancelled() => {
                        self.recorder.cancel(1 + records.len() as u64);
                        break 'batches;
                    }
                };
                let Ok(permit) = permit else { break 'batches };
                let me = Arc::clone(&self);
                tracker.spawn(async move {
                    me.fire(rec, due).await;
                    drop(permit);
                });
            }
        }
        batches.close();
        while let Ok(rest) = batches.try_recv() {
            self.received.fetch_add(rest.len() as u64, Relaxed);
            self.recorder.cancel(rest.len() as u64);
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn fire(&self, rec: pb::Record, due: Instant) {
        let sent = Instant::now();
        // Boxed: the HTTP exchange's state is large, and a dry run should not carry it.
        let (status, error) = if self.dry_run { (None, None) } else { Box::pin(self.send(&rec)).await };
        let end = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let outcome = Outcome {
            status,
            error,
            latency_us: us(end.saturating_duration_since(due)),
            service_us: us(end - sent),
            lag_us: us(sent.saturating_duration_since(due)),
        };
        let unreported = self.recorder.record(&rec.method, &rec.path, &outcome);
        if unreported >= u64::from(self.cfg.credit_window / 4).max(1) {
            self.ack_due.notify_one();
        }
    }

    async fn send(&self, rec: &pb::Record) -> (Option<u16>, Option<&'static str>) {
        let req = match self.request(rec) {
            Ok(r) => r,
            Err(()) => return (None, Some("other")),
        };
        let timeout = Duration::from_millis(self.cfg.timeout_ms.max(1));
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| crate::errors::kind_of_client(&e))?;
            let status = resp.status().as_u16();
            match resp.into_body().collect().await {
                Ok(_) => Ok(status),
                Err(_) => Err("body"),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(kind)) => (None, Some(kind)),
            Err(_) => (None, Some("timeout")),
        }
    }

    fn request(&self, rec: &pb::Record) -> Result<Request<Full<Bytes>>, ()> {
        let uri: Uri = format!("{}{}", self.base, rec.path).parse().map_err(|_| ())?;
        let mut req = Request::builder()
            .method(rec.method.as_str())
            .uri(uri)
            .body(Full::new(rec.body.clone()))
            .map_err(|_| ())?;
        let headers = req.headers_mut();
        for h in &rec.headers {
            let skip = h.name.eq_ignore_ascii_case("host")
                || HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n));
            if skip {
                continue;
            }
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_maybe_shared(h.value.clone()))
            {
                headers.append(n, v);
            }
        }
        if self.cfg.preserve_host && !rec.host.is_empty() {
            let host = HeaderValue::from_str(&rec.host).map_err(|_| ())?;
            headers.insert(http::header::HOST, host);
        }
        Ok(req)
    }
}

/// The tokio instant of a wall-clock time (Unix ns).
fn instant_of(unix_ns: i64) -> Instant {
    let now_ns =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default();
    let now = Instant::now();
    let delta = unix_ns - now_ns;
    if delta >= 0 {
        now + Duration::from_nanos(delta as u64)
    } else {
        now.checked_sub(Duration::from_nanos(delta.unsigned_abs())).unwrap_or(now)
    }
}
