//! Checks of the job file's recording sources (`[fetcher.*]`). What needs parsing (the S3
//! key pattern) is left to the compile step, which parses it once into the plan's
//! [`super::Source`] ([`super::FetcherConfig::source`]).

use super::validate::Problem;
use super::{FetcherKind, JobConfig, KafkaConfig, S3Settings};

impl JobConfig {
    pub(super) fn validate_fetcher(&self, p: &mut Vec<Problem>) {
        let kind = self.fetcher.kind.as_str();
        match self.fetcher.kind {
            FetcherKind::File => match &self.fetcher.file {
                None => p.push(Problem::new(
                    "fetcher.file",
                    "",
                    "is required when fetcher.type = \"file\": add [fetcher.file] with path = \"recording.jsonl\"",
                )),
                Some(f) if f.path.trim().is_empty() => {
                    p.push(Problem::new("fetcher.file.path", "\"\"", "must name a file or a glob of files"));
                }
                Some(f) => {
                    if let Err(e) = glob::Pattern::new(&f.path) {
                        p.push(Problem::new("fetcher.file.path", format!("{:?}", f.path), &format!("is not a valid glob: {e}")));
                    }
                }
            },
            FetcherKind::Kafka | FetcherKind::KafkaSinglePartition => match &self.fetcher.kafka {
                None => p.push(Problem::new(
                    "fetcher.kafka",
                    "",
                    &format!("is required when fetcher.type = \"{kind}\": add [fetcher.kafka] with brokers and topic"),
                )),
                Some(k) => self.validate_kafka(k, p),
            },
            FetcherKind::S3 | FetcherKind::Sls => match &self.fetcher.s3 {
                None => p.push(Problem::new(
                    "fetcher.s3",
                    "",
                    &format!(
                        "is required when fetcher.type = \"{kind}\": add [fetcher.s3] with bucket and key \
                         (SLS logs are read where SLS ships them, an OSS bucket)"
                    ),
                )),
                Some(s3) => validate_s3(&s3.settings(self.fetcher.sls.as_ref()), p),
            },
        }
    }

    fn validate_kafka(&self, k: &KafkaConfig, p: &mut Vec<Problem>) {
        if k.brokers.joined().is_empty() {
            p.push(Problem::new(
                "fetcher.kafka.brokers",
                "\"\"",
                "must list the brokers, e.g. \"127.0.0.1:9092\"",
            ));
        }
        if k.topic.trim().is_empty() {
            p.push(Problem::new("fetcher.kafka.topic", "\"\"", "must name the topic holding the recording"));
        }
        if let Some(parts) = &k.partitions {
            if parts.is_empty() || parts.iter().any(|&n| n < 0) {
                p.push(Problem::new(
                    "fetcher.kafka.partitions",
                    format!("{parts:?}"),
                    "must list partition numbers (0 or more), or be left out to read them all",
                ));
            }
            if self.fetcher.kind == FetcherKind::KafkaSinglePartition {
                p.push(Problem::new(
                    "fetcher.kafka.partitions",
                    format!("{parts:?}"),
                    "kafka-single-partition reads partition 0 only (as Havok did); use fetcher.type = \"kafka\" to choose partitions",
                ));
            }
        }
        self.validate_group(k, p);
        if let Some(o) = k.offset
            && o < -2
        {
            p.push(Problem::new(
                "fetcher.kafka.offset",
                o,
                "must be -2 (oldest), -1 (newest) or an offset ≥ 0",
            ));
        }
        if let Some(sp) = &k.security_protocol
            && !matches!(
                sp.to_ascii_lowercase().as_str(),
                "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
            )
        {
            p.push(Problem::new(
                "fetcher.kafka.security_protocol",
                format!("{sp:?}"),
                "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
            ));
        }
        if let Some(m) = &k.sasl_mechanism {
            if !matches!(m.to_ascii_uppercase().as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                p.push(Problem::new(
                    "fetcher.kafka.sasl_mechanism",
                    format!("{m:?}"),
                    "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
            if k.sasl_username.as_deref().is_none_or(str::is_empty) {
                p.push(Problem::new(
                    "fetcher.kafka.sasl_username",
                    "",
                    "is required with sasl_mechanism (the password comes from the environment variable named by sasl_password_env)",
                ));
            }
        }
        for (key, v) in &k.properties {
            if matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) {
                p.push(Problem::new(
                    &format!("fetcher.kafka.properties.{key}"),
                    v,
                    "must be a string, number or boolean (a librdkafka property value)",
                ));
            }
        }
    }

    /// In follow mode a consumer group shares out every partition of the topic and starts
    /// each at its commit: partitions and offsets the job file chooses cannot hold.
    fn validate_group(&self, k: &KafkaConfig, p: &mut Vec<Problem>) {
        if !(k.follow && k.group_id.is_some()) {
            return;
        }
        let group = "with follow = true and group_id, the consumer group assigns the partitions and each starts at the group's committed offset";
        if let Some(parts) = &k.partitions {
            p.push(Problem::new(
                "fetcher.kafka.partitions",
                format!("{parts:?}"),
                &format!("{group}: leave partitions out, or remove group_id to read these partitions"),
            ));
        } else if self.fetcher.kind == FetcherKind::KafkaSinglePartition {
            p.push(Problem::new(
                "fetcher.type",
                "\"kafka-single-partition\"",
                &format!("{group}: use fetcher.type = \"kafka\", or remove group_id"),
            ));
        }
        if let Some(o) = k.offset {
            p.push(Problem::new(
                "fetcher.kafka.offset",
                o,
                &format!("{group}: leave offset out, or remove group_id to start from an offset"),
            ));
        }
    }
}

/// Checks `[fetcher.s3]`, its key pattern aside.
fn validate_s3(s: &S3Settings, p: &mut Vec<Problem>) {
    if s.bucket.trim().is_empty() {
        p.push(Problem::new("fetcher.s3.bucket", "\"\"", "must name the bucket holding the recording"));
    }
    if let Some(e) = &s.endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        p.push(Problem::new(
            "fetcher.s3.endpoint",
            format!("{e:?}"),
            "must be a URL such as \"https://oss-cn-hangzhou.aliyuncs.com\" or \"http://127.0.0.1:9000\"; leave it out for AWS",
        ));
    }
    if !(1..=256).contains(&s.concurrency) {
        p.push(Problem::new("fetcher.s3.concurrency", s.concurrency, "must be between 1 and 256"));
    }
    if s.pre_download == 0 {
        p.push(Problem::new("fetcher.s3.pre_download", 0, "must be at least 1 (records buffered ahead)"));
    }
    if s.retries > 20 {
        p.push(Problem::new("fetcher.s3.retries", s.retries, "must be at most 20"));
    }
}
