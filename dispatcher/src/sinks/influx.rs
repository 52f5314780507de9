//! `[reporter.influxdb]`: InfluxDB line protocol, one batch per merged report (an interval of
//! one replayer): measurements `reprise_requests`, `reprise_latency`, `reprise_service`
//! (ms), `reprise_status` (per class), `reprise_errors` (per kind), tagged `job`, `endpoint`,
//! `replayer`. API v1 (`/write?db=`, Havok's `database`, `user`, `password`) when `database`
//! is set; v2 (`/api/v2/write?org=&bucket=`, token from the environment) when `bucket` is.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use reprise_proto::stats::{Dist, EndpointStats};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Interval, Ledger, Sink};
use crate::config::InfluxConfig;

/// Batches waiting to be written; past this, new ones are dropped (and counted).
const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug)]
pub struct Influx {
    tx: mpsc::Sender<Batch>,
    job: String,
    ledger: Arc<Ledger>,
}

#[derive(Debug)]
struct Batch {
    body: String,
    points: u64,
}

/// Escapes a tag value (commas, spaces and equals signs).
fn tag(v: &str) -> String {
    v.replace('\\', "\\\\").replace(',', "\\,").replace(' ', "\\ ").replace('=', "\\=")
}

fn quantiles(h: &impl Dist) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50={},p90={},p99={},max={},mean={}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.mean() / 1000.0
    )
}

/// The lines of one replayer's interval.
pub(super) fn lines(
    job: &str,
    replayer: &str,
    deltas: &[(Arc<str>, EndpointStats)],
    ts_ms: u128,
) -> (String, u64) {
    let mut out = String::new();
    let mut points = 0;
    for (endpoint, s) in deltas.iter().filter(|(_, s)| s.count() > 0) {
        let tags = format!("job={},endpoint={},replayer={}", tag(job), tag(endpoint), tag(replayer));
        let _ = writeln!(
            out,
            "reprise_requests,{tags} count={}i,ok={}i,failed={}i {ts_ms}",
            s.count(),
            s.ok,
            s.failed
        );
        let _ = writeln!(out, "reprise_latency,{tags} {} {ts_ms}", quantiles(&s.latency));
        let _ = writeln!(out, "reprise_service,{tags} {} {ts_ms}", quantiles(&s.service));
        points += 3;
        for (class, n) in s.status_classes() {
            let _ = writeln!(out, "reprise_status,{tags},class={class} count={n}i {ts_ms}");
            points += 1;
        }
        for (kind, n) in &s.errors {
            let _ = writeln!(out, "reprise_errors,{tags},kind={} count={n}i {ts_ms}", tag(kind));
            points += 1;
        }
    }
    (out, points)
}

impl Influx {
    /// Starts the writer in `tasks`; it ends with `cancel`.
    pub fn start(cfg: &InfluxConfig, job: &str, tasks: &TaskTracker, cancel: CancellationToken) -> Influx {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = Influx { tx, job: job.to_owned(), ledger: Arc::default() };
        let writer = Writer {
            url: cfg.write_url(),
            token: cfg.token(),
            timeout: cfg.timeout.0,
            client: client(),
            ledger: Arc::clone(&sink.ledger),
        };
        tasks.spawn(writer.run(rx, cancel));
        sink
    }
}

impl Sink for Influx {
    fn name(&self) -> &'static str {
        "influxdb"
    }

    /// Queues one interval; never waits: a full queue drops it (counted).
    fn offer(&self, interval: &Interval<'_>) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
        let (body, points) = lines(&self.job, interval.replayer, interval.deltas, ts);
        if points == 0 {
            return;
        }
        self.ledger.offered(points);
        if self.tx.try_send(Batch { body, points }).is_err() {
            self.ledger.refused(points);
        }
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

fn client() -> HttpClient {
    let https =
        hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(https)
}

struct Writer {
    url: String,
    token: Option<String>,
    timeout: Duration,
    client: HttpClient,
    ledger: Arc<Ledger>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Batch>, cancel: CancellationToken) {
        let mut failures = 0u64;
        while let Some(batch) = tokio::select! { b = rx.recv() => b, () = cancel.cancelled() => None } {
            // Cancelled once the job's books are closed: what is still being sent counts as
            // dropped there already, and the job's end waits for this task.
            let delivered = tokio::select! {
                r = self.deliver(&batch) => r,
                () = cancel.cancelled() => return,
            };
            match delivered {
                Ok(()) => self.ledger.done(batch.points, true),
                Err(e) => {
                    failures += 1;
                    self.ledger.done(batch.points, false);
                    if failures == 1 || failures.is_multiple_of(100) {
                        tracing::warn!(url = %self.url, error = %e, failures, "influxdb write failed; points dropped");
                    }
                }
            }
        }
    }

    /// Writes a batch, retrying with backoff.
    async fn deliver(&self, batch: &Batch) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let mut req = hyper::Request::post(&self.url).header("content-type", "text/plain; charset=utf-8");
            if let Some(token) = &self.token {
                req = req.header("authorization", format!("Token {token}"));
            }
            let req = req.body(Full::new(Bytes::from(batch.body.clone()))).map_err(|e| e.to_string())?;
            match tokio::time::timeout(self.timeout, self.client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
                Ok(Ok(resp)) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    return Err(format!("refused: HTTP {}", resp.status()));
                }
                Ok(Ok(resp)) => last = format!("HTTP {}", resp.status()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {:?}", self.timeout),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use reprise_proto::stats::{ErrorKind, Outcome};

    use super::*;

    #[test]
    fn an_interval_becomes_tagged_lines() {
        let mut s = EndpointStats::default();
        s.record(&Outcome { answer: Ok(Some(200)), latency_us: 2000, service_us: 1000, lag_us: 1 });
        s.record(&Outcome { answer: Err(ErrorKind::Timeout), latency_us: 5000, service_us: 4000, lag_us: 1 });
        let (body, points) = lines("my job", "r1", &[("GET /a,b".into(), s)], 1700000000000);
        assert_eq!(points, 5);
        assert!(body.contains("reprise_requests,job=my\\ job,endpoint=GET\\ /a\\,b,replayer=r1 count=2i,ok=1i,failed=1i 1700000000000\n"), "{body}");
        assert!(body.contains("reprise_status,") && body.contains(",class=2xx count=1i"), "{body}");
        assert!(body.contains(",kind=timeout count=1i"), "{body}");
    }
}
