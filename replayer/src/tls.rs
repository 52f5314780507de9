//! TLS to https targets: whom to trust (the web PKI roots, the CAs of `[replayer]
//! target_ca`, or with `insecure_tls` any certificate, for self-signed staging services),
//! the client certificate a target behind mTLS asks for, and the ALPN protocols offered.
//! The server name (SNI) is the target's host, given at each connect.

use std::sync::Arc;

use reprise_proto::pb;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// ALPN's names of the protocols.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_H1: &[u8] = b"http/1.1";

/// Why the job's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    #[error("[replayer] target_ca holds no PEM certificate a TLS client can trust ({0})")]
    Ca(String),
    #[error("[replayer] client_cert and client_key do not make a client certificate ({0})")]
    Client(String),
}

/// The TLS client for a job's target, offering `alpn` in order of preference.
pub fn client_config(cfg: &pb::JobConfig, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsSettingsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        // invariant: ring supports the default protocol versions.
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"));
    let builder = if cfg.insecure_tls {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else if cfg.target_ca.is_empty() {
        builder
            .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
    } else {
        builder.with_root_certificates(roots(&cfg.target_ca)?)
    };
    let mut config = if cfg.client_cert.is_empty() && cfg.client_key.is_empty() {
        builder.with_no_client_auth()
    } else {
        let client = |e: &dyn std::fmt::Display| TlsSettingsError::Client(e.to_string());
        let chain = CertificateDer::pem_slice_iter(&cfg.client_cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| client(&e))?;
        let key = PrivateKeyDer::from_pem_slice(&cfg.client_key).map_err(|e| client(&e))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| client(&e))?
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The CAs of a PEM bundle; one that is not a certificate, or a bundle of none, is refused.
fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, TlsSettingsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsSettingsError::Ca(e.to_string()))?;
        store.add(cert).map_err(|e| TlsSettingsError::Ca(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsSettingsError::Ca("no certificate in it".into()));
    }
    Ok(store)
}

/// The name a target's certificate must carry: its host (an IP address as itself).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_refused_with_its_reason() {
        let cfg =
            |ca: &[u8]| pb::JobConfig { target_ca: bytes::Bytes::copy_from_slice(ca), ..Default::default() };
        assert!(matches!(client_config(&cfg(b"not pem"), &[ALPN_H1]), Err(TlsSettingsError::Ca(_))));
        let only_key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(client_config(&cfg(only_key), &[ALPN_H1]), Err(TlsSettingsError::Ca(_))));
        let half = pb::JobConfig { client_cert: bytes::Bytes::from_static(b"x"), ..Default::default() };
        assert!(matches!(client_config(&half, &[ALPN_H1]), Err(TlsSettingsError::Client(_))));
        let c = client_config(&pb::JobConfig::default(), &[ALPN_H2, ALPN_H1]).expect("web roots");
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn the_server_name_is_the_host_and_an_address_as_itself() {
        assert!(matches!(server_name("staging.example.com"), Some(ServerName::DnsName(_))));
        assert!(matches!(server_name("127.0.0.1"), Some(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]"), Some(ServerName::IpAddress(_))));
    }
}
