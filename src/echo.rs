//! The built-in echo target (`target = "builtin:echo"`, `reprise echo-server`): answers every
//! request 200 with the request's body, so the quickstart and the benchmarks need nothing
//! else running. With `--log-arrivals FILE` it writes a line per request as its head arrives
//! (`Unix µs<TAB>METHOD<TAB>path`): what `scripts/bench` reads the schedule error at the
//! target from. It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port, so a
//! job with `[replayer] http = "2"` can try it too.
//!
//! With `--json SEED` it answers like an API instead ([`Answers::Json`]), for response
//! comparison (`[compare]`) to have something real to compare: a JSON document made from
//! the request's path (the same from every server), with two fields that differ on every
//! answer (noise, drawn from SEED: give each server its own), and, with `--json-differ N`,
//! a changed price in the answers to one path in N (a candidate's regression).

use std::convert::Infallible;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Where arrivals are logged; flushed when dropped.
#[derive(Debug)]
pub struct Arrivals(Mutex<BufWriter<File>>);

impl Arrivals {
    pub fn create(path: &Path) -> std::io::Result<Arc<Arrivals>> {
        Ok(Arc::new(Arrivals(Mutex::new(BufWriter::with_capacity(1 << 16, File::create(path)?)))))
    }

    fn log(&self, req: &Request<Incoming>) {
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{us}\t{}\t{}", req.method(), req.uri());
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// What the target answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// The request's body.
    Echo,
    /// A JSON document for the path: `{"path", "request_id", "served_at", "items": [{"sku",
    /// "qty", "price"}…], "total"}`, 1 to 8 items (~150 to ~450 bytes), or for one path in
    /// 10, 50 to 199 (~2 to ~7 KB). `request_id` and
    /// `served_at` differ on every answer; with `differ` N > 0, one path in N (by a hash of
    /// it) answers its first item's price 1 higher, and so its total.
    Json { seed: u64, differ: u64 },
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Response::new(Full::new(body)))
}

/// FNV-1a of `bytes`: a path's hash, the same in every server.
fn hash(bytes: &[u8]) -> u64 {
    reprise_proto::expected::fnv1a(reprise_proto::expected::fnv_start(), bytes)
}

/// The JSON answer to `path` (see [`Answers::Json`]); `noise` is the connection's draw.
pub fn json_answer(path: &str, differ: u64, noise: &mut u64) -> String {
    let h = hash(path.as_bytes());
    *noise = noise.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let served_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
    let changed = differ > 0 && (h >> 20).is_multiple_of(differ);
    let mut total = 0u64;
    // Most answers are small; one path in 10 has a long list (2 to 7 KB).
    let count = if h.is_multiple_of(10) { 50 + (h >> 8) % 150 } else { 1 + h % 8 };
    let items: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let price = 100 + (h >> (i % 20 * 3)) % 9_900 + u64::from(changed && i == 0);
            total += price;
            let sku = format!("{:08x}", (h >> (i % 32)) as u32 ^ i as u32);
            serde_json::json!({"sku": sku, "qty": 1 + (h >> (i % 12 * 5)) % 4, "price": price})
        })
        .collect();
    let doc = serde_json::json!({
        "path": path,
        "request_id": format!("{:016x}", *noise),
        "served_at": served_at as u64,
        "items": items,
        "total": total,
    });
    doc.to_string()
}

/// Binds `addr` and serves until `cancel`; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    cancel: CancellationToken,
    arrivals: Option<Arc<Arrivals>>,
    answers: Answers,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let mut connections = 0u64;
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                () = cancel.cancelled() => return,
            };
            let Ok((stream, _)) = conn else { continue };
            let _ = stream.set_nodelay(true);
            let arrivals = arrivals.clone();
            connections += 1;
            // Each connection draws its own noise, from the seed and its number.
            let noise = std::sync::atomic::AtomicU64::new(match answers {
                Answers::Json { seed, .. } => hash(&[seed.to_le_bytes(), connections.to_le_bytes()].concat()),
                Answers::Echo => 0,
            });
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    if let Some(a) = &arrivals {
                        a.log(&req);
                    }
                    let json = match answers {
                        Answers::Json { differ, .. } => {
                            let mut n = noise.load(std::sync::atomic::Ordering::Relaxed);
                            let body = json_answer(req.uri().path(), differ, &mut n);
                            noise.store(n, std::sync::atomic::Ordering::Relaxed);
                            Some(body)
                        }
                        Answers::Echo => None,
                    };
                    async move {
                        match json {
                            Some(body) => {
                                // Read to its end, so the connection stays reusable.
                                let _ = req.into_body().collect().await;
                                let mut resp = Response::new(Full::new(Bytes::from(body)));
                                resp.headers_mut().insert(
                                    hyper::header::CONTENT_TYPE,
                                    hyper::header::HeaderValue::from_static("application/json"),
                                );
                                Ok(resp)
                            }
                            None => echo(req).await,
                        }
                    }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().keep_alive(true);
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(bound)
}
