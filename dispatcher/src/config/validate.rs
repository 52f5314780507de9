//! Every rule of the job file, checked at once: `reprise validate` lists all problems, each
//! naming its key path, the value found and the rule it breaks.

use std::fmt;

use super::{JobConfig, Speed};

/// The warning for a job without `[job] target` (as Havok's files are: there each replayer
/// decided where to send).
pub const NO_JOB_TARGET: &str = "not set: each replayer sends to its own --target URL (or REPRISE_TARGET), and one \
     without refuses the job; `reprise run` and `reprise dispatcher` take --target too";

/// One problem in a job file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Dotted key path, e.g. `job.speed`; empty when the file itself cannot be parsed.
    pub key: String,
    /// The value found, as written; empty when the key is missing or unknown.
    pub value: String,
    /// What the key must be, and how to fix it.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.value.is_empty()) {
            (true, _) => write!(f, "{}", self.rule),
            (false, true) => write!(f, "{}: {}", self.key, self.rule),
            (false, false) => write!(f, "{} = {}: {}", self.key, self.value, self.rule),
        }
    }
}

impl Problem {
    pub(crate) fn new(key: &str, value: impl fmt::Display, rule: &str) -> Self {
        Self { key: key.into(), value: value.to_string(), rule: rule.into() }
    }

    pub(super) fn unknown_key(key: &str) -> Self {
        Self::new(key, "", "unknown key; docs/job-file.md lists the keys a job file takes")
    }

    pub(super) fn havok_key(key: &str, why: &str) -> Self {
        Self::new(key, "", &format!("Havok key not used by reprise: {why}"))
    }

    /// A TOML syntax or type error; toml's message already names the line and key.
    pub(super) fn syntax(e: &toml::de::Error) -> Self {
        Self::new("", "", e.to_string().trim_end())
    }
}

impl JobConfig {
    /// What is allowed but worth a word: printed as warnings, never errors.
    pub(super) fn advise(&self) -> Vec<Problem> {
        let mut w = Vec::new();
        if self.job.target.is_none() {
            w.push(Problem::new("job.target", "", NO_JOB_TARGET));
        }
        w
    }

    /// Stages: each has a duration and a target; a pace ramps within its kind (speed after a
    /// speed, qps after a qps: the ramp starts where the pace is); the job lasts at least
    /// as long as its stages.
    fn validate_stages(&self, p: &mut Vec<Problem>) {
        let job = &self.job;
        let mut pace = job.pace();
        for (i, st) in job.stages.iter().enumerate() {
            let key = |f: &str| format!("job.stages[{i}].{f}");
            if st.duration.is_none() {
                p.push(Problem::new(&key("duration"), "", "is required: how long the stage ramps (\"30s\")"));
            }
            if st.speed.is_none() && st.qps.is_none() && st.rate.is_none() {
                p.push(Problem::new(&format!("job.stages[{i}]"), "", "needs a target: speed, qps or rate"));
            }
            for (field, v, max) in [("speed", st.speed, 1e6), ("qps", st.qps, 1e7), ("rate", st.rate, 1000.0)]
            {
                if let Some(v) = v
                    && !(v.is_finite() && v > 0.0 && v <= max)
                {
                    p.push(Problem::new(&key(field), v, &format!("must be a number > 0 and ≤ {max}")));
                }
            }
            match (pace, st.speed, st.qps) {
                (_, Some(_), Some(_)) => {
                    p.push(Problem::new(&key("qps"), "", "and speed both set the pace; keep one"))
                }
                (Speed::Qps(_), Some(_), None)
                | (Speed::Max, Some(_), None)
                | (Speed::Factor(_), None, Some(_))
                | (Speed::Max, None, Some(_)) => {
                    p.push(Problem::new(
                        &key(if st.speed.is_some() { "speed" } else { "qps" }),
                        "",
                        &format!(
                            "cannot ramp from the pace before it ({pace}): a speed ramps from a speed, a qps from a qps; \
                             set [job] speed or [job] qps to where the ramp starts"
                        ),
                    ));
                }
                (_, Some(sp), None) => pace = Speed::Factor(sp),
                (_, None, Some(q)) => pace = Speed::Qps(q),
                _ => {}
            }
        }
        if let (Some(d), false) = (job.duration, job.stages.is_empty()) {
            let total: std::time::Duration = job.stages.iter().filter_map(|s| s.duration).map(|d| d.0).sum();
            if d.0 < total {
                p.push(Problem::new(
                    "job.duration",
                    format!("{:?}", d.0),
                    &format!(
                        "is shorter than the stages ({total:?}); leave it out to end with the last stage"
                    ),
                ));
            }
        }
    }

    /// Checks every rule the types cannot express; returns all problems found. What needs
    /// compiling (regexes, threshold expressions, the S3 key pattern) and reading (tables)
    /// is left to the compile step ([`crate::plan::compile`]), which makes each once.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        self.validate_pace(&mut p);
        self.validate_stages(&mut p);
        self.validate_job(&mut p);
        self.validate_fetcher(&mut p);
        self.validate_analyzer(&mut p);
        self.validate_runtime(&mut p);
        self.validate_stats(&mut p);
        self.validate_shaping(&mut p);
        self.validate_reporters(&mut p);
        self.validate_compare(&mut p);
        p
    }

    /// How fast and how much: rate, speed or qps (one of the two), gaps, duration, loop.
    fn validate_pace(&self, p: &mut Vec<Problem>) {
        let job = &self.job;
        if !(job.rate.is_finite() && job.rate > 0.0 && job.rate <= 1000.0) {
            p.push(Problem::new("job.rate", job.rate, "must be a number > 0 and ≤ 1000 (copies per record)"));
        }
        if let Speed::Factor(x) = job.speed
            && !(x.is_finite() && x > 0.0)
        {
            p.push(Problem::new("job.speed", x, "must be a number > 0 (2 = twice as fast) or \"max\""));
        }
        if let Some(q) = job.qps {
            if !(q.is_finite() && q > 0.0 && q <= 10_000_000.0) {
                p.push(Problem::new(
                    "job.qps",
                    q,
                    "must be a number > 0 and ≤ 10,000,000 (requests a second)",
                ));
            }
            if job.speed != Speed::default() {
                p.push(Problem::new(
                    "job.qps",
                    q,
                    &format!("and job.speed = {} both set the pace; keep one", job.speed),
                ));
            }
        }
        if let Some(g) = job.max_gap
            && g.0.is_zero()
        {
            p.push(Problem::new(
                "job.max_gap",
                "0",
                "must be more than 0 (\"1s\": longer gaps are cut to 1 s)",
            ));
        }
        if let Some(d) = job.duration
            && d.0.is_zero()
        {
            p.push(Problem::new(
                "job.duration",
                "0",
                "must be more than 0 (\"30m\": the job ends 30 minutes after its start)",
            ));
        }
        let kafka =
            matches!(self.fetcher.kind, super::FetcherKind::Kafka | super::FetcherKind::KafkaSinglePartition);
        if job.repeat && kafka && self.fetcher.kafka.as_ref().is_some_and(|k| k.follow) {
            p.push(Problem::new(
                "job.loop",
                "true",
                "a followed topic never ends, so it cannot loop; set duration alone to end the job after a time",
            ));
        }
    }

    /// The rest of `[job]`: the time range, the target and the replayers.
    fn validate_job(&self, p: &mut Vec<Problem>) {
        let job = &self.job;
        if let (Some(b), Some(e)) = (job.begin, job.end)
            && b > e
        {
            p.push(Problem::new("job.end", e.0 / 1_000_000, "must not be before job.begin"));
        }
        if let Some(t) = job.target.as_deref()
            && let Err(rule) = check_target(t)
        {
            p.push(Problem::new("job.target", format!("{t:?}"), &rule));
        }
        if job.replayers == 0 || job.replayers > 1024 {
            p.push(Problem::new("job.replayers", job.replayers, "must be between 1 and 1024"));
        }
        if job.min_replayers == 0 {
            p.push(Problem::new("job.min_replayers", 0, "must be at least 1"));
        }
        if job.reorder_window.0 > std::time::Duration::from_secs(600) {
            p.push(Problem::new(
                "job.reorder_window",
                format!("{:?}", job.reorder_window.0),
                "must be at most 10 minutes",
            ));
        }
    }

    fn validate_reporters(&self, p: &mut Vec<Problem>) {
        if let Some(r) = &self.reporter.raw {
            if r.dir.trim().is_empty() {
                p.push(Problem::new("reporter.raw.dir", "\"\"", "must name a directory for the raw results"));
            }
            if r.rotate_lines == 0 {
                p.push(Problem::new("reporter.raw.rotate_lines", 0, "must be at least 1"));
            }
        }
        let Some(i) = &self.reporter.influxdb else { return };
        if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
            p.push(Problem::new(
                "reporter.influxdb.url",
                format!("{:?}", i.url),
                "must be the InfluxDB base URL, e.g. \"http://127.0.0.1:8086\"",
            ));
        }
        match (&i.database, &i.bucket) {
            (Some(_), Some(_)) => p.push(Problem::new(
                "reporter.influxdb",
                "",
                "set database (API v1) or bucket (API v2), not both",
            )),
            (None, None) => p.push(Problem::new(
                "reporter.influxdb",
                "",
                "needs database (API v1: database, user, password) or bucket (API v2: org, bucket, token from $INFLUX_TOKEN)",
            )),
            _ => {}
        }
    }

    fn validate_stats(&self, p: &mut Vec<Problem>) {
        for (i, rule) in self.stats.endpoints.iter().enumerate() {
            if rule.name.trim().is_empty() {
                p.push(Problem::new(&format!("stats.endpoints[{i}].name"), "\"\"", "must name the endpoint"));
            }
        }
        if self.stats.max_endpoints == 0 || self.stats.max_endpoints > 100_000 {
            p.push(Problem::new(
                "stats.max_endpoints",
                self.stats.max_endpoints,
                "must be between 1 and 100000",
            ));
        }
    }

    fn validate_analyzer(&self, p: &mut Vec<Problem>) {
        if let Some(h) = &self.analyzer.hash_field {
            let ok = h
                .split_once(':')
                .is_some_and(|(kind, name)| matches!(kind, "header" | "query" | "json") && !name.is_empty());
            if !ok {
                p.push(Problem::new(
                    "analyzer.hash_field",
                    format!("{h:?}"),
                    "must be \"header:NAME\", \"query:NAME\" or \"json:NAME\"",
                ));
            }
        }
        let f = &self.analyzer.fields;
        for (key, v) in [
            ("ts", &f.ts),
            ("method", &f.method),
            ("url", &f.url),
            ("headers", &f.headers),
            ("body", &f.body),
            ("body_base64", &f.body_base64),
            ("response", &f.response),
        ] {
            if v.is_empty() {
                p.push(Problem::new(&format!("analyzer.fields.{key}"), "\"\"", "must name a JSON field"));
            }
        }
    }
}

/// A target is "builtin:echo" or an absolute http(s) URL with a host and no query.
/// A job's target: an http(s) base URL with a host and no query, or "builtin:echo" (the
/// rule broken when not); `[job] target` and `--target` of `run` and `dispatcher`.
pub fn check_target(t: &str) -> Result<(), String> {
    if t == "builtin:echo" {
        return Ok(());
    }
    let rule = "must be an http:// or https:// base URL with a host, e.g. \"http://127.0.0.1:8080\", or \"builtin:echo\"";
    let uri: http_uri::Uri = t.parse().map_err(|_| rule.to_owned())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(rule.to_owned());
    }
    Ok(())
}

mod http_uri {
    pub use axum::http::Uri;
}

/// A problem at `key` when `pattern` is not a regex, with the regex crate's reason.
/// The problem of a regex at `key` that does not compile, with the last line of the regex
/// crate's message (the one that says why; the lines above draw the pattern again).
pub(crate) fn not_a_regex(key: &str, pattern: &str, e: &regex::Error) -> Problem {
    let text = e.to_string();
    let why = text.lines().last().unwrap_or_default().trim_start_matches("error: ");
    Problem::new(key, format!("{pattern:?}"), &format!("is not a regex: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        JobConfig::parse(text).expect_err("should be invalid")
    }

    const MINIMAL: &str = "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x.jsonl\"\n";

    #[test]
    fn pacing_keys_are_checked_qps_is_one_pace_and_a_followed_topic_cannot_loop() {
        let text = "[job]\ntarget = \"http://127.0.0.1:1\"\nspeed = 2\nqps = 0\nmax_gap = 0\n[fetcher.file]\npath = \"x\"\n";
        let shown: Vec<String> = problems(text).iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|p| p.contains("job.qps = 0: must be a number > 0")), "{shown:#?}");
        assert!(shown.iter().any(|p| p.contains("job.speed = 2 both set the pace")), "{shown:#?}");
        assert!(shown.iter().any(|p| p.starts_with("job.max_gap")), "{shown:#?}");
        let ok = JobConfig::parse("[job]\ntarget = \"http://127.0.0.1:1\"\nqps = 250\nmax_gap = \"1s\"\n[fetcher.file]\npath = \"x\"\n")
            .expect("valid");
        assert_eq!(ok.job.pace(), Speed::Qps(250.0));
        let kafka = "[job]\ntarget = \"http://127.0.0.1:1\"\nloop = true\nduration = 0\n[fetcher]\ntype = \"kafka\"\n\
                     [fetcher.kafka]\nbrokers = [\"127.0.0.1:9092\"]\ntopic = \"t\"\nfollow = true\n";
        let shown: Vec<String> = problems(kafka).iter().map(ToString::to_string).collect();
        assert!(
            shown.iter().any(|p| p.starts_with("job.loop = true: a followed topic never ends")),
            "{shown:#?}"
        );
        assert!(shown.iter().any(|p| p.starts_with("job.duration = 0")), "{shown:#?}");
        let stages = "[job]\ntarget = \"http://127.0.0.1:1\"\nduration = \"1s\"\n[[job.stages]]\nqps = 100\n\
                      [[job.stages]]\nduration = \"2s\"\n[fetcher.file]\npath = \"x\"\n";
        let shown: Vec<String> = problems(stages).iter().map(ToString::to_string).collect();
        for want in [
            "job.stages[0].duration: is required",
            "job.stages[0].qps: cannot ramp from the pace before it (1)",
            "job.stages[1]: needs a target",
            "job.duration = 1s: is shorter than the stages (2s)",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(want)), "{want}: {shown:#?}");
        }
        let follow_for_a_while = kafka.replace("loop = true\nduration = 0", "duration = \"30m\"");
        let cfg =
            JobConfig::parse(&follow_for_a_while).expect("a duration alone ends a followed topic's job");
        assert!(cfg.job.loops(), "and would loop a source that ends");
    }

    /// Ordering needs a key and key routing; each missing part is named with its fix.
    #[test]
    fn ordered_sessions_need_a_key_and_key_routing() {
        let text = format!("{MINIMAL}[proxy]\nordered = true\norder_timeout = 0\n");
        let shown: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
        for want in [
            "proxy.order_timeout = 0: must be longer than zero",
            "proxy.ordered = true: needs a key to order by: set [analyzer] hash_field",
            "proxy.ordered = true: needs [proxy] hash = \"fnv\" or \"consistent\"",
        ] {
            assert!(shown.iter().any(|p| p.starts_with(want)), "{want}: {shown:#?}");
        }
        let ok = format!(
            "{MINIMAL}[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nordered = true\nhash = \"consistent\"\norder_timeout = \"250ms\"\n"
        );
        let cfg = JobConfig::parse(&ok).expect("valid");
        assert!(cfg.proxy.ordered);
        assert_eq!(cfg.proxy.order_timeout.0, std::time::Duration::from_millis(250));
        assert_eq!(JobConfig::parse(MINIMAL).expect("valid").proxy.order_timeout.0.as_secs(), 5);
    }

    #[test]
    fn a_minimal_file_is_valid_with_defaults() {
        let cfg = JobConfig::parse(MINIMAL).expect("valid");
        assert_eq!(cfg.job.rate, 1.0);
        assert_eq!(cfg.job.speed, Speed::Factor(1.0));
        assert_eq!(cfg.job.min_replayers, 1);
    }

    /// serde stops at the first value of a wrong type; the loader lists them all, beside the
    /// unknown keys and the rules of the rest, and a key of the wrong type is not reported
    /// again by its rule (job.target here: wrong, not missing).
    #[test]
    fn every_value_of_a_wrong_type_is_listed_at_once() {
        let text = "[job]\ntarget = 5\nreplayers = \"two\"\nspeed = [1]\nrate = -1\nbogus = 1\n\
                    [fetcher.file]\npath = 3\n[proxy]\nheartbeat_timeout = true\n\
                    [[stats.endpoints]]\npattern = \"^/a$\"\nname = 7\n[replayer]\nconcurrency = -1\n";
        let ps = problems(text);
        let shown: Vec<String> = ps.iter().map(ToString::to_string).collect();
        for expected in [
            "job.target = 5: invalid type: integer `5`, expected a string",
            "job.replayers = \"two\": invalid type: string \"two\", expected u32",
            "job.speed = [1]: expected a number > 0 (2 = twice as fast) or \"max\"",
            "fetcher.file.path = 3: invalid type: integer `3`, expected a string",
            "proxy.heartbeat_timeout = true: expected a duration like \"3s\" or \"250ms\", or milliseconds",
            "stats.endpoints[0].name = 7: invalid type: integer `7`, expected a string",
            "replayer.concurrency = -1: invalid value: integer `-1`, expected u32",
        ] {
            assert!(shown.iter().any(|s| s == expected), "missing {expected:?} in {shown:#?}");
        }
        assert!(ps.iter().any(|p| p.key == "job.bogus"), "unknown keys still listed: {shown:#?}");
        assert!(ps.iter().any(|p| p.key == "job.rate"), "rules of the rest still checked: {shown:#?}");
        assert_eq!(ps.iter().filter(|p| p.key == "job.target").count(), 1, "{shown:#?}");
        assert_eq!(ps.len(), 9, "{shown:#?}");
    }

    #[test]
    fn every_problem_is_listed_with_key_value_and_rule() {
        let text = "[job]\nrate = -1\nspeed = 0\ntargte = \"x\"\n[fetcher.file]\npath = \"\"\n[analyzer]\nhash_field = \"cookie\"\n[replayer]\nconcurrency = 0\n";
        let ps = problems(text);
        let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "job.targte",
            "job.rate",
            "job.speed",
            "fetcher.file.path",
            "analyzer.hash_field",
            "replayer.concurrency",
        ] {
            assert!(keys.contains(&k), "missing {k} in {ps:?}");
        }
        let rate = ps.iter().find(|p| p.key == "job.rate").expect("rate");
        assert_eq!(rate.value, "-1");
        assert!(rate.to_string().contains("must be a number > 0"), "{rate}");
    }

    /// Havok's files have no target (each replayer decided): a warning, not an error; a
    /// target that is there must still be a usable one.
    #[test]
    fn a_job_without_a_target_is_valid_with_a_warning_naming_the_rule() {
        let checked = JobConfig::check("[job]\n[fetcher.file]\npath = \"x.jsonl\"\n");
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert_eq!(checked.config.expect("valid").job.target, None);
        let w: Vec<String> = checked.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w, [format!("job.target: {NO_JOB_TARGET}")]);
        assert!(JobConfig::check(MINIMAL).warnings.is_empty());
        let ps = problems("[job]\ntarget = \"staging:8080\"\n[fetcher.file]\npath = \"x.jsonl\"\n");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0].to_string().starts_with("job.target = \"staging:8080\": must be an http://"),
            "{}",
            ps[0]
        );
    }

    #[test]
    fn a_type_error_names_the_key() {
        let ps = problems("[job]\ntarget = \"http://h\"\nrate = \"fast\"\n[fetcher.file]\npath = \"x\"\n");
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!((ps[0].key.as_str(), ps[0].value.as_str()), ("job.rate", "\"fast\""), "{}", ps[0]);
    }

    #[test]
    fn havok_keys_load_as_they_are() {
        let text = "[job]\nrate = 2.0\nspeed = 1.5\nbegin = 1700000000000\nend = \"2023-11-14T22:20:00Z\"\ntarget = \"http://127.0.0.1:9\"\n[fetcher]\ntype = \"file\"\n[fetcher.file]\npath = \"/tmp/r.log\"\n[service]\nhttp = \":8080\"\ngrpc = \":8081\"\n";
        let cfg = JobConfig::parse(text).expect("havok file");
        assert_eq!(cfg.job.begin, Some(super::super::Instant(1_700_000_000_000_000_000)));
        assert_eq!(cfg.service.grpc.0.port(), 8081);
    }

    #[test]
    fn targets_must_be_base_urls() {
        assert!(check_target("builtin:echo").is_ok());
        assert!(check_target("https://staging.example:8443").is_ok());
        assert!(check_target("ftp://x").is_err());
        assert!(check_target("/just/a/path").is_err());
        assert!(check_target("http://h/?q=1").is_err());
    }

    #[test]
    fn templates_are_a_flag_or_kinds() {
        let ps = problems(&format!("{MINIMAL}[stats]\ntemplates = [\"number\", \"ulid\"]\n"));
        assert_eq!(ps[0].key, "stats.templates", "{ps:?}");
        assert!(ps[0].rule.contains("\"number\", \"uuid\", \"hex\", \"base64\""), "{}", ps[0]);
        let cfg = JobConfig::parse(&format!("{MINIMAL}[stats]\ntemplates = [\"uuid\"]\n")).expect("valid");
        assert_eq!(cfg.stats.templates, crate::config::Templates::Kinds(vec![crate::config::IdKind::Uuid]));
    }

    #[test]
    fn begin_after_end_is_refused() {
        let ps = problems(
            "[job]\ntarget = \"http://h\"\nbegin = 2000\nend = 1000\n[fetcher.file]\npath = \"x\"\n",
        );
        assert_eq!(ps[0].key, "job.end");
    }

    #[test]
    fn kafka_and_s3_sections_list_every_problem() {
        let text = "[job]\ntarget = \"http://t\"\n[fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = \"\"\noffset = -5\nsasl_mechanism = \"GSSAPI\"\n[fetcher.kafka.properties]\nx = [1]\n";
        let keys: Vec<String> = JobConfig::parse(text).expect_err("bad").into_iter().map(|p| p.key).collect();
        for key in [
            "fetcher.kafka.brokers",
            "fetcher.kafka.topic",
            "fetcher.kafka.offset",
            "fetcher.kafka.sasl_mechanism",
            "fetcher.kafka.sasl_username",
            "fetcher.kafka.properties.x",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        let text = "[job]\ntarget = \"http://t\"\n[fetcher]\ntype = \"sls\"\n[fetcher.s3]\nendpoint = \"ftp://x\"\nkey = \"{dd}/*\"\nconcurrency = 0\n";
        let keys: Vec<String> = JobConfig::parse(text).expect_err("bad").into_iter().map(|p| p.key).collect();
        // The key pattern ({dd} without {MM}) is parsed by the compile step: `plan` tests it.
        for key in ["fetcher.s3.bucket", "fetcher.s3.endpoint", "fetcher.s3.concurrency"] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
        // In follow mode a consumer group chooses the partitions and where each starts.
        let text = "[job]\ntarget = \"http://t\"\n[fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = \"b:9092\"\ntopic = \"t\"\nfollow = true\ngroup_id = \"g\"\npartitions = [1]\noffset = 3\n";
        let problems = JobConfig::parse(text).expect_err("a group with partitions and offset");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["fetcher.kafka.partitions", "fetcher.kafka.offset"], "{problems:?}");
        assert!(problems[0].rule.contains("remove group_id"), "{problems:?}");
        let grouped = text.replace("partitions = [1]\noffset = 3\n", "");
        assert!(JobConfig::parse(&grouped).is_ok(), "a group in follow mode alone is fine");
        let text = "[job]\ntarget = \"http://t\"\n[fetcher]\ntype = \"sls\"\n";
        let problems = JobConfig::parse(text).expect_err("no s3 section");
        assert!(problems[0].rule.contains("OSS"), "{problems:?}");
    }
}
