//! The job file (TOML): what to replay, from where, how fast, and against what.
//!
//! Havok's keys load as they are (`[job] rate speed begin end`, `[fetcher] type`,
//! `[fetcher.file] path`, `[fetcher.kafka] brokers topic offset`, `[service] http grpc`);
//! reprise's own keys sit beside them, and Havok keys reprise has no use for are warnings
//! (`havok`).
//! Loading never stops at the first problem: unknown keys are collected while deserializing
//! (serde_ignored, not `deny_unknown_fields`, so that every one is listed), then
//! [`JobConfig::validate`] checks every rule. The README's "Job file reference" lists every key.

mod havok;
pub mod keys;
mod results;
mod service;
mod sources;
mod validate;
mod validate_sources;
pub mod values;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::thresholds::Gate;

pub use crate::routing::HashStrategy;
pub use keys::KeyPattern;
pub use results::{
    ABORT_ON_FAIL, EndpointRule, InfluxConfig, RawConfig, SinksConfig, StatsConfig, ThresholdEntry,
};
pub use service::{ServiceConfig, TlsConfig};
pub use sources::{Brokers, HavokSls, KafkaConfig, KafkaTimestamp, S3Config, S3Settings};
pub use validate::Problem;
pub use values::{Instant, ListenAddr, Millis, Speed};

/// A whole job file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobConfig {
    pub job: JobSection,
    pub fetcher: FetcherConfig,
    pub analyzer: AnalyzerConfig,
    pub proxy: RoutingConfig,
    pub replayer: ReplayerConfig,
    pub service: ServiceConfig,
    pub stats: StatsConfig,
    pub reporter: SinksConfig,
    /// CI gate: endpoint name ("*" for all traffic) → expressions; `abort_on_fail = true`
    /// stops the job at the first failure. See `thresholds`.
    pub thresholds: BTreeMap<String, ThresholdEntry>,
    /// `thresholds`, parsed once by [`JobConfig::validate`] (which refuses a file where any
    /// expression does not parse).
    #[serde(skip)]
    pub gate: Gate,
    /// Havok keys reprise has no use for, each with why (see `config::havok`); not errors.
    #[serde(skip)]
    pub warnings: Vec<Problem>,
}

/// `[job]`: what to replay against, how fast, and which part of the recording.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct JobSection {
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

impl Default for JobSection {
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

impl JobSection {
    /// The job's time range, which a fetcher uses to read less.
    pub fn range(&self) -> Range {
        Range {
            begin: self.begin.map(|b| b.0),
            end: self.end.map(|e| e.0),
            window_ns: self.reorder_window.0.as_nanos() as i64,
        }
    }
}

/// The job's time range: Kafka seeks to `begin` and stops a partition past `end`; S3 lists
/// only objects whose key time can hold the range.
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    pub begin: Option<i64>,
    pub end: Option<i64>,
    /// The reorder window: records this far out of order still count as in order.
    pub window_ns: i64,
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
pub struct FetcherConfig {
    #[serde(rename = "type")]
    pub kind: FetcherKind,
    pub file: Option<FileConfig>,
    pub kafka: Option<KafkaConfig>,
    pub s3: Option<S3Config>,
    /// Havok's SLS section: its region and download knobs are defaults for `[fetcher.s3]`.
    pub sls: Option<HavokSls>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FetcherKind {
    #[default]
    File,
    /// Every partition (or those listed), merged by time.
    Kafka,
    /// Havok's name: partition 0 only, as Havok read it.
    KafkaSinglePartition,
    /// An S3-compatible object store.
    S3,
    /// Havok's name for SLS logs; reprise reads them where SLS ships them (OSS) via `[fetcher.s3]`.
    Sls,
}

impl FetcherKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FetcherKind::File => "file",
            FetcherKind::Kafka => "kafka",
            FetcherKind::KafkaSinglePartition => "kafka-single-partition",
            FetcherKind::S3 => "s3",
            FetcherKind::Sls => "sls",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    /// A file, or a glob of files merged by timestamp; gzip files are decompressed. A
    /// relative path is relative to the job file.
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct AnalyzerConfig {
    pub format: Format,
    pub fields: JsonFields,
    pub timestamp_unit: TimeUnit,
    /// Where a record's hash key comes from: "header:NAME", "query:NAME" or "json:NAME".
    pub hash_field: Option<String>,
    /// Headers whose values are secrets besides `Authorization`, `Proxy-Authorization`,
    /// `Cookie` and `Set-Cookie`: never printed.
    pub secret_headers: Vec<String>,
    /// Records dated before this are malformed (`implausible_time`).
    pub earliest: Instant,
    /// Records dated more than this past now are malformed (`implausible_time`).
    pub max_ahead: Millis,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            format: Format::Json,
            fields: JsonFields::default(),
            timestamp_unit: TimeUnit::Ms,
            hash_field: None,
            secret_headers: Vec::new(),
            earliest: Instant(EARLIEST_DEFAULT_NS),
            max_ahead: Millis(MAX_AHEAD_DEFAULT),
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

/// `[proxy]` (Havok's name): how records are routed to replayers, and their credits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct RoutingConfig {
    pub hash: HashStrategy,
    /// Un-acknowledged records a replayer may hold.
    pub credit_window: u32,
    /// A replayer silent this long is missing; its keys move to the others.
    pub heartbeat_timeout: Millis,
    /// A stopped job (POST /job/stop, SIGTERM) waits at most this long for its replayers'
    /// last statistics (they cut requests still in flight after 2 s); what is unaccounted
    /// then counts as lost.
    pub drain_timeout: Millis,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            hash: HashStrategy::RoundRobin,
            credit_window: 20_000,
            heartbeat_timeout: Millis(std::time::Duration::from_secs(3)),
            drain_timeout: Millis(std::time::Duration::from_secs(30)),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ReplayerConfig {
    /// Requests in flight at once, per replayer.
    pub concurrency: u32,
    /// Per request, from the send to the end of the body.
    pub timeout: Millis,
    /// Send the recorded Host header instead of the target's.
    pub preserve_host: bool,
    /// Accept any TLS certificate (self-signed staging targets).
    pub insecure_tls: bool,
}

impl Default for ReplayerConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            timeout: Millis(std::time::Duration::from_secs(10)),
            preserve_host: false,
            insecure_tls: false,
        }
    }
}

/// `[analyzer] earliest`'s default: 2000-01-01T00:00:00Z, Unix ns.
pub const EARLIEST_DEFAULT_NS: i64 = 946_684_800_000_000_000;
/// `[analyzer] max_ahead`'s default: how far past now a recorded time may be.
pub const MAX_AHEAD_DEFAULT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
        if let Some(tls) = &mut self.service.tls {
            for p in [&mut tls.cert, &mut tls.key].into_iter().chain(tls.client_ca.as_mut()) {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// Parses and validates job-file text; `Err` lists every problem found.
    ///
    /// serde stops at the first value of a wrong type. To list them all, each one found is
    /// noted with its key path (`serde_path_to_error`), taken out of the parsed table (its
    /// default then applies) and the table read again, up to [`MAX_TYPE_ERRORS`] times. The
    /// rules checked afterwards skip the keys taken out: their problem is already listed.
    pub fn parse(text: &str) -> Result<JobConfig, Vec<Problem>> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| vec![Problem::syntax(&e)])?;
        let mut type_errors: Vec<Problem> = Vec::new();
        loop {
            let (mut problems, mut warnings) = (Vec::new(), Vec::new());
            let mut track = serde_path_to_error::Track::new();
            let de = serde_path_to_error::Deserializer::new(toml::Value::Table(table.clone()), &mut track);
            let parsed: Result<JobConfig, _> = serde_ignored::deserialize(de, |path| {
                // serde_ignored writes an Option's level as "?": `fetcher.sls.?.logstore`.
                let path = path.to_string().replace(".?", "");
                match havok::ignored_havok_key(&path) {
                    Some(why) => warnings.push(Problem::havok_key(&path, why)),
                    None => problems.push(Problem::unknown_key(&path)),
                }
            });
            match parsed {
                Ok(mut cfg) => {
                    cfg.warnings = warnings;
                    let erased: Vec<&str> = type_errors.iter().map(|p| p.key.as_str()).collect();
                    let rules =
                        cfg.validate().into_iter().filter(|p| !erased.iter().any(|k| covers(k, &p.key)));
                    problems.extend(rules);
                    type_errors.extend(problems);
                    return if type_errors.is_empty() { Ok(cfg) } else { Err(type_errors) };
                }
                Err(e) => {
                    let path = track.path();
                    let segments: Vec<&Segment> = path.iter().collect();
                    let key = key_path(&segments);
                    let value = value_at(&table, &segments).map(|v| v.to_string()).unwrap_or_default();
                    // A table that lacks a required key because one of a wrong type was taken
                    // out of it is that key's problem, listed already.
                    if !type_errors.iter().any(|p| covers(&key, &p.key)) {
                        type_errors.push(Problem::new(&key, value, e.message().trim_end()));
                    }
                    if type_errors.len() >= MAX_TYPE_ERRORS || !erase(&mut table, &segments) {
                        type_errors.extend(problems);
                        return Err(type_errors);
                    }
                }
            }
        }
    }
}

/// Type errors listed before the rest of a job file is given up on.
const MAX_TYPE_ERRORS: usize = 100;

use serde_path_to_error::Segment;

/// `job.speed`, `stats.endpoints[0].pattern`: as the README's reference writes keys.
fn key_path(segments: &[&Segment]) -> String {
    let mut key = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            Segment::Unknown => break,
        }
    }
    key
}

/// Whether a problem at `key` lies at or under the erased `erased`.
fn covers(erased: &str, key: &str) -> bool {
    key.strip_prefix(erased).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The part of `segments` that leads through tables and arrays.
fn followable<'a>(segments: &'a [&'a Segment]) -> &'a [&'a Segment] {
    let n = segments.iter().take_while(|s| matches!(s, Segment::Map { .. } | Segment::Seq { .. })).count();
    &segments[..n]
}

fn value_at<'a>(table: &'a toml::Table, segments: &[&Segment]) -> Option<&'a toml::Value> {
    let (first, rest) = followable(segments).split_first()?;
    let Segment::Map { key } = first else { return None };
    let mut v = table.get(key.as_str())?;
    for s in rest {
        v = match s {
            Segment::Map { key } => v.as_table()?.get(key.as_str())?,
            Segment::Seq { index } => v.as_array()?.get(*index)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Takes the value at `segments` out of `table`; false if there was none to take.
fn erase(table: &mut toml::Table, segments: &[&Segment]) -> bool {
    match followable(segments).split_first() {
        Some((Segment::Map { key }, [])) => table.remove(key.as_str()).is_some(),
        Some((Segment::Map { key }, rest)) => table.get_mut(key.as_str()).is_some_and(|v| erase_in(v, rest)),
        _ => false,
    }
}

fn erase_in(v: &mut toml::Value, path: &[&Segment]) -> bool {
    match (v, path) {
        (toml::Value::Table(t), [Segment::Map { key }]) => t.remove(key.as_str()).is_some(),
        (toml::Value::Table(t), [Segment::Map { key }, rest @ ..]) => {
            t.get_mut(key.as_str()).is_some_and(|v| erase_in(v, rest))
        }
        (toml::Value::Array(a), [Segment::Seq { index }]) if *index < a.len() => {
            a.remove(*index);
            true
        }
        (toml::Value::Array(a), [Segment::Seq { index }, rest @ ..]) => {
            a.get_mut(*index).is_some_and(|v| erase_in(v, rest))
        }
        _ => false,
    }
}
