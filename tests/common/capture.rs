//! The capture target: an HTTP server on 127.0.0.1 that records every request, when it
//! arrived and when it was answered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the target saw it.
#[derive(Clone, Debug)]
pub struct Captured {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// When the target began to answer (after its delay); `None` while it has not.
    pub answered: Option<Instant>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

/// An HTTP target on 127.0.0.1 that records what arrives. Answers 200, or the status in
/// the request's `x-status` header, after the delay in its `x-delay-ms` header, closing the
/// connection after it when the request has an `x-close` header.
pub struct Capture {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    pub async fn start() -> Capture {
        Self::start_with(None).await
    }

    /// Like [`Capture::start`], closing connections idle for `idle` (as servers' keep-alive
    /// timeouts do, without a `Connection: close`).
    pub async fn start_with(idle: Option<Duration>) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind capture target");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let store = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let store = Arc::clone(&store);
                        async move {
                            let at = Instant::now();
                            let method = req.method().to_string();
                            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let headers: Vec<(String, Vec<u8>)> = req
                                .headers()
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                                .collect();
                            let status = req
                                .headers()
                                .get("x-status")
                                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                                .unwrap_or(200);
                            let close = req.headers().contains_key("x-close");
                            let delay = req
                                .headers()
                                .get("x-delay-ms")
                                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                                .unwrap_or(0);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let index = {
                                let mut seen = store.lock().expect("lock");
                                seen.push(Captured { method, path, headers, body, at, answered: None });
                                seen.len() - 1
                            };
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            store.lock().expect("lock")[index].answered = Some(Instant::now());
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                            if close {
                                resp.headers_mut()
                                    .insert("connection", hyper::header::HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let mut builder = http1::Builder::new();
                    if let Some(idle) = idle {
                        builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle);
                    }
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Capture { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.seen.lock().expect("lock").clone()
    }
}
