//! A dispatcher over gRPC: the [`Upstream`] of `reprise replayer`. Each subscription opens a
//! new connection, over TLS for an `https://` URL (the dispatcher's certificate checked
//! against `--tls-ca`, or the web's roots without it; a client certificate for mTLS with
//! `--tls-cert` and `--tls-key`), and every call carries the replayer token when one is set
//! (gRPC metadata `authorization: Bearer …`, marked sensitive so it is never logged).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reprise_proto::pb;
use reprise_proto::pb::dispatcher_client::DispatcherClient;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_stream::StreamExt as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::upstream::{Reports, Upstream, UpstreamError};
use reprise_proto::Events;

const STREAM_WINDOW: u32 = 8 << 20;
const MAX_MESSAGE: usize = 64 << 20;

/// How this replayer reaches its dispatcher and proves who it is.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// CA certificate(s) the dispatcher's certificate must chain to (PEM).
    pub tls_ca: Option<PathBuf>,
    /// This replayer's certificate and key, for a dispatcher that asks for one (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The replayer token (`REPRISE_REPLAYER_TOKEN`).
    pub token: Option<String>,
}

/// Why a dispatcher URL or the files and token to reach it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("dispatcher URL `{0}` is invalid; write e.g. http://127.0.0.1:9090")]
    BadUrl(String),
    #[error("{0}")]
    Credentials(String),
}

/// A dispatcher over gRPC.
pub struct Grpc {
    endpoint: Endpoint,
    token: Option<MetadataValue<Ascii>>,
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path)
        .map_err(|e| SetupError::Credentials(format!("{flag} {}: cannot read it: {e}", path.display())))
}

/// Reads a PEM file and checks it holds what `flag` needs, so a wrong file is named here
/// rather than failing every handshake later.
fn pem(flag: &'static str, path: &Path, key: bool) -> Result<Vec<u8>, SetupError> {
    let bytes = read(flag, path)?;
    let bad = |what: String| SetupError::Credentials(format!("{flag} {}: {what}", path.display()));
    if key {
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| bad(format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}")))?;
    } else {
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
        if certs.is_empty() {
            return Err(bad("holds no certificate (no `-----BEGIN CERTIFICATE-----` block)".into()));
        }
    }
    Ok(bytes)
}

impl Grpc {
    pub fn new(url: &str, creds: &Credentials) -> Result<Grpc, SetupError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|_| SetupError::BadUrl(url.to_owned()))?
            .tcp_nodelay(true)
            // Record batches flow to us: HTTP/2's default 64 KiB window would make the
            // dispatcher wait for a window update after almost every batch.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(STREAM_WINDOW * 2)
            .connect_timeout(Duration::from_secs(2));
        let https = endpoint.uri().scheme_str() == Some("https");
        let wants_tls = creds.tls_ca.is_some() || creds.tls_cert.is_some() || creds.tls_key.is_some();
        if wants_tls && !https {
            return Err(SetupError::Credentials(format!(
                "--tls-ca, --tls-cert and --tls-key need an https:// dispatcher URL, not {url}"
            )));
        }
        if https {
            endpoint = endpoint
                .tls_config(client_tls(creds)?)
                .map_err(|e| SetupError::Credentials(e.to_string()))?;
        }
        let token = match &creds.token {
            None => None,
            Some(t) => {
                let mut v = MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    SetupError::Credentials(
                        "REPRISE_REPLAYER_TOKEN holds characters a header cannot carry (only visible ASCII)"
                            .into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Grpc { endpoint, token })
    }
}

fn client_tls(creds: &Credentials) -> Result<ClientTlsConfig, SetupError> {
    let mut tls = ClientTlsConfig::new();
    tls = match &creds.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(pem("--tls-ca", ca, false)?)),
        None => tls.with_webpki_roots(),
    };
    match (&creds.tls_cert, &creds.tls_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            tls = tls
                .identity(Identity::from_pem(pem("--tls-cert", cert, false)?, pem("--tls-key", key, true)?));
        }
        _ => {
            return Err(SetupError::Credentials(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ));
        }
    }
    Ok(tls)
}

/// Where a gRPC subscription's reports go: the same connection, with the same token.
#[derive(Clone)]
pub struct GrpcReports {
    client: DispatcherClient<Channel>,
    token: Option<MetadataValue<Ascii>>,
}

fn request<T>(msg: T, token: &Option<MetadataValue<Ascii>>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", t.clone());
    }
    req
}

impl Upstream for Grpc {
    type Reports = GrpcReports;

    async fn subscribe(
        &self,
        reg: pb::Registration,
    ) -> Result<(Events<UpstreamError>, GrpcReports), UpstreamError> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| UpstreamError::Unavailable(reprise_proto::error_chain(&e)))?;
        let mut client = DispatcherClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let events = client.subscribe(request(reg, &self.token)).await?.into_inner();
        let events = events.map(|e| e.map_err(UpstreamError::from));
        Ok((Box::pin(events), GrpcReports { client, token: self.token.clone() }))
    }
}

impl Reports for GrpcReports {
    async fn report(&self, report: pb::StatsReport) -> Result<(), UpstreamError> {
        self.client.clone().report(request(report, &self.token)).await.map(|_| ()).map_err(Into::into)
    }
}

/// What a dispatcher's status code means to a replayer: a wrong build or id
/// (`FailedPrecondition`, `InvalidArgument`; also a report for a subscription let go) or
/// token (`Unauthenticated`) is a refusal for good; anything else may pass on a retry.
impl From<Status> for UpstreamError {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::FailedPrecondition | Code::InvalidArgument | Code::Unauthenticated => {
                UpstreamError::Refused(s.message().to_owned())
            }
            _ => UpstreamError::Unavailable(s.message().to_owned()),
        }
    }
}
