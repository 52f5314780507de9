//! `[[filter]]` rules at capture time (`reprise record --filter FILE`): the job file's own
//! syntax and its one compiled form, judged on a request's head before it is recorded, so
//! the rules a replay would apply can keep traffic out of the recording in the first place.

use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;

use super::filter::Filters;
use crate::config::FilterRule;
use crate::record::{Record, Text};

/// The `[[filter]]` rules of a file, compiled.
#[derive(Debug)]
pub struct CaptureFilters {
    filters: Filters,
    names: Vec<String>,
}

/// The one table read from the file; every other table of a job file is left alone.
#[derive(Deserialize)]
struct Rules {
    #[serde(default)]
    filter: Vec<FilterRule>,
}

impl CaptureFilters {
    /// The rules of `path` (a job file will do: only its `[[filter]]` tables are read); every
    /// problem at once, each with its key.
    pub fn load(path: &Path) -> Result<CaptureFilters, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rules: Rules = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if rules.filter.is_empty() {
            return Err(format!("{}: no [[filter]] rule in it", path.display()));
        }
        let mut found = Vec::new();
        let filters = Filters::new(&rules.filter, &mut found);
        if !found.is_empty() {
            let all: Vec<String> = found.iter().map(ToString::to_string).collect();
            return Err(format!("{}: {}", path.display(), all.join("; ")));
        }
        let names = rules.filter.iter().enumerate().map(|(i, r)| r.label(i)).collect();
        Ok(CaptureFilters { filters, names })
    }

    /// The rules' names (`filter[N]` unless named), by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of the rule that leaves out a request with this head, if one does.
    pub fn denies<'a>(
        &self,
        method: &str,
        target: &str,
        host: Option<&str>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Option<usize> {
        let record = Record {
            ts: 0,
            method: Text::from(method),
            path: Text::from(target),
            host: host.map(Text::from),
            headers: headers.map(|(n, v)| (Text::from(n), Bytes::copy_from_slice(v))).collect(),
            body: Bytes::new(),
            key: None,
            expected: None,
        };
        self.filters.denied_by(&record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job file's rules decide as they would on its records: the first that matches.
    #[test]
    fn a_job_files_rules_judge_a_request_head() {
        let dir = tempfile::tempdir().expect("a dir");
        let path = dir.path().join("job.toml");
        let job = "[job]\ntarget = \"http://x\"\n[[filter]]\nname = \"health\"\naction = \"deny\"\npath = \"^/health\"\n[[filter]]\naction = \"allow\"\nheader = \"x-keep\"\n[[filter]]\naction = \"deny\"\nmethod = \"POST\"\n";
        std::fs::write(&path, job).expect("a job");
        let f = CaptureFilters::load(&path).expect("loads");
        assert_eq!(f.names(), ["health", "filter[1]", "filter[2]"]);
        let none = std::iter::empty;
        assert_eq!(f.denies("GET", "/health?x=1", None, none()), Some(0));
        assert_eq!(f.denies("GET", "/cart", None, none()), None);
        assert_eq!(f.denies("POST", "/cart", None, none()), Some(2));
        let keep = [("x-keep", &b"1"[..])];
        assert_eq!(f.denies("POST", "/cart", None, keep.into_iter()), None);
        std::fs::write(&path, "[[filter]]\naction = \"deny\"\npath = \"(\"\n").expect("a job");
        let e = CaptureFilters::load(&path).expect_err("a bad regex");
        assert!(e.contains("filter[0].path"), "{e}");
    }
}
