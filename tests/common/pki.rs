//! Certificates made in a test (rcgen), and HTTPS requests that check them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{exchange, request};

/// A CA, and what it signs: certificates for a dispatcher and for replayers.
pub struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        Authority { issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA") }
    }

    /// Writes `NAME.pem` and `NAME.key` for these names; returns their paths.
    pub fn sign(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.sign_pem(names);
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, key).expect("write");
        (c, k)
    }

    /// A certificate for these names and its key, as PEM text.
    pub fn sign_pem(&self, names: &[&str]) -> (String, String) {
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// The CA's certificate, as PEM text.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.pem()).expect("write");
        path
    }
}

/// `METHOD path` over TLS to `addr`, checking the certificate for `name` against `ca`, with
/// `Authorization: Bearer token`: (status, body).
pub async fn https(
    method: &str,
    addr: &str,
    name: &str,
    path: &str,
    ca: &Path,
    token: &str,
) -> (u16, String) {
    https_body(method, addr, name, path, ca, token, "").await
}

/// [`https`] with a request body.
pub async fn https_body(
    method: &str,
    addr: &str,
    name: &str,
    path: &str,
    ca: &Path,
    token: &str,
    body: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("add");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, tcp).await.expect("handshake");
    let auth = format!("Authorization: Bearer {token}\r\n");
    exchange(&mut tls, &request(method, addr, path, body, &auth)).await
}
