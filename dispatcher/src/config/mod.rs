//! The job file (TOML): what to replay, from where, how fast, and against what.
//!
//! Havok's keys load as they are (`[job] rate speed begin end`, `[fetcher] type`,
//! `[fetcher.file] path`, `[service] http grpc`); reprise's own keys sit beside them.
//! Loading never stops at the first problem: unknown keys are collected while deserializing
//! (serde_ignored, not `deny_unknown_fields`, so that every one is listed), then
//! [`JobConfig::validate`] checks every rule. See docs/job-file.md for the reference.

mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

pub use validate::Problem;
pub use values::{Instant, ListenAddr, Millis, Speed};

/// A whole job file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobConfig {
    pub job: Job,
    pub fetcher: Fetcher,
    pub analyzer: Analyzer,
    pub proxy: Proxy,
    pub replayer: Replayer,
    pub service: Service,
    pub stats: Stats,
    pub reporter: Reporter,
    /// CI gate: endpoint name ("*" for all traffic) → expressions; `abort_on_fail = true`
    /// stops the job at the first failure. See [`crate::thresholds`].
    pub thresholds: BTreeMap<String, ThresholdEntry>,
}

/// `[reporter.*]`: live sinks.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reporter {
    pub influxdb: Option<InfluxDb>,
    pub raw: Option<Raw>,
}

/// `[reporter.raw]`: a line per request into `dir/current`, rolled every `rotate_lines`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Raw {
    pub dir: String,
    pub rotate_lines: u64,
}

impl Default for Raw {
    fn default() -> Self {
        Self { dir: String::new(), rotate_lines: 100_000 }
    }
}

/// `[reporter.influxdb]`: Havok's keys (url, database, user, password) for API v1, or org,
/// bucket and a token from the environment for v2.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct InfluxDb {
    pub url: String,
    pub database: Option<String>,
    pub user: Option<String>,
    /// Havok kept it in the file; prefer `password_env`.
    pub password: Option<String>,
    /// Environment variable holding the v1 password.
    pub password_env: Option<String>,
    pub org: Option<String>,
    pub bucket: Option<String>,
    /// Environment variable holding the v2 token.
    pub token_env: String,
    pub timeout: Millis,
}

impl Default for InfluxDb {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: None,
            user: None,
            password: None,
            password_env: None,
            org: None,
            bucket: None,
            token_env: "INFLUX_TOKEN".into(),
            timeout: Millis(std::time::Duration::from_secs(5)),
        }
    }
}

/// Percent-encodes a query parameter value.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl InfluxDb {
    /// The write endpoint: v1 when `database` is set, else v2 (validation requires one).
    pub fn write_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if let Some(db) = &self.database {
            let mut url = format!("{base}/write?precision=ms&db={}", query_value(db));
            if let Some(u) = &self.user {
                let _ = std::fmt::Write::write_fmt(&mut url, format_args!("&u={}", query_value(u)));
            }
            let password =
                self.password_env.as_ref().and_then(|k| std::env::var(k).ok()).or(self.password.clone());
            if let Some(p) = password {
                let _ = std::fmt::Write::write_fmt(&mut url, format_args!("&p={}", query_value(&p)));
            }
            url
        } else {
            let org = self.org.as_deref().unwrap_or_default();
            let bucket = self.bucket.as_deref().unwrap_or_default();
            format!(
                "{base}/api/v2/write?precision=ms&org={}&bucket={}",
                query_value(org),
                query_value(bucket)
            )
        }
    }

    /// The v2 token, from the environment.
    pub fn token(&self) -> Option<String> {
        if self.database.is_some() { None } else { std::env::var(&self.token_env).ok() }
    }
}

/// `[stats]`: how requests are grouped into endpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// First match wins: `{ pattern = "^/users/[0-9]+$", name = "GET /users/{id}" }`.
    pub endpoints: Vec<EndpointRule>,
    /// Distinct endpoints kept apart per replayer; the rest count as "other".
    pub max_endpoints: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Self { endpoints: Vec::new(), max_endpoints: 1000 }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct EndpointRule {
    /// A regex on the path (without the query).
    pub pattern: String,
    /// The endpoint's name; "GET /x" matches only GET, "/x" any method (shown as "METHOD /x").
    pub name: String,
}

/// A `[thresholds]` entry: an endpoint's expressions, or the `abort_on_fail` flag.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ThresholdEntry {
    Rules(Vec<String>),
    Flag(bool),
}

/// The `[thresholds]` key that is a flag, not an endpoint.
pub const ABORT_ON_FAIL: &str = "abort_on_fail";

/// One parsed threshold.
#[derive(Clone, Debug)]
pub struct Threshold {
    pub endpoint: String,
    pub text: String,
    pub expr: crate::thresholds::Expr,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Job {
    /// Shown in reports and logs; defaults to the job file's stem.
    pub id: Option<String>,
    /// Base URL replacing the recorded scheme and host, or "builtin:echo".
    pub target: Option<String>,
    /// Copies per record: 2.0 each twice, 2.5 twice plus a third for half, 0.3 a 30 % sample.
    pub rate: f64,
    pub speed: Speed,
    /// Records before this instant are skipped.
    pub begin: Option<Instant>,
    /// The job finishes at the first record after this instant (inclusive).
    pub end: Option<Instant>,
    /// Chooses which records get the fractional copy; the same seed picks the same records.
    pub seed: u64,
    /// Replayers started by `reprise run`.
    pub replayers: u32,
    /// The dispatcher starts the job once this many replayers have subscribed.
    pub min_replayers: u32,
    /// Records this much out of order are put back in order; later ones are late.
    pub reorder_window: Millis,
    /// What to do with a late record: send it at once, or drop it. Counted either way.
    pub late: LatePolicy,
}

impl Default for Job {
    fn default() -> Self {
        Self {
            id: None,
            target: None,
            rate: 1.0,
            speed: Speed::default(),
            begin: None,
            end: None,
            seed: 0,
            replayers: 1,
            min_replayers: 1,
            reorder_window: Millis(std::time::Duration::from_secs(1)),
            late: LatePolicy::Send,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    #[default]
    Send,
    Drop,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Fetcher {
    #[serde(rename = "type")]
    pub kind: FetcherKind,
    pub file: Option<FileFetcher>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetcherKind {
    #[default]
    File,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileFetcher {
    /// A file, or a glob of files merged by timestamp; gzip files are decompressed. A
    /// relative path is relative to the job file.
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Analyzer {
    pub format: Format,
    pub fields: JsonFields,
    pub timestamp_unit: TimeUnit,
    /// Where a record's hash key comes from: "header:NAME", "query:NAME" or "json:NAME".
    pub hash_field: Option<String>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self {
            format: Format::Json,
            fields: JsonFields::default(),
            timestamp_unit: TimeUnit::Ms,
            hash_field: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Gor,
    Combined,
}

/// Field names of the json format.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct JsonFields {
    pub ts: String,
    pub method: String,
    pub url: String,
    pub headers: String,
    pub body: String,
    pub body_base64: String,
}

impl Default for JsonFields {
    fn default() -> Self {
        Self {
            ts: "ts".into(),
            method: "method".into(),
            url: "url".into(),
            headers: "headers".into(),
            body: "body".into(),
            body_base64: "body_base64".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    S,
    #[default]
    Ms,
    Us,
    Ns,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Proxy {
    pub hash: HashStrategy,
    /// Un-acknowledged records a replayer may hold.
    pub credit_window: u32,
    /// A replayer silent this long is missing; its keys move to the others.
    pub heartbeat_timeout: Millis,
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            hash: HashStrategy::RoundRobin,
            credit_window: 20_000,
            heartbeat_timeout: Millis(std::time::Duration::from_secs(3)),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashStrategy {
    #[default]
    RoundRobin,
    Fnv,
    Consistent,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Replayer {
    /// Requests in flight at once, per replayer.
    pub concurrency: u32,
    /// Per request, from the send to the end of the body.
    pub timeout: Millis,
    /// Send the recorded Host header instead of the target's.
    pub preserve_host: bool,
    /// Accept any TLS certificate (self-signed staging targets).
    pub insecure_tls: bool,
}

impl Default for Replayer {
    fn default() -> Self {
        Self {
            concurrency: 256,
            timeout: Millis(std::time::Duration::from_secs(10)),
            preserve_host: false,
            insecure_tls: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Service {
    /// Admin HTTP API.
    pub http: ListenAddr,
    /// gRPC for replayers.
    pub grpc: ListenAddr,
}

impl Default for Service {
    fn default() -> Self {
        // invariant: literal addresses.
        #[allow(clippy::unwrap_used)]
        Self { http: ":8080".parse().unwrap(), grpc: ":9090".parse().unwrap() }
    }
}

/// Why a job file could not be used: every problem found, each with key, value and rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read job file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {} problem(s):\n{}", .problems.len(), list(.problems))]
    Invalid { path: String, problems: Vec<Problem> },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl JobConfig {
    /// Reads, parses and validates a job file.
    pub fn load(path: &Path) -> Result<JobConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut cfg = Self::parse(&text)
            .map_err(|problems| ConfigError::Invalid { path: path.display().to_string(), problems })?;
        if cfg.job.id.is_none() {
            cfg.job.id = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// The parsed thresholds (validation has refused any that do not parse).
    pub fn thresholds(&self) -> Vec<Threshold> {
        let mut out = Vec::new();
        for (endpoint, entry) in &self.thresholds {
            if let ThresholdEntry::Rules(rules) = entry {
                for text in rules {
                    if let Ok(expr) = crate::thresholds::parse(text) {
                        out.push(Threshold { endpoint: endpoint.clone(), text: text.clone(), expr });
                    }
                }
            }
        }
        out
    }

    /// Whether a failing threshold stops the job while it runs.
    pub fn abort_on_fail(&self) -> bool {
        matches!(self.thresholds.get(ABORT_ON_FAIL), Some(ThresholdEntry::Flag(true)))
    }

    /// Relative paths (recording, raw results) are relative to the job file, so a job runs
    /// from anywhere.
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = &mut self.fetcher.file
            && !f.path.is_empty()
            && Path::new(&f.path).is_relative()
        {
            f.path = base.join(&f.path).to_string_lossy().into_owned();
        }
        if let Some(r) = &mut self.reporter.raw
            && !r.dir.is_empty()
            && Path::new(&r.dir).is_relative()
        {
            r.dir = base.join(&r.dir).to_string_lossy().into_owned();
        }
    }

    /// Parses and validates job-file text; `Err` lists every problem found.
    pub fn parse(text: &str) -> Result<JobConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let de = toml::de::Deserializer::parse(text).map_err(|e| vec![Problem::syntax(&e)])?;
        let parsed: Result<JobConfig, _> = serde_ignored::deserialize(de, |path| {
            problems.push(Problem::unknown_key(&path.to_string()));
        });
        match parsed {
            Ok(cfg) => {
                problems.extend(cfg.validate());
                if problems.is_empty() { Ok(cfg) } else { Err(problems) }
            }
            Err(e) => {
                problems.push(Problem::syntax(&e));
                Err(problems)
            }
        }
    }
}
