//! `--http ADDR`: `/healthz` (the process answers), `/readyz` (the proxy listens: a failing
//! recording never takes the service it fronts out of rotation) and `/metrics` (the [`Counters`] as Prometheus text), as a replayer
//! serves them. The port carries counts only, never recorded data, so it needs no token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::counters::Counters;

/// The probe server, stopped with [`Probes::stop`].
pub struct Probes {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Probes {
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

pub async fn start(
    addr: SocketAddr,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> std::io::Result<Probes> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let tracker = TaskTracker::new();
    let (conns, stop) = (tracker.clone(), cancel.clone());
    tracker.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            let (counters, stop) = (Arc::clone(&counters), stop.clone());
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(Arc::clone(&counters), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(Probes { addr, cancel, tracker })
}

async fn answer(
    counters: Arc<Counters>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" | "/readyz" => (StatusCode::OK, "ok\n".to_owned()),
        "/metrics" => (StatusCode::OK, counters.render()),
        _ => (StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n".to_owned()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    Ok(r)
}
