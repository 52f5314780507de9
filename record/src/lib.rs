//! `reprise record`: a capture proxy. It sits in front of a service where TLS and HTTP/2
//! are already terminated by it, forwards every exchange unchanged, and writes each one as
//! a json record with its answer, the recording a replay reads.
//!
//! # Layout
//! - [`proxy`]: the listener and the forwarding (HTTP/1.1, h2c, h2 over TLS, gRPC); [`h1`]:
//!   HTTP/1.1's common exchanges, forwarded as bytes; [`dial`]: connections to the upstream.
//! - [`tee`]: bodies copied as they stream through; an exchange is recorded once both
//!   its bodies have ended.
//! - [`exchange`]: an exchange and its json line.
//! - [`privacy`]: sampling and redaction, at capture time.
//! - [`sink`]: the queue bounded in bytes, and its writer to a file or a Kafka topic.
//! - [`counters`]: what is counted, and `/metrics`; [`probes`] serves it.
//!
//! The proxy never waits for the recording: an exchange the sink cannot take is dropped
//! and counted by reason, and the client has its answer all the same.

pub mod counters;
mod dial;
pub mod exchange;
mod h1;
mod h2up;
pub mod privacy;
mod probes;
mod proxy;
pub mod sink;
mod tee;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderName, Uri};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

pub use counters::{Counters, DropReason, Refusal};
pub use privacy::{REDACT_KEY_VAR, Redact, Sample};
pub use proxy::UpstreamHttp;
pub use sink::{FileSink, KafkaSink, Sink};

/// Leaves exchanges out of the recording by their request's head (`--filter`: the
/// `[[filter]]` rules of a job file). What is left out is forwarded all the same.
pub trait HeadFilter: Send + Sync + std::fmt::Debug {
    /// The rules' names, by index (`reprise_record_filtered_total{rule}`).
    fn names(&self) -> Vec<String>;
    /// The index of the rule that leaves this request out, if one does.
    fn denies(&self, head: &http::request::Parts) -> Option<usize>;
}

/// What a recording proxy is told (`reprise record`'s flags, checked).
#[derive(Debug)]
pub struct RecordOptions {
    pub listen: SocketAddr,
    /// `http://HOST:PORT`.
    pub upstream: Uri,
    /// The HTTP version requests go up in.
    pub upstream_http: proxy::UpstreamHttp,
    pub sink: Sink,
    /// Bodies are kept up to this many bytes each.
    pub max_body: usize,
    /// The sink's queue holds at most this many bytes.
    pub queue_bytes: u64,
    pub sample: Sample,
    pub redact: Option<Redact>,
    pub filter: Option<Box<dyn HeadFilter>>,
    /// Serve h2 and HTTP/1.1 over TLS with this certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    /// Threads that serve clients, each with its own connections.
    pub threads: usize,
    /// How long a client may take to send a request's head.
    pub header_timeout: std::time::Duration,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    pub probes: Option<SocketAddr>,
}

/// Why a recording proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("--listen {addr}: cannot listen: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("--http {addr}: cannot listen: {source}")]
    Probes { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the recording: {0} (check that --out's folder exists and is writable)")]
    Sink(std::io::Error),
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(String),
}

/// What the proxy's connections share to record with.
pub(crate) struct Recorder {
    pub queue: sink::Queue,
    pub filter: Option<Box<dyn HeadFilter>>,
    pub sample: Sample,
    pub redact: Option<Redact>,
    /// The sink's key header (`--kafka-key`), taken as each request is captured.
    pub key: Option<HeaderName>,
    pub max_body: usize,
    pub counters: Arc<Counters>,
}

impl Recorder {
    /// What is kept of headers as they are captured.
    pub fn keep(&self) -> exchange::Keep<'_> {
        exchange::Keep { redact: self.redact.as_ref(), key: self.key.as_ref() }
    }
}

/// The addresses a started proxy is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub proxy: SocketAddr,
    pub probes: Option<SocketAddr>,
}

/// Starts the proxy; `bound` is told its addresses once it listens. Returns after
/// `cancel`, once open exchanges have finished and every recorded one is written.
pub async fn run(
    opts: RecordOptions,
    cancel: CancellationToken,
    bound: impl FnOnce(Bound),
) -> Result<Arc<Counters>, RecordError> {
    let tls = opts.tls.as_ref().map(|(cert, key)| acceptor(cert, key)).transpose()?;
    let rules = opts.filter.as_ref().map(|f| f.names()).unwrap_or_default();
    let counters = Arc::new(Counters::with_rules(rules));
    let listen_error = |source| RecordError::Listen { addr: opts.listen, source };
    let listener = proxy::listener(opts.listen).map_err(listen_error)?;
    let proxy = listener.local_addr().map_err(listen_error)?;
    let probes = match opts.probes {
        Some(addr) => Some(
            probes::start(addr, Arc::clone(&counters), cancel.child_token())
                .await
                .map_err(|source| RecordError::Probes { addr, source })?,
        ),
        None => None,
    };
    let key = match &opts.sink {
        Sink::Kafka(k) => k.key.clone(),
        Sink::File(_) => None,
    };
    let (queue, writer) =
        sink::start(opts.sink, opts.queue_bytes, Arc::clone(&counters)).map_err(RecordError::Sink)?;
    let recorder = Arc::new(Recorder {
        queue,
        filter: opts.filter,
        sample: opts.sample,
        redact: opts.redact,
        key,
        max_body: opts.max_body,
        counters: Arc::clone(&counters),
    });
    bound(Bound { proxy, probes: probes.as_ref().map(|p| p.addr) });
    let listen = proxy::Listen {
        tls,
        slots: Arc::new(tokio::sync::Semaphore::new(opts.max_connections)),
        header_timeout: opts.header_timeout,
    };
    let served = proxy::serve_threads(
        listener,
        opts.threads,
        listen,
        (opts.upstream, opts.upstream_http),
        recorder,
        cancel,
    )
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the proxy's threads could not all serve");
    }
    // The recorder's last holders were the connections: the queue closes with it, and
    // the writer ends after the last line. An upstream that never reads a request body
    // could hold its exchange, and a stalled file the writer: it is waited for on a thread
    // of its own, which a process that exits leaves behind (a runtime's blocking task
    // would hold the exit), and not for ever.
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        writer.finish();
        let _ = done.send(());
    });
    if tokio::time::timeout(std::time::Duration::from_secs(5), finished).await.is_err() {
        tracing::warn!("the recording's last exchanges did not finish in 5 s: exiting without them");
    }
    if let Some(p) = probes {
        p.stop().await;
    }
    Ok(counters)
}

/// A TLS acceptor offering h2 and HTTP/1.1 by ALPN.
fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, RecordError> {
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        RecordError::Tls(format!("{}: {e}", what.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RecordError::Tls(format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Parses `--redact` names and `--sample-key`.
pub fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes()).map_err(|_| format!("{s:?} is not a header name"))
}
