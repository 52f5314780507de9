//! The reverse proxy: accepts HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN over
//! TLS), forwards each request to the upstream in the same HTTP version (or the one
//! `--upstream-http` names), and streams the answer back as it comes. gRPC is HTTP/2 with
//! trailers, and passes as any other stream.
//!
//! HTTP/1.1's usual exchanges are forwarded as bytes by [`crate::h1`], which hands a
//! connection to hyper at the first request it does not take; hyper serves the rest and
//! HTTP/2. It already guards against what hostile clients send (head size and read time
//! limits, HTTP/2 flow control and stream limits). The proxy counts what it refuses, by
//! reason. Requests go up over HTTP/2 by [`crate::h2up`], over HTTP/1.1 by hyper's client.
//!
//! What passes is not changed: the method, path, headers (HTTP/1.1 names in their case),
//! body and trailers go up as they came, the status, headers, body and trailers come back
//! as they were sent. Only connection headers (`Connection`, `Keep-Alive`,
//! `Transfer-Encoding`, …), which belong to one hop, are each side's own; no `Date` is
//! added. HTTP/2 keeps the client's `:authority`: the proxy dials the upstream whatever
//! the URL names.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Recorder;
use crate::counters::Refusal;
use crate::dial::Dial;
use crate::exchange::Exchange;
use crate::tee::{Pending, Side, Tee};

/// The largest request head over HTTP/1.1, and header list over HTTP/2.
const MAX_HEAD: usize = 64 * 1024;
/// How many times a request without a body goes up over HTTP/2 while the upstream refuses
/// it unprocessed.
const H2_TRIES: usize = 4;
/// On shutdown, how long open exchanges may take to finish.
const DRAIN: Duration = Duration::from_secs(10);

type Answer = Response<BoxBody<Bytes, BoxError>>;

/// The HTTP version requests go up in (`--upstream-http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamHttp {
    /// The client's own.
    #[default]
    Same,
    /// HTTP/1.1 whatever the client speaks: the service behind knows no HTTP/2.
    Http1,
    /// HTTP/2 (h2c) whatever the client speaks.
    Http2,
}

impl UpstreamHttp {
    /// The version a request that came in `client`'s goes up in.
    pub fn of(self, client: Version) -> Version {
        match self {
            UpstreamHttp::Same if client == Version::HTTP_2 => Version::HTTP_2,
            UpstreamHttp::Same | UpstreamHttp::Http1 => Version::HTTP_11,
            UpstreamHttp::Http2 => Version::HTTP_2,
        }
    }
}

/// Where requests go, and how they get there: each client connection over its own upstream
/// connection ([`Link`]) in the client's HTTP version, or, when HTTP/2's streams go up
/// over HTTP/1.1, over connections a thread's clients share ([`Upstream::idle`]).
pub struct Upstream {
    /// `http://host:port`, as given.
    base: Uri,
    pub dial: Dial,
    pub http: UpstreamHttp,
    h1: http1::Builder,
    /// HTTP/1.1 connections HTTP/2 streams went up on, each taken by one request at a
    /// time. A stream takes one that is ready, else dials another: a client's streams are
    /// as concurrent upstream as they were on its connection.
    idle: std::sync::Mutex<Vec<http1::SendRequest<Tee>>>,
}

/// The most HTTP/1.1 connections [`Upstream::idle`] keeps, on each thread; a connection
/// past them closes once its exchange is done.
const MAX_POOLED: usize = 1024;

/// A client connection's upstream connection, dialled at its first request and again when
/// the upstream has closed it. Pairing them costs no pool: no lock shared by every
/// connection, no task handing each request over; a pool's sharing of idle connections is
/// worth little when each client connection already holds one open. Over HTTP/1.1 a
/// connection takes one request at a time on both sides; over HTTP/2 the upstream
/// connection carries the client's concurrent streams.
#[derive(Default)]
pub struct Link {
    h1: std::sync::Mutex<Option<http1::SendRequest<Tee>>>,
    h2: tokio::sync::Mutex<Option<h2::client::SendRequest<Bytes>>>,
}

use crate::h2up::{self, BoxError};

impl Upstream {
    /// A plain HTTP upstream (`http://HOST:PORT`).
    pub fn new(base: Uri, http: UpstreamHttp) -> Upstream {
        let authority = base.authority().map_or_else(String::new, |a| {
            if a.port().is_some() { a.to_string() } else { format!("{}:80", a.host()) }
        });
        let dial = Dial(Arc::from(authority));
        let mut h1 = http1::Builder::new();
        h1.preserve_header_case(true);
        Upstream { base, dial, http, h1, idle: std::sync::Mutex::default() }
    }

    /// Makes a request's head one to send in `version`. Over HTTP/2 the URI is the
    /// client's own (its `:authority` kept), or the path with the client's `Host` as its
    /// authority (the upstream's when it sent none); over HTTP/1.1 the path alone (origin
    /// form), with the client's `:authority` as `Host` when it came over HTTP/2.
    fn convert(&self, head: &mut http::request::Parts, version: Version) {
        let path = head.uri.path_and_query().cloned();
        if version != Version::HTTP_2 {
            if let Some(authority) = head.uri.authority()
                && !head.headers.contains_key(header::HOST)
                && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
            {
                head.headers.insert(header::HOST, host);
            }
            head.uri = path.map_or_else(|| Uri::from_static("/"), Uri::from);
        } else if head.uri.authority().is_none() {
            let mut parts = self.base.clone().into_parts();
            if let Some(host) = head.headers.remove(header::HOST)
                && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
            {
                parts.authority = Some(authority);
            }
            parts.path_and_query = path;
            head.uri = Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone());
        }
        // HTTP/1.0 and 1.1 go up as they came.
        if (head.version == Version::HTTP_2) != (version == Version::HTTP_2) {
            head.version = version;
        }
    }

    /// Sends an HTTP/2 stream's request over HTTP/1.1, on a connection of
    /// [`Upstream::idle`] that is ready or on a new one.
    async fn send_h1_pooled(&self, req: Request<Tee>) -> Result<Response<Incoming>, BoxError> {
        let sender = match self.take_ready() {
            Some(s) => s,
            None => self.connect_h1().await?,
        };
        let (sender, answer) = self.send_h1_on(sender, req).await?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_POOLED {
            idle.push(sender);
        }
        Ok(answer)
    }

    /// A pooled connection ready for a request; those the upstream closed are let go.
    fn take_ready(&self) -> Option<http1::SendRequest<Tee>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|s| !s.is_closed());
        let ready = idle.iter().rposition(http1::SendRequest::is_ready)?;
        Some(idle.swap_remove(ready))
    }

    /// Sends an HTTP/1.1 request on `link`'s connection. One the upstream closed (its
    /// keep-alive ended) takes no request; the request goes on a new one then, as it was
    /// not sent.
    async fn send_h1(&self, link: &Link, req: Request<Tee>) -> Result<Response<Incoming>, BoxError> {
        let held = link.h1.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut sender = match held {
            Some(s) if !s.is_closed() => s,
            _ => self.connect_h1().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect_h1().await?;
        }
        let (sender, answer) = self.send_h1_on(sender, req).await?;
        *link.h1.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        Ok(answer)
    }

    /// Sends `req` on `sender`'s connection, or on a new one when that one had closed and
    /// handed the request back unsent; returns the connection it went on.
    async fn send_h1_on(
        &self,
        mut sender: http1::SendRequest<Tee>,
        req: Request<Tee>,
    ) -> Result<(http1::SendRequest<Tee>, Response<Incoming>), BoxError> {
        match sender.try_send_request(req).await {
            Ok(answer) => Ok((sender, answer)),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    let mut sender = self.connect_h1().await?;
                    let answer = sender.send_request(req).await?;
                    Ok((sender, answer))
                }
                None => Err(e.into_error().into()),
            },
        }
    }

    /// Sends an HTTP/2 request on `link`'s connection, dialled when it has none open or
    /// the one it had closed (the upstream went away) before the request was sent. A
    /// request without a body that the upstream refused unprocessed ([`h2up::refused`])
    /// goes again on a new connection, up to [`H2_TRIES`] times in all (a new connection
    /// may take fewer streams than are waiting); one with a body has sent it, and is
    /// answered 502.
    async fn send_h2(&self, link: &Link, req: Request<Tee>) -> Result<Response<h2up::Answer>, BoxError> {
        let (head, body) = req.into_parts();
        let head = Request::from_parts(head, ());
        let again = hyper::body::Body::is_end_stream(&body).then(|| h2up::copy(&head));
        let mut answer = h2up::send(&mut self.h2_ready(link).await?, head, body).await;
        if let Some(head) = again {
            for _ in 1..H2_TRIES {
                match answer {
                    Err(e) if h2up::refused(&e) => {
                        let empty = http_body_util::Empty::<Bytes>::new();
                        answer = h2up::send(&mut self.h2_ready(link).await?, h2up::copy(&head), empty).await;
                    }
                    _ => break,
                }
            }
        }
        answer
    }

    /// `link`'s HTTP/2 connection once it may open a stream (the upstream's limit of
    /// streams at once allowing).
    async fn h2_ready(&self, link: &Link) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
        match self.h2_sender(link).await?.ready().await {
            Ok(sender) => Ok(sender),
            Err(_) => Ok(self.h2_sender(link).await?.ready().await?),
        }
    }

    /// `link`'s HTTP/2 connection, a new one when it has none open.
    async fn h2_sender(&self, link: &Link) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
        let mut held = link.h2.lock().await;
        // Polled without a waker: whether it failed (it closed), not whether it is ready.
        let open = held.as_mut().is_some_and(|s| {
            !matches!(s.poll_ready(&mut Context::from_waker(Waker::noop())), Poll::Ready(Err(_)))
        });
        if !open {
            *held = Some(h2up::handshake(self.dial.connect().await?, MAX_HEAD as u32).await?);
        }
        Ok(held.clone().expect("a connection held"))
    }

    /// A new HTTP/1.1 connection to the upstream, driven by a task of its own.
    async fn connect_h1(&self) -> Result<http1::SendRequest<Tee>, BoxError> {
        let (sender, conn) = self.h1.handshake(TokioIo::new(self.dial.connect().await?)).await?;
        drive(conn);
        Ok(sender)
    }
}

/// Drives an upstream connection until it ends.
fn drive<F: Future<Output = hyper::Result<()>> + Send + 'static>(conn: F) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
}

/// What a connection's requests share.
pub struct Shared {
    pub upstream: Upstream,
    pub recorder: Arc<Recorder>,
}

/// How the proxy listens, on each of its threads.
#[derive(Clone)]
pub struct Listen {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Open client connections, over every thread (`--max-connections`).
    pub slots: Arc<Semaphore>,
    /// How long a client may take to send a request's head (slowloris is refused after it).
    pub header_timeout: Duration,
}

/// A listening socket others may bind to as well (`SO_REUSEPORT`): each thread of the
/// proxy has its own, and the kernel shares connections out between them.
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves on `threads` threads, each a single-threaded runtime with its own listener on
/// `first`'s address, its own upstream connections and its connections' tasks: a request
/// and its upstream call wake each other on one thread, never across threads (with one
/// runtime of several workers, those wake-ups took about a fifth of the proxy's CPU).
/// Returns once every thread has drained.
pub async fn serve_threads(
    first: TcpListener,
    threads: usize,
    listen: Listen,
    (base, http): (Uri, UpstreamHttp),
    recorder: Arc<Recorder>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let addr = first.local_addr()?;
    let mut first = Some(first.into_std()?);
    let mut done = Vec::new();
    for i in 0..threads.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let std = first.take();
        let (listen, base, recorder, cancel) =
            (listen.clone(), base.clone(), Arc::clone(&recorder), cancel.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        std::thread::Builder::new().name(format!("record-{i}")).spawn(move || {
            let served = runtime.block_on(async move {
                let listener = match std {
                    Some(l) => TcpListener::from_std(l)?,
                    None => listener(addr)?,
                };
                serve(listener, listen, Upstream::new(base, http), recorder, cancel).await;
                Ok(())
            });
            let _ = tx.send(served);
        })?;
        done.push(rx);
    }
    for rx in done {
        rx.await.unwrap_or(Ok(()))?;
    }
    Ok(())
}

/// Serves clients until `cancel`, then lets open exchanges finish (up to [`DRAIN`]).
async fn serve(
    listener: TcpListener,
    listen: Listen,
    upstream: Upstream,
    recorder: Arc<Recorder>,
    cancel: CancellationToken,
) {
    let counters = Arc::clone(&recorder.counters);
    let shared = Arc::new(Shared { upstream, recorder });
    let server = Arc::new(hyper_server(listen.header_timeout));
    let slots = listen.slots;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tracker = TaskTracker::new();
    // Cancelled when open exchanges took longer than [`DRAIN`] to finish.
    let force = CancellationToken::new();
    loop {
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            counters.refuse(Refusal::TooManyConnections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = Client {
            server: Arc::clone(&server),
            shared: Arc::clone(&shared),
            watcher: graceful.watcher(),
            header_timeout: listen.header_timeout,
            cancel: cancel.clone(),
        };
        let (counters, tls, force) = (Arc::clone(&counters), listen.tls.clone(), force.clone());
        tracker.spawn(async move {
            counters.connections.fetch_add(1, Relaxed);
            let served = tokio::select! {
                served = client.accept(stream, tls, &counters) => served,
                _ = force.cancelled() => Ok(()),
            };
            if let Err(e) = served
                && let Some(r) = Refusal::of(&*e)
            {
                counters.refuse(r);
            }
            counters.connections.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    tracker.close();
    let drained = async {
        graceful.shutdown().await;
        tracker.wait().await;
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!("exchanges still open after {DRAIN:?}: closing them");
        force.cancel();
        tracker.wait().await;
    }
}

/// hyper's server for what [`crate::h1`] hands over, and for HTTP/2: heads up to
/// [`MAX_HEAD`], nothing added to answers.
fn hyper_server(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD.max(8192))
        .preserve_header_case(true)
        .auto_date_header(false);
    server.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD as u32).auto_date_header(false);
    server
}

/// What serves one client connection.
struct Client {
    server: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
    /// The proxy is stopping: [`crate::h1`] closes between exchanges.
    cancel: CancellationToken,
}

impl Client {
    /// Serves a client connection, over TLS when `tls` (h2 or HTTP/1.1 as ALPN chose).
    async fn accept(
        self,
        stream: TcpStream,
        tls: Option<tokio_rustls::TlsAcceptor>,
        counters: &crate::Counters,
    ) -> Result<(), BoxError> {
        let Some(acceptor) = tls else {
            return self.serve(stream, true).await;
        };
        match acceptor.accept(stream).await {
            Ok(s) => {
                let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve(s, !h2).await
            }
            Err(_) => {
                counters.refuse(Refusal::Tls);
                Ok(())
            }
        }
    }

    /// Serves HTTP/1.1 by [`crate::h1`] when `h1` (until a request it hands to hyper),
    /// and the rest, or HTTP/2, by hyper.
    async fn serve<IO>(self, mut io: IO, h1: bool) -> Result<(), BoxError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let read = if h1 && self.shared.upstream.http != UpstreamHttp::Http2 {
            let shared = &self.shared;
            match crate::h1::serve(
                &mut io,
                &shared.recorder,
                &shared.upstream.dial,
                self.header_timeout,
                &self.cancel,
            )
            .await
            {
                crate::h1::Served::Closed => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                    return Ok(());
                }
                crate::h1::Served::Handoff(read) => read,
            }
        } else {
            Bytes::new()
        };
        let (shared, link) = (self.shared, Arc::new(Link::default()));
        // Boxed: over HTTP/2 each stream's future is a task of its own, which tokio copies
        // whole as it spawns and ends it, and this one is about 3 KiB.
        let service = hyper::service::service_fn(move |req| {
            Box::pin(handle(Arc::clone(&shared), Arc::clone(&link), req))
        });
        let io = TokioIo::new(crate::h1::Rewind::new(read, io));
        self.watcher.watch(self.server.serve_connection(io, service).into_owned()).await
    }
}

/// Forwards one request, recording it if it is sampled.
async fn handle(shared: Arc<Shared>, link: Arc<Link>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let recorder = &shared.recorder;
    recorder.counters.exchanges.fetch_add(1, Relaxed);
    let (mut parts, body) = req.into_parts();
    let kept = match recorder.filter.as_ref().and_then(|f| f.denies(&parts)) {
        Some(rule) => {
            recorder.counters.count_filtered(rule);
            false
        }
        None if !recorder.sample.keeps(&parts.headers) => {
            recorder.counters.sampled_out.fetch_add(1, Relaxed);
            false
        }
        None => true,
    };
    let pending = kept.then(|| {
        Pending::new(Exchange::new(SystemTime::now(), &parts, recorder.keep()), Arc::clone(recorder))
    });
    let upstream = &shared.upstream;
    let (version, up_version) = (parts.version, upstream.http.of(parts.version));
    upstream.convert(&mut parts, up_version);
    strip_hop_headers(&mut parts.headers, up_version == Version::HTTP_2);
    let up = Request::from_parts(parts, Tee::new(body, Side::Request, pending.clone()));
    let passed = match (version, up_version) {
        (_, Version::HTTP_2) => upstream.send_h2(&link, up).await.map(|a| pass(a, &pending, version)),
        (Version::HTTP_2, _) => upstream.send_h1_pooled(up).await.map(|a| pass(a, &pending, version)),
        _ => upstream.send_h1(&link, up).await.map(|a| pass(a, &pending, version)),
    };
    match passed {
        Ok(answer) => Ok(answer),
        Err(e) => {
            recorder.counters.upstream_errors.fetch_add(1, Relaxed);
            let why = format!("the upstream did not answer: {}", reprise_proto::error_chain(&*e));
            tracing::warn!(error = %why, "upstream error");
            if let Some(p) = &pending {
                p.failed(why.clone());
            }
            let mut bad = Response::new(
                Full::new(Bytes::from(format!("reprise record: {why}\n"))).map_err(|n| match n {}).boxed(),
            );
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(bad)
        }
    }
}

/// The upstream's answer as it goes back to a client speaking `version`, its head recorded
/// in `pending` and its body copied there as it passes.
fn pass<B>(answer: Response<B>, pending: &Option<Arc<Pending>>, version: Version) -> Answer
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = answer.into_parts();
    if let Some(p) = pending {
        p.answered(parts.status.as_u16(), &parts.headers);
    }
    strip_hop_headers(&mut parts.headers, version == Version::HTTP_2);
    parts.version = version;
    Response::from_parts(parts, Tee::new(body, Side::Answer, pending.clone()).map_err(Into::into).boxed())
}

/// Headers of one hop, which each side of the proxy sets for itself (RFC 9110 7.6.1).
/// The others keep their order (`HeaderMap::remove` would move the last one into the gap).
fn strip_hop_headers(headers: &mut HeaderMap, http2: bool) {
    // HTTP/2 allows `te: trailers` only, which gRPC needs.
    let hop = |name: &HeaderName, value: &http::HeaderValue| match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" => true,
        "te" => !http2 || value != "trailers",
        _ => false,
    };
    // Most requests have none: one pass over the names as hyper parsed them. The names
    // `Connection` lists matter only when it is there, and it is one of them.
    if !headers.iter().any(|(n, v)| hop(n, v)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // The usual options, which name no header (or one stripped all the same).
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    let all = std::mem::replace(headers, HeaderMap::with_capacity(headers.len()));
    let mut name = None;
    for (n, value) in all {
        // invariant: the first value of each name comes with it.
        name = n.or(name);
        if let Some(n) = &name
            && !hop(n, &value)
            && !listed.contains(n)
        {
            headers.append(n.clone(), value);
        }
    }
}
