//! TLS on the dispatcher's two ports (`[service.tls]`): one certificate for both; on the
//! gRPC port, optionally, replayers must present a client certificate signed by `client_ca`
//! (the admin port relies on its token, so curl and Prometheus need no client certificate).
//!
//! Handshakes run beside the accept loop ([`TlsIncoming`]), each bounded in time and in
//! number, so a peer that connects and says nothing holds up no one; a failed one is counted
//! as a refusal. Both servers take the handshaken streams: axum as a [`Listener`], tonic as
//! a stream of connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;

use crate::config::TlsConfig;
use crate::refusals::Refusal;
use crate::refusals::Refusals;

/// A peer has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; past this, accepting waits.
const MAX_HANDSHAKES: usize = 256;
/// Handshaken connections waiting for their server to take them.
const READY_CAPACITY: usize = 64;

/// A `[service.tls]` file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[service.tls] {key} = {}: {what}", .path.display())]
pub struct TlsError {
    key: &'static str,
    path: PathBuf,
    what: String,
}

fn file_error(key: &'static str, path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError { key, path: path.to_owned(), what: what.to_string() }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(key, path, format!("cannot read it: {e}")))
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no certificate (no `-----BEGIN CERTIFICATE-----` block)"));
    }
    Ok(certs)
}

/// The server configurations of both ports, from one certificate.
#[derive(Clone, Debug)]
pub(super) struct ServerTls {
    pub grpc: Arc<ServerConfig>,
    pub admin: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads and checks the files; every error names the file and what is wrong with it.
    pub fn load(cfg: &TlsConfig) -> Result<ServerTls, TlsError> {
        let certs = certificates("cert", &cfg.cert)?;
        let key_pem = read("key", &cfg.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            file_error(
                "key",
                &cfg.key,
                format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| file_error("cert", &cfg.cert, e))
        };
        let grpc_builder = match &cfg.client_ca {
            None => builder()?.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates("client_ca", ca)? {
                    roots.add(cert).map_err(|e| {
                        file_error("client_ca", ca, format!("not a usable CA certificate: {e}"))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                        .build()
                        .map_err(|e| file_error("client_ca", ca, e))?;
                builder()?.with_client_cert_verifier(verifier)
            }
        };
        let mismatch = |e: rustls::Error| {
            file_error("key", &cfg.key, format!("does not fit cert = {}: {e}", cfg.cert.display()))
        };
        let mut grpc = grpc_builder.with_single_cert(certs.clone(), key.clone_key()).map_err(mismatch)?;
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        let mut admin = builder()?.with_no_client_auth().with_single_cert(certs, key).map_err(mismatch)?;
        admin.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { grpc: Arc::new(grpc), admin: Arc::new(admin) })
    }
}

/// Connections of a TLS port, handshaken. Dropping it stops accepting and aborts the
/// handshakes under way.
pub(super) struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDropHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, refusals: Arc<Refusals>) -> Self {
        let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_CAPACITY);
        let task = tokio::spawn(accept(listener, TlsAcceptor::from(config), tx, refusals));
        TlsIncoming { ready, local, _accepting: AbortOnDropHandle::new(task) }
    }

    /// The connections as tonic takes them.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        let TlsIncoming { ready, _accepting, .. } = self;
        tokio_stream::StreamExt::map(ReceiverStream::new(ready), move |(tls, _)| {
            let _owner = &_accepting;
            Ok(tls)
        })
    }
}

impl Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (its listener failed): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    refusals: Arc<Refusals>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    handshakes.spawn(async move { (peer, handshake.await) });
                }
                Err(e) => {
                    // Out of file descriptors and the like: try again shortly, not in a spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = handshakes.join_next() => {
                let Ok((peer, outcome)) = done else { continue };
                match outcome {
                    Ok(Ok(tls)) => {
                        if ready.send((tls, peer)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        refusals.count(Refusal::TlsHandshake);
                        tracing::warn!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        refusals.count(Refusal::TlsHandshake);
                        tracing::warn!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    }
                }
            }
            () = ready.closed() => return,
        }
    }
}
