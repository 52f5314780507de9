//! The target, and a connection's link to it: one connection layer over plain HTTP/1.1,
//! HTTP/1.1 over TLS and HTTP/2, chosen per target and record ([`Protocol`]).
//!
//! HTTP/1.1, plain or over TLS, goes through [`crate::h1`] (heads written straight from the
//! record) on a keep-alive connection each of the executor's connection futures owns (opened
//! on first use, again after an error), so requests need no shared pool: no lock, no hash
//! lookup, no task per request (as oha does it). HTTP/2 goes through [`crate::h2`], whose
//! connections the links share. Timeouts, a stop's cut, response comparison and `max_body`
//! are the same for all three: they live here, around the exchange.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::future::Future as _;
use std::pin::Pin;
use std::task::Poll;

use http::{HeaderValue, Uri};
use reprise_proto::batch::RecordView;
use reprise_proto::pb;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::answer::{Answer, Keep};
use crate::errors::{ErrorKind, kind_of};
use crate::h1::{self, H1, Unsendable};
use crate::h2::{H2, Head, Io, Pool, Sent};
use crate::tls::{ALPN_H1, ALPN_H2, TlsSettingsError};
use reprise_proto::token::is_token;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}` is not an http(s) base URL with a host")]
    BadTarget(String),
    #[error(transparent)]
    Tls(#[from] TlsSettingsError),
    #[error("[compare] protoset is not a descriptor set: {0}")]
    Protoset(String),
}

/// Checks a target base URL as [`Target::new`] takes it (http or https, a host, no query)
/// and returns it as this replayer shows it to its dispatcher: scheme, host, port and path,
/// without user info (which may hold a password).
pub fn base_url(url: &str) -> Result<String, TargetError> {
    let bad = || TargetError::BadTarget(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(bad()) };
    if !matches!(scheme, "http" | "https") || authority.host().is_empty() || uri.query().is_some() {
        return Err(bad());
    }
    let port = authority.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{scheme}://{}{port}{}", authority.host(), uri.path().trim_end_matches('/')))
}

/// Which HTTP a record goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    H1,
    H2,
    /// `auto` on an https target before ALPN has settled: offer both, h2 first.
    Negotiate,
}

/// What ALPN settled on for an `auto` https target (the first connection decides for the
/// rest: a server offers the same protocols to each).
const UNSETTLED: u8 = 0;
const SETTLED_H1: u8 = 1;
const SETTLED_H2: u8 = 2;

/// A connection's side of the target: its own HTTP/1.1 connection, its handle on a shared
/// HTTP/2 one, the buffer it writes request heads in, and its timer.
#[derive(Default)]
pub struct Link {
    h1: Option<H1Conn>,
    h2: Option<H2>,
    head: Vec<u8>,
    /// Each exchange's deadline. One timer per link, moved only when it fires: a link's
    /// deadlines only grow, so a timer still set for an earlier exchange's fires early and is
    /// then set to the exchange's own. (A `timeout` per request inserted and removed a wheel
    /// entry each time; moving the timer on every request was still 1.5 % of an HTTP/2
    /// replay's time.)
    timer: Option<Pin<Box<Sleep>>>,
}

/// An HTTP/1.1 connection, plain or over TLS.
enum H1Conn {
    Plain(H1<TcpStream>),
    Tls(Box<H1<TlsStream<TcpStream>>>),
}

impl H1Conn {
    fn usable(&mut self, now: Instant) -> bool {
        match self {
            H1Conn::Plain(c) => c.usable(now),
            H1Conn::Tls(c) => c.usable(now),
        }
    }

    async fn exchange(
        &mut self,
        now: Instant,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        match self {
            H1Conn::Plain(c) => c.exchange(now, head, body, head_request, keep).await,
            H1Conn::Tls(c) => c.exchange(now, head, body, head_request, keep).await,
        }
    }
}

/// The TLS clients of an https target, by the protocols they offer.
struct Tls {
    h1: TlsConnector,
    h2: TlsConnector,
    both: TlsConnector,
    /// SNI and the name the certificate must carry: the target's host.
    name: ServerName<'static>,
}

/// Where requests go, and how connections to it are made.
pub struct Target {
    /// The target's authority (host:port), what connections dial.
    authority: String,
    /// For https targets.
    tls: Option<Tls>,
    /// The Host header for requests (the target's authority).
    host: HeaderValue,
    /// Path prefix of the target URL, without a trailing '/'.
    prefix: String,
    http: pb::HttpVersion,
    /// The HTTP/2 connections the links share.
    h2: Pool,
    /// What ALPN settled on (`auto`, https).
    settled: AtomicU8,
    timeout: Duration,
    preserve_host: bool,
    /// The target's authority can go in `:authority` as it is (checked once, here).
    h2_authority: bool,
}

impl Target {
    pub fn new(cfg: &pb::JobConfig) -> Result<Target, TargetError> {
        let bad = || TargetError::BadTarget(cfg.target.clone());
        let uri: Uri = cfg.target.parse().map_err(|_| bad())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(bad()) };
        if !matches!(scheme, "http" | "https") || authority.host().is_empty() {
            return Err(bad());
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let https = scheme == "https";
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let connector = |alpn: &[&[u8]]| crate::tls::client_config(cfg, alpn).map(TlsConnector::from);
            Some(Tls {
                h1: connector(&[ALPN_H1])?,
                h2: connector(&[ALPN_H2])?,
                both: connector(&[ALPN_H2, ALPN_H1])?,
                name: crate::tls::server_name(authority.host()).ok_or_else(bad)?,
            })
        } else {
            None
        };
        Ok(Target {
            authority: format!("{}:{port}", authority.host()),
            tls,
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            http: cfg.http(),
            h2: Pool::new(cfg.concurrency, cfg.max_streams),
            settled: AtomicU8::new(UNSETTLED),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            preserve_host: cfg.preserve_host,
            h2_authority: is_authority(authority.as_str().as_bytes()),
        })
    }

    /// Which HTTP `rec` goes over: as the job says, or with `auto`, HTTP/2 for gRPC calls
    /// and otherwise HTTP/1.1 on http:// and what ALPN settles on https://.
    fn protocol(&self, rec: &RecordView<'_>) -> Protocol {
        match self.http {
            pb::HttpVersion::Http11 => Protocol::H1,
            pb::HttpVersion::Http2 => Protocol::H2,
            pb::HttpVersion::HttpAuto if crate::rpc::is_grpc(rec) => Protocol::H2,
            pb::HttpVersion::HttpAuto if self.tls.is_none() => Protocol::H1,
            pb::HttpVersion::HttpAuto => match self.settled.load(Relaxed) {
                SETTLED_H1 => Protocol::H1,
                SETTLED_H2 => Protocol::H2,
                _ => Protocol::Negotiate,
            },
        }
    }

    /// Sends a record on the link's connection (opening one if there is none or it closed)
    /// and reads the whole response. Returns the status or the error kind; an error on the
    /// connection drops it (a record that cannot be sent does not). `sent` is the time of
    /// sending, read once by the caller: the idle check, the connection's last use and the
    /// timeout's deadline all start from it (each had read the clock of its own). Once `cut`
    /// is set, a request still waiting for its answer ends as "cancelled" when next polled.
    pub async fn exchange(
        &self,
        link: &mut Link,
        rec: &RecordView<'_>,
        sent: Instant,
        cut: &AtomicBool,
    ) -> Result<u16, ErrorKind> {
        self.exchange_keeping(link, rec, sent, cut, None).await
    }

    /// [`Target::exchange`], keeping what `keep` asks of the answer (response comparison);
    /// the answer is cleared first, so one that never came has status 0.
    pub async fn exchange_keeping(
        &self,
        link: &mut Link,
        rec: &RecordView<'_>,
        sent: Instant,
        cut: &AtomicBool,
        mut keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        if let Some((_, answer)) = &mut keep {
            answer.clear();
        }
        let protocol = self.protocol(rec);
        // The connect and TLS futures are boxed: inline they made this future thousands of
        // bytes, written on every request, though a connection that stays open never uses
        // them.
        let Link { h1, h2, head, timer } = link;
        let deadline: tokio::time::Instant = (sent + self.timeout).into();
        let timer = match timer {
            Some(t) => {
                if t.deadline() > deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let send = async {
            match protocol {
                Protocol::H1 => self.send_h1(h1, head, rec, sent, keep).await,
                Protocol::H2 => self.send_h2(h2, rec, keep).await,
                Protocol::Negotiate => {
                    if h1.as_mut().is_some_and(|c| c.usable(sent)) {
                        return self.send_h1(h1, head, rec, sent, keep).await;
                    }
                    if h2.as_ref().is_none_or(|c| !c.usable()) {
                        match Box::pin(self.negotiate()).await? {
                            Opened::H1(c) => *h1 = Some(c),
                            Opened::H2(c) => *h2 = Some(c),
                        }
                    }
                    match h2 {
                        Some(_) => self.send_h2(h2, rec, keep).await,
                        None => self.send_h1(h1, head, rec, sent, keep).await,
                    }
                }
            }
        };
        let outcome = {
            tokio::pin!(send);
            std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(done) => Poll::Ready(Some(done)),
                // The job was stopped and its grace for requests in flight is over.
                Poll::Pending if cut.load(Relaxed) => Poll::Ready(Some(Err(ErrorKind::Cancelled))),
                Poll::Pending => loop {
                    std::task::ready!(timer.as_mut().poll(cx));
                    if timer.deadline() >= deadline {
                        return Poll::Ready(None);
                    }
                    // It was set for an earlier exchange's deadline.
                    timer.as_mut().reset(deadline);
                },
            })
            .await
        };
        let answer = outcome.unwrap_or(Err(ErrorKind::Timeout));
        if answer.is_err() {
            // An HTTP/1.1 connection is out of step after a failed exchange; a shared HTTP/2
            // one is given up only when it is gone (a stream's failure is the stream's).
            if protocol != Protocol::H2 {
                *h1 = None;
            }
            if h2.as_ref().is_some_and(|c| !c.usable()) {
                *h2 = None;
            }
        }
        answer
    }

    /// An HTTP/1.1 exchange on the link's own connection.
    async fn send_h1(
        &self,
        conn: &mut Option<H1Conn>,
        head: &mut Vec<u8>,
        rec: &RecordView<'_>,
        sent: Instant,
        keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        let host = match (self.preserve_host, rec.host.is_empty()) {
            (true, false) => rec.host,
            _ => self.host.as_bytes(),
        };
        if let Err(why) = h1::write_head(head, rec, &self.prefix, host) {
            return unsendable(rec, &why);
        }
        if !conn.as_mut().is_some_and(|c| c.usable(sent)) {
            *conn = Some(Box::pin(self.connect_h1()).await?);
        }
        // invariant: set just above when it was not there.
        let Some(conn) = conn.as_mut() else { return Err(ErrorKind::Other) };
        conn.exchange(sent, head, rec.body, rec.method == b"HEAD", keep).await
    }

    /// An HTTP/2 exchange, on a stream of the link's shared connection; once more on a new
    /// connection when the first was closing and the request never left.
    async fn send_h2(
        &self,
        conn: &mut Option<H2>,
        rec: &RecordView<'_>,
        mut keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        let grpc = crate::rpc::is_grpc(rec);
        let head = match self.h2_head(rec, grpc) {
            Ok(head) => head,
            Err(why) => return unsendable(rec, &why),
        };
        let mut retried = false;
        loop {
            if !conn.as_ref().is_some_and(H2::usable) {
                *conn = Some(Box::pin(self.h2.take(|| self.connect_h2())).await?);
            }
            // invariant: set just above when it was not there.
            let Some(h2) = conn.as_ref() else { return Err(ErrorKind::Other) };
            let keep = keep.as_mut().map(|(k, a)| (*k, &mut **a));
            match h2.exchange(&head, rec.share(rec.body), keep).await {
                Ok(status) => return Ok(status),
                Err(Sent::Not(_)) if !retried => {
                    retried = true;
                    *conn = None;
                }
                Err(failed) => return Err(failed.kind()),
            }
        }
    }

    /// Opens the link's connection ahead of its first request; on failure the first request
    /// tries again (and counts the error). With `auto`, what a record that is not a gRPC
    /// call would take.
    pub async fn open(&self, link: &mut Link) {
        let open = async {
            match self.http {
                pb::HttpVersion::Http2 => link.h2 = Some(self.h2.take(|| self.connect_h2()).await?),
                pb::HttpVersion::HttpAuto if self.tls.is_some() => {
                    if self.settled.load(Relaxed) == SETTLED_H2 {
                        link.h2 = Some(self.h2.take(|| self.connect_h2()).await?);
                    } else {
                        match self.negotiate().await? {
                            Opened::H1(c) => link.h1 = Some(c),
                            Opened::H2(c) => link.h2 = Some(c),
                        }
                    }
                }
                _ => link.h1 = Some(self.connect_h1().await?),
            }
            Ok::<(), ErrorKind>(())
        };
        let _ = tokio::time::timeout(self.timeout, open).await;
    }

    /// A TCP connection to the target.
    async fn tcp(&self) -> Result<TcpStream, ErrorKind> {
        h1::connect_tcp(&self.authority).await.map_err(|e| kind_of(&e, true))
    }

    /// TLS over a new TCP connection, offering what `connector` offers.
    async fn tls(&self, tls: &Tls, connector: &TlsConnector) -> Result<TlsStream<TcpStream>, ErrorKind> {
        let tcp = self.tcp().await?;
        connector.connect(tls.name.clone(), tcp).await.map_err(|e| kind_of(&e, true))
    }

    /// Opens an HTTP/1.1 connection: plain, or TLS offering http/1.1 alone.
    async fn connect_h1(&self) -> Result<H1Conn, ErrorKind> {
        match &self.tls {
            None => Ok(H1Conn::Plain(H1::new(self.tcp().await?))),
            Some(tls) => Ok(H1Conn::Tls(Box::new(H1::new(self.tls(tls, &tls.h1).await?)))),
        }
    }

    /// Opens an HTTP/2 connection: h2c with prior knowledge, or TLS offering h2 alone.
    async fn connect_h2(&self) -> Result<H2, ErrorKind> {
        let Some(tls) = &self.tls else { return H2::handshake(Io::Plain(self.tcp().await?)).await };
        let stream = self.tls(tls, &tls.h2).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            if TLS_NO_H2_LOGGED.fetch_add(1, Relaxed) < 1 {
                tracing::warn!(
                    target = %self.authority,
                    "the target does not speak HTTP/2 over TLS (ALPN did not settle on h2); \
                     requests that need it count as errors of kind `tls`. Set \
                     `[replayer] http = \"1.1\"` or \"auto\" for this target"
                );
            }
            return Err(ErrorKind::Tls);
        }
        H2::handshake(Io::Tls(Box::new(stream))).await
    }

    /// Opens a TLS connection offering h2 and http/1.1, and takes what ALPN settles on for
    /// the links after it: an HTTP/2 connection goes to the shared pool.
    async fn negotiate(&self) -> Result<Opened, ErrorKind> {
        let Some(tls) = &self.tls else { return self.connect_h1().await.map(Opened::H1) };
        let stream = self.tls(tls, &tls.both).await?;
        if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            let h2 = H2::handshake(Io::Tls(Box::new(stream))).await?;
            self.settled.store(SETTLED_H2, Relaxed);
            self.h2.offer(&h2);
            Ok(Opened::H2(h2))
        } else {
            self.settled.store(SETTLED_H1, Relaxed);
            Ok(Opened::H1(H1Conn::Tls(Box::new(H1::new(stream)))))
        }
    }

    /// The record as an HTTP/2 request head: its method, the target's scheme and authority
    /// (or the recorded host with `preserve_host`), the prefix and recorded path (without a
    /// `#fragment`), its headers; `te: trailers` for a gRPC call.
    fn h2_head<'a, 'r>(&'a self, rec: &'a RecordView<'r>, grpc: bool) -> Result<Head<'a, 'r>, Unsendable> {
        let authority = match (self.preserve_host, rec.host.is_empty()) {
            (true, false) if is_authority(rec.host) => rec.host,
            (false, _) | (true, true) if self.h2_authority => self.host.as_bytes(),
            _ => return Err(Unsendable::Host),
        };
        if !is_token(rec.method) {
            return Err(Unsendable::Method);
        }
        let path = rec.path.split(|&b| b == b'#').next().unwrap_or_default();
        if self.prefix.is_empty() && !(path.is_empty() || path.starts_with(b"/") || path == b"*") {
            return Err(Unsendable::Path);
        }
        Ok(Head {
            method: rec.method,
            https: self.tls.is_some(),
            authority,
            prefix: self.prefix.as_bytes(),
            path,
            rec,
            grpc,
        })
    }
}

/// Bytes an authority (host and port) may hold.
const AUTHORITY_BYTE: [bool; 256] = reprise_proto::token::alphanumeric_and(b"-._~!$&'()*+,;=:[]%");

/// An authority (host and port) that can go in `:authority` as it is.
fn is_authority(a: &[u8]) -> bool {
    !a.is_empty() && a.iter().all(|&b| AUTHORITY_BYTE[usize::from(b)])
}

/// A connection ALPN settled.
enum Opened {
    H1(H1Conn),
    H2(H2),
}

/// Times the target was found not to speak h2 over TLS (logged once per process).
static TLS_NO_H2_LOGGED: AtomicU32 = AtomicU32::new(0);

/// Records that could not be written as a request, logged so far.
static UNSENDABLE_LOGGED: AtomicU32 = AtomicU32::new(0);
/// The first this many are logged (per replayer process); the rest are only counted.
const UNSENDABLE_LOG_MAX: u32 = 5;

/// A record that cannot be written as a request counts as an error of kind `other`; the
/// first few say which record and why, so an error count in the report has its reason.
fn unsendable(rec: &RecordView<'_>, why: &Unsendable) -> Result<u16, ErrorKind> {
    if UNSENDABLE_LOGGED.fetch_add(1, Relaxed) < UNSENDABLE_LOG_MAX {
        tracing::warn!(
            method = %String::from_utf8_lossy(rec.method).escape_debug(),
            path = %String::from_utf8_lossy(rec.path).escape_debug(),
            host = %String::from_utf8_lossy(rec.host).escape_debug(),
            "a record cannot be sent ({why}); it counts as an error of kind `other`. Fix or \
             filter it in the recording (only the first {UNSENDABLE_LOG_MAX} are logged)"
        );
    }
    Err(ErrorKind::Other)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::hpack;

    #[test]
    fn a_base_url_is_shown_without_user_info_and_bad_ones_are_refused() {
        assert_eq!(
            base_url("https://user:secret@staging.example.com:8443/api/").expect("valid"),
            "https://staging.example.com:8443/api"
        );
        assert_eq!(base_url("http://127.0.0.1:8080").expect("valid"), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://[::1]:8080").expect("valid"), "http://[::1]:8080");
        for bad in ["", "staging:8080", "ftp://x", "http://x/?q=1", "builtin:echo", "http://"] {
            assert!(base_url(bad).is_err(), "{bad:?} was taken");
        }
    }

    /// A link's one timer is moved to each exchange's deadline: answered requests before and
    /// after do not time out, one that gets no answer does, at its own deadline (not an
    /// earlier request's), and the next goes out on a new connection.
    #[tokio::test]
    async fn each_exchange_times_out_at_its_own_deadline_on_the_links_one_timer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicU32::new(0));
        let accepted = Arc::clone(&connections);
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                accepted.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        got.extend_from_slice(&buf[..n]);
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = got.drain(..end + 4).collect();
                            if head.starts_with(b"GET /hang") {
                                continue; // never answered
                            }
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                            if sock.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let cfg = pb::JobConfig { target: format!("http://{addr}"), timeout_ms: 300, ..Default::default() };
        let target = Target::new(&cfg).expect("plain");
        let records = crate::gets(["/a", "/b", "/hang", "/c"].map(|p| (p, 0)));
        let mut link = Link::default();
        let mut outcomes = Vec::new();
        for rec in &records {
            // Spaced so the hanging request's deadline is well after the first ones'.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let view = rec.view().expect("decodes");
            let sent = Instant::now();
            let outcome = target.exchange(&mut link, &view, sent, &AtomicBool::new(false)).await;
            outcomes.push((outcome, sent.elapsed()));
        }
        server.abort();
        let kinds: Vec<_> = outcomes.iter().map(|(o, _)| *o).collect();
        assert_eq!(kinds, [Ok(200), Ok(200), Err(ErrorKind::Timeout), Ok(200)]);
        let waited = outcomes[2].1;
        assert!(waited >= Duration::from_millis(300), "timed out early, after {waited:?}");
        assert_eq!(connections.load(Relaxed), 2, "a new connection after the timeout, none before");
    }

    #[test]
    fn paths_a_uri_refuses_are_percent_encoded() {
        let target = |path: &str| {
            let mut out = Vec::new();
            crate::request::push_target(&mut out, path.as_bytes());
            String::from_utf8(out).expect("ascii")
        };
        assert_eq!(target("/s?q=<x> y"), "/s?q=%3Cx%3E%20y");
        assert_eq!(target("/caf\u{e9}?a=%20"), "/caf%C3%A9?a=%20");
        assert_eq!(target("/a b|c{d}"), "/a%20b%7Cc%7Bd%7D");
        assert!(target("/a b|c{d}\"^`").parse::<Uri>().is_ok());
        assert_eq!(target("/users/1?x=a+b&y=%2F#f"), "/users/1?x=a+b&y=%2F#f");
    }

    /// An HTTP/2 request carries the target's authority (or the recorded host with
    /// `preserve_host`), the prefix and recorded path, the recorded headers in lower case
    /// but pseudo-headers and those of one connection, and `te: trailers` for gRPC.
    #[test]
    fn http2_requests_leave_out_pseudo_and_connection_headers() {
        use bytes::BytesMut;
        use reprise_proto::batch::{RecordRef, split};
        let headers: [(&[u8], &[u8]); 5] = [
            (b":authority", b"prod"),
            (b"Content-Type", b"application/grpc"),
            (b"Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"X-Tenant", b"a"),
        ];
        let mut encoded = BytesMut::new();
        RecordRef {
            due_offset_ns: 0,
            endpoint: 1,
            method: b"POST",
            path: b"/shop.Items/Get",
            headers: &headers,
            body: b"",
            host: b"prod:443",
            order_key: 0,
            expected: &[],
        }
        .write_to(&mut encoded);
        let batch = pb::RecordBatch { encoded: encoded.freeze(), count: 1 };
        let received = split(batch).expect("a record").remove(0);
        let rec = received.view().expect("view");
        let cfg = |preserve_host| pb::JobConfig {
            target: "http://staging:8080/api".into(),
            preserve_host,
            ..Default::default()
        };
        let fields = |preserve_host, grpc| {
            let target = Target::new(&cfg(preserve_host)).expect("target");
            let head = target.h2_head(&rec, grpc).expect("head");
            let block = crate::h2::tests::encoded(&head);
            let mut got = Vec::new();
            hpack::Decoder::default()
                .decode(&block, |n, v| {
                    got.push(format!("{}: {}", String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                })
                .expect("decodes");
            got
        };
        assert_eq!(
            fields(false, true),
            [
                ":method: POST",
                ":scheme: http",
                ":authority: staging:8080",
                ":path: /api/shop.Items/Get",
                "content-type: application/grpc",
                "x-tenant: a",
                "te: trailers",
            ]
        );
        let preserved = fields(true, false);
        assert_eq!(preserved[2], ":authority: prod:443");
        assert!(!preserved.iter().any(|f| f.starts_with("te:")), "only gRPC calls ask for trailers");
    }

    #[test]
    fn plain_targets_dial_host_and_port_and_keep_their_path_prefix() {
        let target = |url: &str| Target::new(&pb::JobConfig { target: url.into(), ..Default::default() });
        let t = target("http://[::1]:8080/base/").expect("valid");
        assert_eq!((t.authority.as_str(), t.prefix.as_str(), t.tls.is_none()), ("[::1]:8080", "/base", true));
        let t = target("http://example.test").expect("valid");
        assert_eq!((t.authority.as_str(), t.host.to_str().ok()), ("example.test:80", Some("example.test")));
        assert!(target("https://example.test").expect("valid").tls.is_some());
        assert!(target("ftp://example.test").is_err());
    }
}
