//! The job file (TOML): what to replay, from where, how fast, and against what.
//!
//! Havok's keys load as they are (`[job] rate speed begin end`, `[fetcher] type`,
//! `[fetcher.file] path`, `[fetcher.kafka] brokers topic offset`, `[service] http grpc`);
//! reprise's own keys sit beside them, and Havok keys reprise has no use for are warnings
//! (`havok`).
//! Loading never stops at the first problem: unknown keys are collected while deserializing
//! (serde_ignored, not `deny_unknown_fields`, so that every one is listed), then
//! [`JobConfig::validate`] checks every rule. docs/job-file.md lists every key.

mod compare;
mod havok;
pub mod keys;
mod load;
mod results;
mod service;
mod shaping;
mod sources;
mod validate;
mod validate_runtime;
mod validate_shaping;
mod validate_sources;
pub mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use crate::routing::HashStrategy;
pub use compare::{Baseline, ByteSize, CompareConfig};
pub use keys::KeyPattern;
pub(crate) use load::covered;
pub use load::{Checked, ConfigError, Needs};
pub use results::{
    ABORT_ON_FAIL, EndpointRule, IdKind, InfluxConfig, RawConfig, SinksConfig, StatsConfig, Templates,
    ThresholdEntry,
};
pub use service::{ServiceConfig, TlsConfig};
pub use shaping::{
    Conditions, FilterAction, FilterRule, Methods, OnFailure, PathRewrite, RewriteRule, SubstituteOn,
    SubstituteRule, Unmapped,
};
pub use sources::{Brokers, HavokSls, KafkaConfig, KafkaTimestamp, S3Config, S3Settings, Source};
pub(crate) use validate::not_a_regex;
pub use validate::{NO_JOB_TARGET, Problem, check_target};
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
    /// `[[filter]]`, in order: the first rule that matches a record allows or denies it.
    pub filter: Vec<FilterRule>,
    /// `[[substitute]]`, in order: production credentials mapped to staging ones.
    pub substitute: Vec<SubstituteRule>,
    /// `[[rewrite]]`, in order: paths, hosts, headers, query and json fields changed.
    pub rewrite: Vec<RewriteRule>,
    /// `[compare]`: the candidate's answers compared to a baseline's.
    pub compare: Option<CompareConfig>,
    /// CI gate: endpoint name ("*" for all traffic) → expressions; `abort_on_fail = true`
    /// stops the job at the first failure. See `thresholds`.
    pub thresholds: BTreeMap<String, ThresholdEntry>,
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
    /// Requests a second on average, the recorded mix, order and spacing kept (replaces
    /// `speed`).
    pub qps: Option<f64>,
    /// Idle gaps in the recording longer than this are cut to it.
    pub max_gap: Option<Millis>,
    /// At the end of the recording, replay it again from its start, each pass shifted by
    /// the one before's length (until `duration`, or until stopped).
    #[serde(rename = "loop")]
    pub repeat: bool,
    /// The job ends this long after its start; the recording loops until then.
    pub duration: Option<Millis>,
    /// `[[job.stages]]`: a ramp, each stage taking the settings it names linearly from
    /// where they are to its targets over its duration; the job ends with the last.
    pub stages: Vec<Stage>,
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
            qps: None,
            max_gap: None,
            repeat: false,
            duration: None,
            stages: Vec::new(),
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
    /// Whether the recording replays again at its end: `loop`, or a `duration` (or stages)
    /// to fill.
    pub fn loops(&self) -> bool {
        self.repeat || self.length().is_some()
    }

    /// How long the job lasts: `duration`, else the stages' total; `None` for as long as
    /// the recording.
    pub fn length(&self) -> Option<std::time::Duration> {
        let stages: Option<std::time::Duration> = (!self.stages.is_empty())
            .then(|| self.stages.iter().filter_map(|s| s.duration).map(|d| d.0).sum());
        self.duration.map(|d| d.0).or(stages)
    }

    /// The pace the job starts at: `qps` when set, else `speed`.
    pub fn pace(&self) -> Speed {
        self.qps.map_or(self.speed, Speed::Qps)
    }

    /// The job's time range, which a fetcher uses to read less.
    pub fn range(&self) -> Range {
        Range {
            begin: self.begin.map(|b| b.0),
            end: self.end.map(|e| e.0),
            window_ns: self.reorder_window.0.as_nanos() as i64,
        }
    }
}

/// `[[job.stages]]`: over `duration`, each setting named goes linearly from its value at the
/// stage's start to the one given (k6's ramping stages).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stage {
    pub duration: Option<Millis>,
    pub speed: Option<f64>,
    pub qps: Option<f64>,
    pub rate: Option<f64>,
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

impl FetcherConfig {
    /// The source this section names, with what its fetcher needs and its S3 key pattern
    /// parsed (here, once); a problem when the pattern does not parse, or when its section
    /// is missing (the file's checks name that too; the compile step lists it once).
    pub fn source(&self) -> Result<Source, Problem> {
        let missing = |kind: &str| {
            Problem::new(
                &format!("fetcher.{kind}"),
                "",
                &format!("missing: fetcher.type = \"{kind}\" reads [fetcher.{kind}]"),
            )
        };
        match self.kind {
            FetcherKind::File => {
                let file = self.file.as_ref().ok_or_else(|| missing("file"))?;
                Ok(Source::File { path: file.path.clone() })
            }
            FetcherKind::Kafka | FetcherKind::KafkaSinglePartition => Ok(Source::Kafka {
                config: self.kafka.clone().ok_or_else(|| missing("kafka"))?,
                single_partition: self.kind == FetcherKind::KafkaSinglePartition,
            }),
            FetcherKind::S3 | FetcherKind::Sls => {
                let s3 = self.s3.as_ref().ok_or_else(|| missing("s3"))?;
                let settings = s3.settings(self.sls.as_ref());
                let pattern = KeyPattern::parse(&settings.pattern).map_err(|e| {
                    let key = if s3.key.is_some() { "fetcher.s3.key" } else { "fetcher.s3.prefix" };
                    Problem::new(key, format!("{:?}", settings.pattern), &e.to_string())
                })?;
                Ok(Source::S3 { settings, pattern })
            }
        }
    }
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
    /// HAR 1.2 (`log.entries[]`), as browsers and mitmproxy write it.
    Har,
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
    /// The recorded answer, read when `[compare] baseline = "recorded"`: an object of
    /// `status`, `headers`, `body` or `body_base64` (named as in the record).
    pub response: String,
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
            response: "response".into(),
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
    /// Sessions in order: a key's next request is sent only after its previous response
    /// (or after `order_timeout`). Needs a key (`[analyzer] hash_field`) and key routing.
    pub ordered: bool,
    /// How long a key's request in flight holds its next one, at most (`ordered`).
    pub order_timeout: Millis,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            hash: HashStrategy::RoundRobin,
            credit_window: 20_000,
            heartbeat_timeout: Millis(std::time::Duration::from_secs(3)),
            drain_timeout: Millis(std::time::Duration::from_secs(30)),
            ordered: false,
            order_timeout: Millis(std::time::Duration::from_secs(5)),
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
    /// Which HTTP to speak to the target.
    pub http: HttpMode,
    /// HTTP/2 streams in flight per connection at most.
    pub max_streams: u32,
    /// PEM file of the CAs an https target's certificate is checked against, in place of
    /// the web PKI roots.
    pub target_ca: Option<PathBuf>,
    /// PEM files of the certificate chain and key shown to a target that asks (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for ReplayerConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            timeout: Millis(std::time::Duration::from_secs(10)),
            preserve_host: false,
            insecure_tls: false,
            http: HttpMode::Auto,
            max_streams: 100,
            target_ca: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `[replayer] http`: which HTTP replayers speak to the target.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HttpMode {
    /// gRPC calls over HTTP/2; other records over HTTP/1.1 on http://, and on https:// as
    /// ALPN settles (h2 preferred).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "1.1")]
    Http11,
    /// h2 over TLS on https://, h2c with prior knowledge on http://.
    #[serde(rename = "2")]
    Http2,
}

/// `[analyzer] earliest`'s default: 2000-01-01T00:00:00Z, Unix ns.
pub const EARLIEST_DEFAULT_NS: i64 = 946_684_800_000_000_000;
/// `[analyzer] max_ahead`'s default: how far past now a recorded time may be.
pub const MAX_AHEAD_DEFAULT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
