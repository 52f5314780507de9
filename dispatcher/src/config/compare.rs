//! `[compare]`: response comparison (issue 13). The candidate is the job's target; in the
//! `live` baseline, each record also goes to `primary` and `secondary` (the current release,
//! twice), the replayers compare the answers field by field, and fields that differ between
//! primary and secondary are noise. In the `recorded` baseline the answers the recording
//! holds (GoReplay's type 2 units, json records' `response`) are the baseline, and nothing
//! is noise but what `ignore` names.

use serde::{Deserialize, Deserializer};

use super::validate::{Problem, check_target};
use super::{Format, JobConfig, Millis};
use reprise_proto::compare::MAX_BODY_LIMIT;
use reprise_proto::fields::FieldPattern;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// `primary` and `secondary` targets answer beside the candidate.
    #[default]
    Live,
    /// The recording's own responses (GoReplay type 2 units, json `response` objects).
    Recorded,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct CompareConfig {
    pub baseline: Baseline,
    /// The current release, twice (live): base URLs, as `[job] target`.
    pub primary: Option<String>,
    pub secondary: Option<String>,
    /// Response headers compared (by name, any case); none by default.
    pub headers: Vec<String>,
    /// Fields left out: `status`, `body`, `header:NAME`, JSON paths (`$.items[*].id`).
    pub ignore: Vec<String>,
    /// Body bytes compared; a longer body is compared by its length and a hash.
    pub max_body: ByteSize,
    /// A descriptor set naming the fields of gRPC answers (`protoc --descriptor_set_out`).
    pub protoset: Option<std::path::PathBuf>,
    /// Diff rates are also counted window by window, this long (`window_diff_rate`, the
    /// live page's chart, `reprise_compare_window_requests`).
    pub window: Millis,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            baseline: Baseline::Live,
            primary: None,
            secondary: None,
            headers: Vec::new(),
            ignore: Vec::new(),
            max_body: ByteSize(1 << 20),
            protoset: None,
            window: Millis(std::time::Duration::from_secs(60)),
        }
    }
}

/// A size in bytes: a number, or a string with a unit (`"512KiB"`, `"1MiB"`, `"2MB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(scale).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a size: write bytes, or e.g. \"512KiB\", \"1MiB\""
                ))
            }),
        }
    }
}

impl CompareConfig {
    /// The `ignore` patterns in their normal form (those that parse; validation refused a
    /// job with one that does not).
    pub fn ignore_patterns(&self) -> Vec<String> {
        self.ignore
            .iter()
            .filter_map(|p| FieldPattern::parse(p).ok())
            .map(|p| p.as_str().to_owned())
            .collect()
    }
}

impl JobConfig {
    pub(super) fn validate_compare(&self, p: &mut Vec<Problem>) {
        let Some(c) = &self.compare else { return };
        if c.baseline == Baseline::Recorded {
            self.validate_recorded(p);
        }
        for (key, url) in [("compare.primary", &c.primary), ("compare.secondary", &c.secondary)] {
            match url.as_deref() {
                Some(u) if c.baseline == Baseline::Recorded => p.push(Problem::new(
                    key,
                    format!("{u:?}"),
                    "is for baseline = \"live\": the recorded baseline compares with the recording's own answers (remove it, or set baseline = \"live\")",
                )),
                None if c.baseline == Baseline::Live => p.push(Problem::new(
                    key,
                    "",
                    "is needed to compare live: the current release's base URL, e.g. \"http://primary:8080\"",
                )),
                Some(u) if u.starts_with("builtin:") => {
                    p.push(Problem::new(key, format!("{u:?}"), "must be an http(s) base URL"))
                }
                Some(u) => {
                    if let Err(rule) = check_target(u) {
                        p.push(Problem::new(key, format!("{u:?}"), &rule));
                    }
                }
                None => {}
            }
        }
        for (i, name) in c.headers.iter().enumerate() {
            if !reprise_proto::token::is_token(name.as_bytes()) {
                p.push(Problem::new(
                    &format!("compare.headers[{i}]"),
                    format!("{name:?}"),
                    "is not a header name",
                ));
            }
        }
        for (i, pattern) in c.ignore.iter().enumerate() {
            if let Err(e) = FieldPattern::parse(pattern) {
                p.push(Problem::new(&format!("compare.ignore[{i}]"), format!("{pattern:?}"), &e.to_string()));
            }
        }
        Self::validate_window(c.window.0, p);
        if c.max_body.0 == 0 || c.max_body.0 > MAX_BODY_LIMIT {
            p.push(Problem::new(
                "compare.max_body",
                c.max_body.0,
                "must be between 1 byte and 64MiB (\"1MiB\": longer bodies are compared by length and hash)",
            ));
        }
    }

    /// Windows of whole seconds, from a second to an hour.
    fn validate_window(w: std::time::Duration, p: &mut Vec<Problem>) {
        if w.subsec_nanos() != 0 || w.as_secs() == 0 || w.as_secs() > 3600 {
            p.push(Problem::new(
                "compare.window",
                format!("{w:?}"),
                "must be whole seconds from 1s to 1h (\"1m\": diff rates are also counted minute by minute)",
            ));
        }
    }

    /// The recorded baseline needs a recording that holds answers, where they can be found.
    fn validate_recorded(&self, p: &mut Vec<Problem>) {
        let kafka =
            matches!(self.fetcher.kind, super::FetcherKind::Kafka | super::FetcherKind::KafkaSinglePartition);
        match self.analyzer.format {
            Format::Combined => p.push(Problem::new(
                "compare.baseline",
                "\"recorded\"",
                "needs a recording with answers: combined access logs hold none (record as json with a `response` object, or as GoReplay with responses; or compare live)",
            )),
            Format::Gor if kafka => p.push(Problem::new(
                "compare.baseline",
                "\"recorded\"",
                "cannot pair GoReplay requests with their answers from Kafka: each comes in a message of its own, possibly in another partition (use json records with a `response` object, or a .gor file)",
            )),
            Format::Gor | Format::Json | Format::Har => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(section: &str) -> String {
        let text = format!(
            "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n[compare]\n{section}"
        );
        match JobConfig::parse(&text) {
            Ok(_) => String::new(),
            Err(p) => p.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        }
    }

    #[test]
    fn a_live_comparison_needs_both_baselines_and_valid_patterns() {
        assert_eq!(
            problems(
                "primary = \"http://127.0.0.1:2\"\nsecondary = \"http://127.0.0.1:3\"\nignore = [\"$.ts\", \"header:Date\"]\nmax_body = \"2MiB\""
            ),
            ""
        );
        let p = problems("primary = \"ftp://x\"\nheaders = [\"a b\"]\nignore = [\"ts\"]\nmax_body = 0");
        for says in [
            "compare.primary",
            "compare.secondary",
            "compare.headers[0]",
            "compare.ignore[0]",
            "JSON path such as",
            "compare.max_body",
        ] {
            assert!(p.contains(says), "{says} in:\n{p}");
        }
        assert_eq!(problems("baseline = \"recorded\"\nheaders = [\"ETag\"]"), "");
        let p = problems("baseline = \"recorded\"\nprimary = \"http://127.0.0.1:2\"");
        assert!(p.contains("compare.primary") && p.contains("is for baseline = \"live\""), "{p}");
        let combined = "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n[analyzer]\nformat = \"combined\"\n[compare]\nbaseline = \"recorded\"\n";
        let p = JobConfig::parse(combined).expect_err("no answers in combined logs");
        assert!(p.iter().any(|p| p.to_string().contains("combined access logs hold none")), "{p:?}");
        let kafka = "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = [\"127.0.0.1:9092\"]\ntopic = \"t\"\n[analyzer]\nformat = \"gor\"\n[compare]\nbaseline = \"recorded\"\n";
        let p = JobConfig::parse(kafka).expect_err("GoReplay answers cannot be paired from Kafka");
        assert!(p.iter().any(|p| p.to_string().contains("cannot pair GoReplay requests")), "{p:?}");
        assert!(JobConfig::parse(&kafka.replace("format = \"gor\"", "format = \"json\"")).is_ok());
        assert!(problems("max_body = \"1 lightyear\"").contains("is not a size"));
        assert_eq!(problems("baseline = \"recorded\"\nwindow = \"10s\""), "");
        for bad in ["0s", "1500ms", "2h"] {
            let p = problems(&format!("baseline = \"recorded\"\nwindow = \"{bad}\""));
            assert!(p.contains("compare.window") && p.contains("whole seconds"), "{bad}: {p}");
        }
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(ByteSize::parse("1MiB"), Some(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("512 KiB"), Some(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("2MB"), Some(ByteSize(2_000_000)));
        assert_eq!(ByteSize::parse("10"), Some(ByteSize(10)));
        assert_eq!(ByteSize::parse("MiB"), None);
        assert_eq!(ByteSize::parse("99999999999999GiB"), None);
    }
}
