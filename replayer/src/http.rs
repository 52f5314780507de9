//! The target, and a connection's link to it. Each of the executor's connection futures owns
//! one keep-alive connection (opened on first use, again after an error), so requests need no
//! shared pool: no lock, no hash lookup, no task per request (as oha does it). Plain HTTP goes through
//! [`crate::h1`] (heads written straight from the record); HTTPS through hyper.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::future::Future as _;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use reprise_proto::batch::RecordView;
use reprise_proto::pb;
use tokio::time::Sleep;
use tower_service::Service as _;

use crate::answer::{Answer, Keep};
use crate::errors::{ErrorKind, kind_of};
use crate::h1::{self, IDLE_CHECK, Plain, Unsendable};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}` is not an http(s) base URL with a host")]
    BadTarget(String),
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

type Io = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// A connection's side of the target: the connection, the buffer it writes request heads
/// in, and its timer.
#[derive(Default)]
pub struct Link {
    conn: Option<Conn>,
    head: Vec<u8>,
    /// Each exchange's deadline. One timer per link, moved to each new deadline: a later
    /// deadline is a single atomic update in tokio (the entry stays in the timer wheel and is
    /// re-filed when the earlier one comes due), where a `timeout` per request inserted and
    /// removed a wheel entry each time.
    timer: Option<Pin<Box<Sleep>>>,
}

enum Conn {
    Plain(Plain),
    Tls(Box<TlsConn>),
}

impl Conn {
    fn usable(&mut self, now: Instant) -> bool {
        match self {
            Conn::Plain(c) => c.usable(now),
            Conn::Tls(c) => c.usable(now),
        }
    }
}

/// One HTTPS connection, driven by the future that owns it: that future polls the connection
/// while it waits for its response, instead of a spawned task doing the I/O and handing
/// results across tasks (two wake-ups fewer per request).
struct TlsConn {
    sender: SendRequest<Full<Bytes>>,
    connection: http1::Connection<Io, Full<Bytes>>,
    /// The connection future has completed (e.g. after `Connection: close`).
    ended: bool,
    last_used: Instant,
}

impl TlsConn {
    /// Sends `req` and reads the whole answer, keeping what `keep` asks of it.
    async fn send(
        &mut self,
        now: Instant,
        req: Request<Full<Bytes>>,
        mut keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        let TlsConn { sender, connection, ended, last_used } = self;
        *last_used = now;
        drive(connection, ended, sender.ready()).await?.map_err(|e| kind_of(&e, false))?;
        let resp =
            drive(connection, ended, sender.send_request(req)).await?.map_err(|e| kind_of(&e, false))?;
        let status = resp.status().as_u16();
        // A response that closes its connection: the next request opens a new one.
        let closes = resp.version() == http::Version::HTTP_10
            || resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if let Some((keep, answer)) = keep.as_mut() {
            answer.clear();
            answer.status = status;
            let pairs: Vec<(&str, &[u8])> =
                resp.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
            answer.take_headers(keep, pairs.iter().copied());
        }
        // The body is read frame by frame and let go, as `h1` reads it: a connection holds
        // at most `max_body` of it (what an answer keeps), whatever its size.
        let mut body = resp.into_body();
        while let Some(frame) = drive(connection, ended, body.frame()).await? {
            let frame = frame.map_err(|_| ErrorKind::Body)?;
            if let (Some((keep, answer)), Some(data)) = (keep.as_mut(), frame.data_ref()) {
                answer.take_body(keep, data);
            }
        }
        *ended |= closes;
        Ok(status)
    }

    /// Whether the connection can take another request. One that sat idle is polled once, so
    /// a target that closed it meanwhile (idle timeout) is noticed before a request is written
    /// into a dead socket; a busy one is not (that poll would cost a syscall per request).
    fn usable(&mut self, now: Instant) -> bool {
        if self.ended || self.sender.is_closed() {
            return false;
        }
        if now.saturating_duration_since(self.last_used) < IDLE_CHECK {
            return true;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        !std::pin::Pin::new(&mut self.connection).poll(&mut cx).is_ready()
    }
}

/// Runs `fut` to its end while driving the connection's I/O. The connection may end in the
/// same poll that completes `fut`, or before a later step of the same exchange (a response
/// with `Connection: close`: head, then body), so once it has ended `fut` is looked at once
/// more before that counts as an error.
async fn drive<T>(
    connection: &mut http1::Connection<Io, Full<Bytes>>,
    done: &mut bool,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ErrorKind> {
    tokio::pin!(fut);
    let ended = if *done {
        Ok(())
    } else {
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            ended = connection => ended,
        }
    };
    *done = true;
    // What the connection delivered before it ended is there to take.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(match ended {
            Ok(()) => ErrorKind::Reset,
            Err(e) => kind_of(&e, false),
        }),
    }
}

/// Where requests go, and how connections to it are made.
#[derive(Clone, Debug)]
pub struct Target {
    /// scheme://authority, what the HTTPS connector dials.
    origin: Uri,
    /// The target's authority (host:port), what plain connections dial.
    authority: String,
    /// Plain HTTP (through [`crate::h1`]) rather than HTTPS (through hyper).
    plain: bool,
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
        let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
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
            authority: format!("{}:{port}", authority.host()),
            plain: scheme == "http",
            host,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            connector,
            timeout,
            preserve_host: cfg.preserve_host,
        })
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
        let request = if self.plain {
            let host = match (self.preserve_host, rec.host.is_empty()) {
                (true, false) => rec.host,
                _ => self.host.as_bytes(),
            };
            h1::write_head(&mut link.head, rec, &self.prefix, host).map(|()| None)
        } else {
            self.request(rec).map(|r| Some(Box::new(r)))
        };
        let request = match request {
            Ok(r) => r,
            Err(why) => return unsendable(rec, &why),
        };
        // The connect and TLS futures (and the TLS request) are boxed: inline they made this
        // future 2,960 bytes, written on every request, though a plain connection that stays
        // open never uses them.
        let Link { conn, head, timer } = link;
        let deadline = (sent + self.timeout).into();
        let timer = match timer {
            Some(t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let send = async {
            if !conn.as_mut().is_some_and(|c| c.usable(sent)) {
                *conn = Some(Box::pin(self.connect()).await?);
            }
            match (conn.as_mut(), request) {
                (Some(Conn::Plain(c)), None) => match keep {
                    None => c.exchange(sent, head, rec.body, rec.method == b"HEAD").await,
                    Some((keep, answer)) => {
                        c.exchange_keeping(sent, head, rec.body, rec.method == b"HEAD", keep, answer).await
                    }
                },
                (Some(Conn::Tls(c)), Some(req)) => Box::pin(c.send(sent, *req, keep)).await,
                // invariant: the connection was opened just above, of the target's kind.
                _ => Err(ErrorKind::Other),
            }
        };
        let outcome = {
            tokio::pin!(send);
            std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(done) => Poll::Ready(Some(done)),
                // The job was stopped and its grace for requests in flight is over.
                Poll::Pending if cut.load(Relaxed) => Poll::Ready(Some(Err(ErrorKind::Cancelled))),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await
        };
        let answer = outcome.unwrap_or(Err(ErrorKind::Timeout));
        if answer.is_err() {
            *conn = None;
        }
        answer
    }

    /// Opens the link's connection ahead of its first request; on failure the first request
    /// tries again (and counts the error).
    pub async fn open(&self, link: &mut Link) {
        if let Ok(Ok(conn)) = tokio::time::timeout(self.timeout, self.connect()).await {
            link.conn = Some(conn);
        }
    }

    /// Opens a connection to the target.
    async fn connect(&self) -> Result<Conn, ErrorKind> {
        if self.plain {
            return Plain::connect(&self.authority).await.map(Conn::Plain).map_err(|e| kind_of(&e, true));
        }
        let io =
            self.connector.clone().call(self.origin.clone()).await.map_err(|e| kind_of(e.as_ref(), true))?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| kind_of(&e, true))?;
        Ok(Conn::Tls(Box::new(TlsConn { sender, connection, ended: false, last_used: Instant::now() })))
    }

    /// The record as a request to the target: its method, path, query, headers and body;
    /// the target's host (or the recorded one with `preserve_host`).
    fn request(&self, rec: &RecordView<'_>) -> Result<Request<Full<Bytes>>, Unsendable> {
        let mut target = Vec::with_capacity(self.prefix.len() + rec.path.len());
        h1::push_target(&mut target, self.prefix.as_bytes());
        h1::push_target(&mut target, rec.path);
        let uri = Uri::try_from(target).map_err(|_| Unsendable::Path)?;
        let mut req = Request::builder()
            .method(rec.method)
            .uri(uri)
            .body(Full::new(rec.share(rec.body)))
            .map_err(|_| Unsendable::Method)?;
        let headers = req.headers_mut();
        for (name, value) in rec.headers() {
            if h1::is_hop_by_hop(name) {
                continue;
            }
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(name), HeaderValue::from_maybe_shared(rec.share(value)))
            {
                // `append` panics past the map's capacity (32,768); the dispatcher caps
                // headers far below, and a record that still overflows is not sent.
                headers.try_append(n, v).map_err(|_| Unsendable::Headers)?;
            }
        }
        let host = match (self.preserve_host, rec.host.is_empty()) {
            (true, false) => HeaderValue::from_bytes(rec.host).map_err(|_| Unsendable::Host)?,
            _ => self.host.clone(),
        };
        headers.insert(http::header::HOST, host);
        Ok(req)
    }
}

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
            h1::push_target(&mut out, path.as_bytes());
            String::from_utf8(out).expect("ascii")
        };
        assert_eq!(target("/s?q=<x> y"), "/s?q=%3Cx%3E%20y");
        assert_eq!(target("/caf\u{e9}?a=%20"), "/caf%C3%A9?a=%20");
        assert_eq!(target("/a b|c{d}"), "/a%20b%7Cc%7Bd%7D");
        assert!(target("/a b|c{d}\"^`").parse::<Uri>().is_ok());
        assert_eq!(target("/users/1?x=a+b&y=%2F#f"), "/users/1?x=a+b&y=%2F#f");
    }

    #[test]
    fn plain_targets_dial_host_and_port_and_keep_their_path_prefix() {
        let target = |url: &str| Target::new(&pb::JobConfig { target: url.into(), ..Default::default() });
        let t = target("http://[::1]:8080/base/").expect("valid");
        assert_eq!((t.authority.as_str(), t.prefix.as_str(), t.plain), ("[::1]:8080", "/base", true));
        let t = target("http://example.test").expect("valid");
        assert_eq!((t.authority.as_str(), t.host.to_str().ok()), ("example.test:80", Some("example.test")));
        assert!(!target("https://example.test").expect("valid").plain);
        assert!(target("ftp://example.test").is_err());
    }
}
