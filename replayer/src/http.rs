//! The target and one keep-alive HTTP/1.1 connection to it. Each executor worker owns one
//! connection (opened on first use, again after an error), so requests need no shared pool:
//! no lock, no hash lookup, no task per request (as oha does it).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use reprise_proto::pb;
use tower_service::Service as _;

use crate::errors::kind_of;

/// Headers that belong to one connection, not to the request; never replayed.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "trailer",
    "host",
];

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}` is not an http(s) base URL with a host")]
    BadTarget(String),
}

pub type Conn = SendRequest<Full<Bytes>>;

/// Where requests go, and how connections to it are made.
#[derive(Clone, Debug)]
pub struct Target {
    /// scheme://authority, what the connector dials.
    origin: Uri,
    /// The Host header for requests (the target's authority).
    host: HeaderValue,
    /// Path prefix of the target URL, without a trailing '/'.
    prefix: String,
    connector: HttpsConnector<HttpConnector>,
    timeout: Duration,
    preserve_host: bool,
}

impl Target {
    pub fn new(cfg: &pb::JobConfig) -> Result<Target, TargetError> {
        let bad = || TargetError::BadTarget(cfg.target.clone());
        let uri: Uri = cfg.target.parse().map_err(|_| bad())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(bad()) };
        if !matches!(scheme, "http" | "https") {
            return Err(bad());
        }
        let origin: Uri = format!("{scheme}://{authority}").parse().map_err(|_| bad())?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(cfg.insecure_tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Target {
            origin,
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            connector,
            timeout,
            preserve_host: cfg.preserve_host,
        })
    }

    /// Sends a record on `conn` (opening one if there is none or it closed) and reads the
    /// whole response. Returns the status or the error kind; an error drops the connection.
    pub async fn exchange(
        &self,
        conn: &mut Option<Conn>,
        rec: &pb::Record,
    ) -> (Option<u16>, Option<&'static str>) {
        let Ok(req) = self.request(rec) else { return (None, Some("other")) };
        match tokio::time::timeout(self.timeout, self.send(conn, req)).await {
            Ok(Ok(status)) => (Some(status), None),
            Ok(Err(kind)) => {
                *conn = None;
                (None, Some(kind))
            }
            Err(_) => {
                *conn = None;
                (None, Some("timeout"))
            }
        }
    }

    async fn send(&self, conn: &mut Option<Conn>, req: Request<Full<Bytes>>) -> Result<u16, &'static str> {
        if conn.as_ref().is_none_or(SendRequest::is_closed) {
            *conn = Some(self.connect().await?);
        }
        // invariant: set just above.
        let Some(sender) = conn.as_mut() else { return Err("other") };
        sender.ready().await.map_err(|e| kind_of(&e, false))?;
        let resp = sender.send_request(req).await.map_err(|e| kind_of(&e, false))?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.map_err(|_| "body")?;
        Ok(status)
    }

    /// Opens a connection to the target.
    pub async fn connect(&self) -> Result<Conn, &'static str> {
        let io =
            self.connector.clone().call(self.origin.clone()).await.map_err(|e| kind_of(e.as_ref(), true))?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| kind_of(&e, true))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The record as a request to the target: its method, path, query, headers and body;
    /// the target's host (or the recorded one with `preserve_host`).
    fn request(&self, rec: &pb::Record) -> Result<Request<Full<Bytes>>, ()> {
        let uri: Uri = if self.prefix.is_empty() {
            rec.path.parse().map_err(|_| ())?
        } else {
            format!("{}{}", self.prefix, rec.path).parse().map_err(|_| ())?
        };
        let mut req = Request::builder()
            .method(rec.method.as_str())
            .uri(uri)
            .body(Full::new(rec.body.clone()))
            .map_err(|_| ())?;
        let headers = req.headers_mut();
        for h in &rec.headers {
            if HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_maybe_shared(h.value.clone()))
            {
                headers.append(n, v);
            }
        }
        let host = match (self.preserve_host, rec.host.is_empty()) {
            (true, false) => HeaderValue::from_str(&rec.host).map_err(|_| ())?,
            _ => self.host.clone(),
        };
        headers.insert(http::header::HOST, host);
        Ok(req)
    }
}
