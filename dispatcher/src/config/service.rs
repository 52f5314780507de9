//! `[service]`: where the dispatcher listens (Havok's `http` and `grpc`), and how its ports
//! are secured (`[service.tls]`, `metrics_auth`; tokens come from the environment).

use std::path::PathBuf;

use serde::Deserialize;

use super::ListenAddr;

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Admin HTTP API.
    pub http: ListenAddr,
    /// gRPC for replayers.
    pub grpc: ListenAddr,
    /// TLS on both ports (`[service.tls]`); plain when absent.
    pub tls: Option<TlsConfig>,
    /// `GET /metrics` asks for the admin token too (it does not by default, so a Prometheus
    /// scrape needs no secret; the metrics hold no recorded data).
    pub metrics_auth: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        // invariant: literal addresses.
        #[allow(clippy::unwrap_used)]
        Self {
            http: ":8080".parse().unwrap(),
            grpc: ":9090".parse().unwrap(),
            tls: None,
            metrics_auth: false,
        }
    }
}

/// `[service.tls]`: the dispatcher's certificate for both ports, and the authority replayers'
/// client certificates must be signed by (mTLS, gRPC port only: admin clients use the token).
/// PEM files; relative paths are relative to the job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a replayer must present a certificate signed by one of these.
    pub client_ca: Option<PathBuf>,
}

impl ServiceConfig {
    /// The `[service]` table of a TOML file (a job file, or a file of that table alone; other
    /// tables are not read), its TLS paths relative to the file: how a standing dispatcher,
    /// which has no job file of its own, is told its ports and TLS (`--service FILE`).
    pub fn read(path: &std::path::Path) -> Result<ServiceConfig, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let service = table.remove("service").unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        let mut cfg: ServiceConfig = service
            .try_into()
            .map_err(|e| format!("{}: [service]: {e}; docs/job-file.md lists its keys", path.display()))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        if let Some(tls) = &mut cfg.tls {
            for p in [&mut tls.cert, &mut tls.key].into_iter().chain(tls.client_ca.as_mut()) {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(cfg)
    }
}
