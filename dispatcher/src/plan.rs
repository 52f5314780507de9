//! A job file compiled in one step into what a job runs. The file is read, typed and
//! checked ([`crate::config`]: every rule the types cannot express); then what needs making
//! is made, each thing once and only here: the source ([`Source`], its S3 key pattern
//! parsed), the CI gate (threshold expressions parsed), the endpoint grouping of `[stats]`
//! (its regexes compiled, [`Grouping`]), the shaping rules (regexes compiled,
//! substitution tables read, [`Shaping`]) and the files replayers need (read, [`ReplayerFiles`]). The problems of both steps are listed
//! together, each once, so a user sees every problem of a file at once.
//!
//! `reprise validate` compiles and discards; `reprise run` and `reprise dispatcher` hand
//! the plan to the job, which builds nothing of it again and has no fallback for what the
//! compile step refuses.

use std::path::Path;
use std::sync::Arc;

use crate::config::{
    ABORT_ON_FAIL, Checked, ConfigError, JobConfig, Needs, Problem, Source, ThresholdEntry, covered,
};
use crate::endpoints::Grouping;
use crate::shaping::Shaping;
use crate::thresholds::{self, Aggregation, Gate, Threshold};

/// A job file, checked and compiled.
#[derive(Debug)]
pub struct JobPlan {
    pub config: JobConfig,
    /// Where the recording is read from, with what its fetcher needs.
    pub source: Source,
    /// `[thresholds]`, parsed.
    pub gate: Gate,
    /// `[stats]`: how requests group into endpoints, compiled.
    pub grouping: Arc<Grouping>,
    /// `[[filter]]`, `[[substitute]]` and `[[rewrite]]`, compiled, tables read.
    pub shaping: Arc<Shaping>,
    /// `[replayer] target_ca`, `client_cert`, `client_key` and `[compare] protoset`, read.
    pub files: ReplayerFiles,
}

/// The files a job's replayers need, read by the dispatcher and sent with the job (a
/// replayer elsewhere has no copy of the job's files): the target's CAs and client
/// certificate (PEM), and the protoset gRPC answers are read by. Empty where not set.
#[derive(Clone, Debug, Default)]
pub struct ReplayerFiles {
    pub ca: bytes::Bytes,
    pub client_cert: bytes::Bytes,
    pub client_key: bytes::Bytes,
    pub protoset: bytes::Bytes,
}

/// What a file must hold.
#[derive(Clone, Copy)]
enum Holds {
    Certificates,
    Key,
    Protoset,
}

impl ReplayerFiles {
    /// Reads the files `[replayer]` and `[compare]` name; one that cannot be read, or does
    /// not hold what it should, is a problem in `found`.
    fn read(cfg: &JobConfig, found: &mut Vec<Problem>) -> ReplayerFiles {
        let mut read = |key: &str, path: Option<&std::path::PathBuf>, holds: Holds| {
            let Some(path) = path else { return bytes::Bytes::new() };
            let shown = path.display();
            match std::fs::read(path) {
                Ok(content) => {
                    if let Some(what) = wrong(&content, holds) {
                        found.push(Problem::new(key, shown, &format!("must hold {what}")));
                    }
                    bytes::Bytes::from(content)
                }
                Err(e) => {
                    found.push(Problem::new(key, shown, &format!("cannot be read: {e}")));
                    bytes::Bytes::new()
                }
            }
        };
        let r = &cfg.replayer;
        let protoset = cfg.compare.as_ref().and_then(|c| c.protoset.as_ref());
        ReplayerFiles {
            ca: read("replayer.target_ca", r.target_ca.as_ref(), Holds::Certificates),
            client_cert: read("replayer.client_cert", r.client_cert.as_ref(), Holds::Certificates),
            client_key: read("replayer.client_key", r.client_key.as_ref(), Holds::Key),
            protoset: read("compare.protoset", protoset, Holds::Protoset),
        }
    }
}

/// What `content` should hold and does not, if so.
fn wrong(content: &[u8], holds: Holds) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    match holds {
        Holds::Certificates => {
            let all: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(content).collect();
            (!all.is_ok_and(|c| !c.is_empty()))
                .then(|| "PEM certificates (-----BEGIN CERTIFICATE-----)".to_owned())
        }
        Holds::Key => PrivateKeyDer::from_pem_slice(content).is_err().then(|| "a PEM private key".to_owned()),
        Holds::Protoset => prost_reflect::DescriptorPool::decode(content).err().map(|e| {
            format!(
                "a descriptor set, as `protoc --include_imports --descriptor_set_out=FILE` or \
                 `buf build -o FILE` write it ({e})"
            )
        }),
    }
}

/// Compiles the job file at `path` for a command that `needs` more of it: the plan and the
/// warnings (Havok keys reprise has no use for, a job without a target), or every problem.
pub fn compile(path: &Path, needs: Needs) -> Result<(JobPlan, Vec<Problem>), ConfigError> {
    compile_checked(JobConfig::read(path, needs)?, &path.display().to_string())
}

/// Compiles job-file text as [`compile`] compiles a file (a job submitted to a standing
/// dispatcher): relative paths are relative to `base`; `name` is the job's id when it sets
/// none.
pub fn compile_text(
    text: &str,
    base: &Path,
    name: &str,
    needs: Needs,
) -> Result<(JobPlan, Vec<Problem>), ConfigError> {
    compile_checked(JobConfig::read_text(text, base, name, needs), name)
}

fn compile_checked(checked: Checked, label: &str) -> Result<(JobPlan, Vec<Problem>), ConfigError> {
    let Checked { config, mut problems, warnings } = checked;
    let plan = config.and_then(|config| {
        let mut found = Vec::new();
        let source = config.fetcher.source().map_err(|p| found.push(p)).ok();
        let gate = gate(&config, &mut found);
        let grouping = Arc::new(Grouping::new(&config.stats, &mut found));
        let shaping = Shaping::new(&config).map_err(|ps| found.extend(ps)).ok();
        let files = ReplayerFiles::read(&config, &mut found);
        // A problem the file's checks named already (a rule without its table, a missing
        // section) is not listed again.
        found.retain(|p| !covered(&problems, &p.key));
        problems.extend(found);
        Some(JobPlan { config, source: source?, gate, grouping, shaping: Arc::new(shaping?), files })
    });
    match plan {
        Some(plan) if problems.is_empty() => Ok((plan, warnings)),
        _ => Err(ConfigError::Invalid { path: label.to_owned(), problems }),
    }
}

/// `[thresholds]` parsed into the gate; each expression that does not parse, each entry of
/// the wrong shape and each `diff_rate` without `[compare]` is a problem in `found`.
fn gate(cfg: &JobConfig, found: &mut Vec<Problem>) -> Gate {
    let mut gate = Gate::default();
    for (endpoint, entry) in &cfg.thresholds {
        let key = format!("thresholds.{endpoint:?}");
        match (endpoint.as_str(), entry) {
            (ABORT_ON_FAIL, ThresholdEntry::Flag(on)) => gate.abort_on_fail = *on,
            (ABORT_ON_FAIL, ThresholdEntry::Rules(_)) => {
                found.push(Problem::new(&key, "[…]", "must be true or false"));
            }
            (_, ThresholdEntry::Flag(b)) => found.push(Problem::new(
                &key,
                b,
                "must be a list of expressions, e.g. [\"p99 < 300ms\", \"error_rate < 1%\"]",
            )),
            (_, ThresholdEntry::Rules(rules)) => {
                for text in rules {
                    match thresholds::parse(text) {
                        Ok(expr) if expr.aggregation == Aggregation::DiffRate && cfg.compare.is_none() => {
                            found.push(Problem::new(
                                &key,
                                format!("{text:?}"),
                                "diff_rate needs a [compare] section (a baseline to compare answers with)",
                            ));
                        }
                        Ok(expr) => gate.thresholds.push(Threshold {
                            endpoint: endpoint.clone(),
                            text: text.clone(),
                            expr,
                        }),
                        Err(e) => found.push(Problem::new(&key, format!("{text:?}"), &e.to_string())),
                    }
                }
            }
        }
    }
    gate
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"r.jsonl\"\n";

    /// Compiles `text` as a job file in a directory of its own.
    fn compiled(text: &str) -> Result<JobPlan, Vec<Problem>> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).expect("write");
        match compile(&path, Needs::default()) {
            Ok((plan, _)) => Ok(plan),
            Err(ConfigError::Invalid { problems, .. }) => Err(problems),
            Err(e) => panic!("{e}"),
        }
    }

    fn listed(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_rule_that_does_not_compile_refuses_the_plan_with_its_key() {
        let e =
            compiled(&format!("{JOB}[[substitute]]\nheader = \"Authorization\"\ntable = \"missing.csv\"\n"))
                .expect_err("a missing table");
        assert!(listed(&e)[0].starts_with("substitute[0].table"), "{e:?}");
        let plan = compiled(&format!("{JOB}[[rewrite]]\nset_host = \"staging\"\n")).expect("compiles");
        assert!(plan.shaping.sends_host());
        assert!(
            matches!(&plan.source, Source::File { path } if path.ends_with("r.jsonl")),
            "{:?}",
            plan.source
        );
    }

    /// The problems only compiling finds (regexes, replacements, tables, expressions) are
    /// listed with those of the file's checks, each once.
    #[test]
    fn every_problem_of_both_steps_is_listed_at_once_and_once() {
        let text = format!(
            r#"{JOB}
[[rewrite]]
path = {{ from = "^/v1/(.*)", to = "/v2/$1a" }}
[[rewrite]]
path = {{ from = "^/(" }}
[[rewrite]]
when = {{ path = "[", host = "(" }}
set_host = "x y"
[[filter]]
action = "deny"
path = "*"
[[substitute]]
query = "token"
pattern = "("
[thresholds]
"*" = ["p99 < 3h", "speed > 1", "diff_rate < 1%"]
"GET /a" = true
[stats]
endpoints = [{{ pattern = "^/users/[0-9+$", name = "GET /users/{{id}}" }}]
id_patterns = ["usr_[0-9"]
"#
        );
        let ps = listed(&compiled(&text).expect_err("invalid"));
        let has =
            |start: &str, part: &str| ps.iter().filter(|p| p.starts_with(start) && p.contains(part)).count();
        assert_eq!(has("rewrite[0].path.to = \"/v2/$1a\"", "names group `1a`"), 1, "{ps:#?}");
        assert_eq!(has("rewrite[1].path:", "needs from (a regex) and to"), 1, "{ps:#?}");
        assert_eq!(has("rewrite[2].when.path = \"[\"", "is not a regex"), 1, "{ps:#?}");
        assert_eq!(has("rewrite[2].when.host = \"(\"", "is not a regex"), 1, "{ps:#?}");
        assert_eq!(has("rewrite[2].set_host", "must be a host"), 1, "{ps:#?}");
        assert_eq!(has("filter[0].path = \"*\"", "is not a regex"), 1, "{ps:#?}");
        assert_eq!(has("substitute[0].pattern", "is not a regex"), 1, "{ps:#?}");
        assert_eq!(has("substitute[0].table:", "is required"), 1, "listed by the checks, not again: {ps:#?}");
        assert_eq!(has("thresholds.\"*\" = \"p99 < 3h\"", "unit `h`"), 1, "{ps:#?}");
        assert_eq!(has("thresholds.\"*\" = \"speed > 1\"", ""), 1, "{ps:#?}");
        assert_eq!(has("thresholds.\"*\" = \"diff_rate < 1%\"", "needs a [compare] section"), 1, "{ps:#?}");
        assert_eq!(has("thresholds.\"GET /a\"", "list of expressions"), 1, "{ps:#?}");
        assert_eq!(
            has("stats.endpoints[0].pattern = \"^/users/[0-9+$\"", "is not a regex: unclosed"),
            1,
            "{ps:#?}"
        );
        assert_eq!(has("stats.id_patterns[0] = \"usr_[0-9\"", "is not a regex: unclosed"), 1, "{ps:#?}");
        assert_eq!(ps.len(), 14, "{ps:#?}");
    }

    #[test]
    fn thresholds_are_parsed_once_into_the_gate() {
        let text = format!(
            "{JOB}[thresholds]\n\"*\" = [\"p99 < 300ms\", \"error_rate < 1%\"]\n\"GET /a\" = [\"p95<100\"]\nabort_on_fail = true\n"
        );
        let gate = compiled(&text).expect("valid thresholds").gate;
        assert_eq!(gate.thresholds.len(), 3);
        assert!(gate.abort_on_fail);
        assert_eq!(gate.thresholds[2].endpoint, "GET /a");
        assert_eq!(gate.thresholds[2].expr.value, 100.0);
    }

    #[test]
    fn a_source_is_what_its_section_holds_or_a_problem_naming_the_key() {
        use crate::config::{FetcherConfig, FetcherKind, KafkaConfig, S3Config};
        let s3 = FetcherConfig { kind: FetcherKind::Sls, ..FetcherConfig::default() };
        assert_eq!(s3.source().expect_err("no [fetcher.s3]").key, "fetcher.s3");
        let kafka = FetcherConfig {
            kind: FetcherKind::KafkaSinglePartition,
            kafka: Some(KafkaConfig { topic: "t".into(), ..KafkaConfig::default() }),
            ..FetcherConfig::default()
        };
        assert!(matches!(
            kafka.source(),
            Ok(Source::Kafka { config, single_partition: true }) if config.topic == "t"
        ));
        let bad_key = FetcherConfig {
            kind: FetcherKind::S3,
            s3: Some(S3Config { bucket: "b".into(), key: Some("{yyyy}/{QQ}".into()), ..S3Config::default() }),
            ..FetcherConfig::default()
        };
        assert_eq!(bad_key.source().expect_err("an unknown field").key, "fetcher.s3.key");
    }
}
