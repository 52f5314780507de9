//! The job file's sections about results: `[stats]` (endpoint grouping), `[reporter.*]`
//! (live sinks) and `[thresholds]` (the CI gate).

use serde::Deserialize;

use super::Millis;

/// `[reporter.*]`: live sinks.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SinksConfig {
    pub influxdb: Option<InfluxConfig>,
    pub raw: Option<RawConfig>,
}

/// `[reporter.raw]`: a line per request into `dir/current`, rolled every `rotate_lines`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub dir: String,
    pub rotate_lines: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self { dir: String::new(), rotate_lines: 100_000 }
    }
}

/// `[reporter.influxdb]`: Havok's keys (url, database, user, password) for API v1, or org,
/// bucket and a token from the environment for v2.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct InfluxConfig {
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

impl Default for InfluxConfig {
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

impl InfluxConfig {
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
pub struct StatsConfig {
    /// First match wins: `{ pattern = "^/users/[0-9]+$", name = "GET /users/{id}" }`.
    pub endpoints: Vec<EndpointRule>,
    /// Distinct endpoints kept apart in the whole job, first come; the rest count as "other".
    pub max_endpoints: u32,
    /// Path segments that look like ids read as `{id}` in the names of endpoints no rule
    /// names: `true` (every kind), `false`, or a list of kinds.
    pub templates: Templates,
    /// More segment shapes to read as ids: regexes, each matched against one whole segment.
    pub id_patterns: Vec<String>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            max_endpoints: 1000,
            templates: Templates::All(true),
            id_patterns: Vec::new(),
        }
    }
}

/// `[stats] templates`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "expected true, false, or a list of id kinds from \"number\", \"uuid\", \"hex\", \"base64\""
)]
pub enum Templates {
    All(bool),
    Kinds(Vec<IdKind>),
}

impl Templates {
    pub fn has(&self, kind: IdKind) -> bool {
        match self {
            Templates::All(on) => *on,
            Templates::Kinds(kinds) => kinds.contains(&kind),
        }
    }
}

/// A shape of id in a path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// Digits only: `4711`.
    Number,
    /// 8-4-4-4-12 hex digits: `0b1e9c2a-5f4d-4e7b-9a31-2c8d6f0e4b17`.
    Uuid,
    /// Eight or more hex digits, with both digits and letters: `5f1d7c2e9a`.
    Hex,
    /// Sixteen or more of `A-Za-z0-9-_` (and `=` padding) with both digits and letters; with
    /// `-` or `_` in it, mixed case too (so a lowercase slug is not an id).
    Base64,
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
#[serde(
    untagged,
    expecting = "expected a list of threshold expressions like [\"p99 < 300ms\"], or abort_on_fail = true"
)]
pub enum ThresholdEntry {
    Rules(Vec<String>),
    Flag(bool),
}

/// The `[thresholds]` key that is a flag, not an endpoint.
pub const ABORT_ON_FAIL: &str = "abort_on_fail";
