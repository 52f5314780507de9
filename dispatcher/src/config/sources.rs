//! The job file's recording sources beyond files: `[fetcher.kafka]`, `[fetcher.s3]`, and
//! Havok's `[fetcher.sls]`, whose SLS-API keys reprise has no use for (it reads SLS logs that
//! were shipped to OSS through `[fetcher.s3]`) but whose download knobs it honours.
//!
//! Secrets never come from the file: the SASL password from the environment variable named
//! by `sasl_password_env`, object-store credentials from the standard AWS chain.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Millis;

/// Brokers written as Havok did ("a:9092,b:9092") or as a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged, expecting = "expected brokers as \"host:9092,host2:9092\" or a list of \"host:port\"")]
pub enum Brokers {
    Text(String),
    List(Vec<String>),
}

impl Default for Brokers {
    fn default() -> Self {
        Brokers::Text(String::new())
    }
}

impl Brokers {
    /// librdkafka's `bootstrap.servers`.
    pub fn joined(&self) -> String {
        match self {
            Brokers::Text(s) => {
                s.split(',').map(str::trim).filter(|b| !b.is_empty()).collect::<Vec<_>>().join(",")
            }
            Brokers::List(l) => {
                l.iter().map(|b| b.trim()).filter(|b| !b.is_empty()).collect::<Vec<_>>().join(",")
            }
        }
    }
}

/// Where a Kafka record's time comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaTimestamp {
    /// The analyzer's timestamp field, as for files.
    #[default]
    Record,
    /// The Kafka message timestamp (create or log-append time, as the topic keeps it).
    Kafka,
}

/// `[fetcher.kafka]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    pub brokers: Brokers,
    pub topic: String,
    /// Partitions to read; all of the topic's when unset.
    pub partitions: Option<Vec<i32>>,
    /// Havok's meaning: -2 the oldest offset, -1 the newest, n that offset (in every
    /// partition read). Unset: from `[job] begin` by timestamp lookup when it is set, else
    /// the committed offset with `group_id`, else the oldest.
    pub offset: Option<i64>,
    /// Keep reading new messages after the end offsets found at start (live replay) until
    /// the job is stopped or passes `[job] end`.
    pub follow: bool,
    pub timestamp: KafkaTimestamp,
    /// Consumer group; offsets are committed only when it is set.
    pub group_id: Option<String>,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// The environment variable holding the SASL password.
    pub sasl_password_env: String,
    /// CA bundle (PEM) to verify the brokers with.
    pub ssl_ca_location: Option<String>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    /// How long to wait for the brokers at start before giving up.
    pub connect_timeout: Millis,
    /// Any other librdkafka consumer property, passed through as written.
    pub properties: BTreeMap<String, toml::Value>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Brokers::default(),
            topic: String::new(),
            partitions: None,
            offset: None,
            follow: false,
            timestamp: KafkaTimestamp::Record,
            group_id: None,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_env: "KAFKA_SASL_PASSWORD".into(),
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            connect_timeout: Millis(std::time::Duration::from_secs(10)),
            properties: BTreeMap::new(),
        }
    }
}

/// `[fetcher.s3]`: objects of an S3-compatible store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Any S3-compatible base URL (MinIO, OSS, GCS, moto); AWS when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    /// Listing prefix, put before `key`.
    pub prefix: String,
    /// Key pattern after the prefix: a glob (`*` within a path segment, `**` across) with
    /// time fields {yyyy} {MM} {dd} {HH} {mm} (UTC), e.g. "logs/{yyyy}/{MM}/{dd}/{HH}/*.jsonl.gz".
    pub key: Option<String>,
    /// Path-style URLs (endpoint/bucket/key), which most S3-compatible servers want.
    pub path_style: Option<bool>,
    /// Objects downloaded at once, ahead of the merge. Default 2 (or Havok's sls.concurrency):
    /// each costs about 10 MB besides its records (scripts/bench e).
    pub concurrency: Option<u32>,
    /// Records buffered ahead across the downloads. Default 10,000 (or Havok's sls.pre-download).
    #[serde(alias = "pre-download")]
    pub pre_download: Option<u32>,
    /// Attempts per object after the first, with backoff, on transient errors. Default 3.
    pub retries: Option<u32>,
}

/// Havok's `[fetcher.sls]`. Only the download knobs and region are used (as defaults for
/// `[fetcher.s3]`); the SLS-API keys are reported as warnings by `config::havok`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct HavokSls {
    pub region: Option<String>,
    pub concurrency: Option<u32>,
    #[serde(rename = "pre-download", alias = "pre_download")]
    pub pre_download: Option<u32>,
}

pub const S3_DEFAULT_CONCURRENCY: u32 = 2;
pub const S3_DEFAULT_PRE_DOWNLOAD: u32 = 10_000;
pub const S3_DEFAULT_RETRIES: u32 = 3;

/// `[fetcher.s3]` with Havok's `[fetcher.sls]` knobs and the defaults applied.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    /// The whole key pattern: prefix + key.
    pub pattern: String,
    pub path_style: bool,
    pub concurrency: u32,
    pub pre_download: u32,
    pub retries: u32,
}

impl S3Config {
    /// The whole key pattern as written: prefix + key (every object when `key` is unset).
    pub fn pattern_text(&self) -> String {
        format!("{}{}", self.prefix, self.key.as_deref().unwrap_or("**"))
    }

    pub fn settings(&self, sls: Option<&HavokSls>) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone().or_else(|| sls.and_then(|s| s.region.clone())),
            bucket: self.bucket.clone(),
            pattern: self.pattern_text(),
            // A custom endpoint is most likely an S3-compatible server that wants path style.
            path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
            concurrency: self
                .concurrency
                .or_else(|| sls.and_then(|s| s.concurrency))
                .unwrap_or(S3_DEFAULT_CONCURRENCY),
            pre_download: self
                .pre_download
                .or_else(|| sls.and_then(|s| s.pre_download))
                .unwrap_or(S3_DEFAULT_PRE_DOWNLOAD),
            retries: self.retries.unwrap_or(S3_DEFAULT_RETRIES),
        }
    }
}

/// Where a job reads its recording from, compiled from `[fetcher]` ([`super::FetcherConfig::source`]):
/// one variant a source, holding exactly what its fetcher needs, so no fetcher looks for a
/// section that might be missing.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file or a glob of files (`[fetcher.file] path`, relative paths resolved).
    File { path: String },
    /// A Kafka topic; `single_partition` is Havok's `kafka-single-partition` (partition 0).
    Kafka { config: KafkaConfig, single_partition: bool },
    /// Objects of an S3-compatible store (also Havok's `sls`), with their key pattern parsed.
    S3 { settings: S3Settings, pattern: super::KeyPattern },
}
