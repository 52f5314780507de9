//! A job file compiled in one step into what a job runs: the file read, typed and checked
//! (every problem listed at once, [`crate::config`]), its source made one [`Source`], then
//! its shaping rules compiled and their substitution tables read ([`Shaping`]). `reprise validate` compiles and discards;
//! `reprise run` and `reprise dispatcher` hand the plan to the job, which builds nothing of
//! it again, so a table is read once and a rule that does not compile refuses the job
//! instead of being left out at run time.

use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, JobConfig, Needs, Problem, Source};
use crate::shaping::Shaping;

/// A job file, checked and compiled.
#[derive(Debug)]
pub struct JobPlan {
    pub config: JobConfig,
    /// Where the recording is read from, with what its fetcher needs.
    pub source: Source,
    /// `[[filter]]`, `[[substitute]]` and `[[rewrite]]`, compiled, tables read.
    pub shaping: Arc<Shaping>,
}

/// Compiles the job file at `path` for a command that `needs` more of it; the plan and the
/// warnings (Havok keys reprise has no use for, a job without a target), or every problem.
pub fn compile(path: &Path, needs: Needs) -> Result<(JobPlan, Vec<Problem>), ConfigError> {
    let mut config = JobConfig::load(path, needs)?;
    let warnings = std::mem::take(&mut config.warnings);
    let invalid =
        |problem: Problem| ConfigError::Invalid { path: path.display().to_string(), problems: vec![problem] };
    let source = config.fetcher.source().map_err(invalid)?;
    let shaping =
        Shaping::new(&config).map_err(|e| invalid(Problem { key: e.key, value: e.value, rule: e.why }))?;
    Ok((JobPlan { config, source, shaping: Arc::new(shaping) }, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_that_does_not_compile_refuses_the_plan_with_its_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("job.toml");
        let job = |extra: &str| {
            format!("[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"r.jsonl\"\n{extra}")
        };
        std::fs::write(&path, job("[[substitute]]\nheader = \"Authorization\"\ntable = \"missing.csv\"\n"))
            .expect("write");
        let err = compile(&path, Needs::default()).expect_err("a missing table");
        assert!(err.to_string().contains("substitute[0].table"), "{err}");
        std::fs::write(&path, job("[[rewrite]]\nset_host = \"staging\"\n")).expect("write");
        let (plan, warnings) = compile(&path, Needs::default()).expect("compiles");
        assert!(plan.shaping.sends_host() && warnings.is_empty(), "{warnings:?}");
        assert!(
            matches!(&plan.source, Source::File { path } if path.ends_with("r.jsonl")),
            "{:?}",
            plan.source
        );
    }

    #[test]
    fn a_source_is_what_its_section_holds_or_a_problem_naming_the_section() {
        use crate::config::{FetcherConfig, FetcherKind, KafkaConfig};
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
    }
}
