//! Loading a job file: TOML, its types and every rule, with every problem listed at once.

use std::path::Path;

use serde_path_to_error::Segment;

use super::validate::Problem;
use super::{JobConfig, havok};

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

/// What the command about to run needs of a job file beyond its own rules: `reprise run`
/// without `--target` needs `[job] target`, which a fleet's job file may leave to each
/// replayer. A missing need is a problem listed with the file's others, never alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub target: bool,
}

/// The problem of a job without the target its command needs.
const NEEDS_TARGET: &str = "missing: `reprise run` needs a target; set [job] target = \"http://host:port\", or pass --target URL (or REPRISE_TARGET)";

/// A job file read and checked: its config whenever the text could be typed (also when
/// its rules have problems, so the compile step can add the problems only it finds), and
/// every problem found.
#[derive(Debug)]
pub struct Checked {
    pub config: Option<JobConfig>,
    pub problems: Vec<Problem>,
    /// Allowed but worth a word (Havok keys reprise has no use for, a job without a target).
    pub warnings: Vec<Problem>,
}

impl JobConfig {
    /// Reads and checks a job file for a command that `needs` more of it; an error only
    /// when the file cannot be read.
    pub fn read(path: &Path, needs: Needs) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self::read_text(&text, path.parent().unwrap_or(Path::new(".")), &name, needs))
    }

    /// Checks job-file text as [`JobConfig::read`] checks a file: relative paths in it are
    /// relative to `base`, and a job without `[job] id` is called `name`.
    pub fn read_text(text: &str, base: &Path, name: &str, needs: Needs) -> Checked {
        let mut checked = Self::check(text);
        let has_target = match &checked.config {
            Some(cfg) => cfg.job.target.is_some(),
            None => toml::from_str::<toml::Table>(text)
                .is_ok_and(|t| t.get("job").and_then(|j| j.get("target")).is_some()),
        };
        if needs.target && !has_target && !checked.problems.iter().any(|p| p.key == "job.target") {
            checked.problems.push(Problem::new("job.target", "", NEEDS_TARGET));
        }
        if let Some(cfg) = &mut checked.config {
            if cfg.job.id.is_none() {
                cfg.job.id = Some(name.to_owned());
            }
            cfg.resolve_paths(base);
        }
        checked
    }

    /// Relative paths (recording, raw results, substitution tables, certificates) are relative
    /// to the job file, so a job runs from anywhere.
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
        for table in self.substitute.iter_mut().filter_map(|s| s.table.as_mut()) {
            if !table.is_empty() && Path::new(table.as_str()).is_relative() {
                *table = base.join(&*table).to_string_lossy().into_owned();
            }
        }
        let r = &mut self.replayer;
        let protoset = self.compare.as_mut().and_then(|c| c.protoset.as_mut());
        for p in
            [&mut r.target_ca, &mut r.client_cert, &mut r.client_key].into_iter().flatten().chain(protoset)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(tls) = &mut self.service.tls {
            for p in [&mut tls.cert, &mut tls.key].into_iter().chain(tls.client_ca.as_mut()) {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// Parses and checks job-file text; `Err` lists every problem found.
    pub fn parse(text: &str) -> Result<JobConfig, Vec<Problem>> {
        match Self::check(text) {
            Checked { config: Some(cfg), problems, .. } if problems.is_empty() => Ok(cfg),
            Checked { problems, .. } => Err(problems),
        }
    }

    /// Parses and checks job-file text, every problem listed.
    ///
    /// serde stops at the first value of a wrong type. To list them all, each one found is
    /// noted with its key path (`serde_path_to_error`), taken out of the parsed table (its
    /// default then applies) and the table read again, up to 100 times. The
    /// rules checked afterwards skip the keys taken out: their problem is already listed.
    pub fn check(text: &str) -> Checked {
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(table) => table,
            Err(e) => {
                return Checked { config: None, problems: vec![Problem::syntax(&e)], warnings: Vec::new() };
            }
        };
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
                Ok(cfg) => {
                    warnings.extend(cfg.advise());
                    let rules = cfg.validate().into_iter().filter(|p| !covered(&type_errors, &p.key));
                    problems.extend(rules);
                    type_errors.extend(problems);
                    return Checked { config: Some(cfg), problems: type_errors, warnings };
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
                        return Checked { config: None, problems: type_errors, warnings };
                    }
                }
            }
        }
    }
}

/// Type errors listed before the rest of a job file is given up on.
const MAX_TYPE_ERRORS: usize = 100;

/// `job.speed`, `stats.endpoints[0].pattern`: as docs/job-file.md writes keys.
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

/// Whether `key` lies at or under the key of a problem in `listed`: that problem already
/// says what is wrong there.
pub(crate) fn covered(listed: &[Problem], key: &str) -> bool {
    listed.iter().any(|p| covers(&p.key, key))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_target_is_listed_with_the_other_problems_when_the_command_needs_one() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("empty.toml");
        std::fs::write(&path, "").expect("write");
        let keys = |needs| {
            let checked = JobConfig::read(&path, needs).expect("readable");
            checked.problems.into_iter().map(|p| p.key).collect::<Vec<_>>()
        };
        let both = keys(Needs { target: true });
        assert!(both.contains(&"job.target".to_owned()) && both.len() >= 2, "{both:?}");
        assert!(!keys(Needs::default()).contains(&"job.target".to_owned()));
        std::fs::write(&path, "[fetcher.file]\npath = \"r.jsonl\"\n").expect("write");
        assert_eq!(keys(Needs { target: true }), vec!["job.target"], "alone when it is the only one");
        assert!(keys(Needs::default()).is_empty());
    }
}
