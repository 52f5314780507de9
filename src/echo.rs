//! The built-in echo target (`target = "builtin:echo"`, `reprise echo-server`): answers every
//! request 200 with the request's body, so the quickstart and the benchmarks need nothing
//! else running. With `--log-arrivals FILE` it writes a line per request as its head arrives
//! (`Unix µs<TAB>METHOD<TAB>path`): what `scripts/bench` reads the schedule error at the
//! target from.

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
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
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

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Response::new(Full::new(body)))
}

/// Binds `addr` and serves until `cancel`; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    cancel: CancellationToken,
    arrivals: Option<Arc<Arrivals>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                () = cancel.cancelled() => return,
            };
            let Ok((stream, _)) = conn else { continue };
            let _ = stream.set_nodelay(true);
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    if let Some(a) = &arrivals {
                        a.log(&req);
                    }
                    echo(req)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
