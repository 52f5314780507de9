//! Conditions on a record, compiled once: a `[[filter]]` rule's, and a `[[rewrite]]` rule's
//! `when`. Checked cheapest first (method, then the patterns).

use super::matcher::Matcher;
use crate::config::{Conditions, Problem, not_a_regex};
use crate::record::{Record, query_value};

#[derive(Debug, Default)]
pub struct When {
    methods: Vec<String>,
    path: Option<Matcher>,
    host: Option<Matcher>,
    header: Option<String>,
    header_value: Option<Matcher>,
    query: Option<String>,
    query_value: Option<Matcher>,
}

/// A regex the job file gave at `key`: compiled here, once (the job file's checks leave
/// regexes to this step). One that does not compile is a problem in `found`, which refuses
/// the job: a rule is never run with a condition left out.
pub fn compile(key: &str, pattern: Option<&String>, found: &mut Vec<Problem>) -> Option<Matcher> {
    let pattern = pattern?;
    Matcher::new(pattern).map_err(|e| found.push(not_a_regex(key, pattern, &e))).ok()
}

/// The path of an origin-form request target, without its query.
pub fn path_only(path: &[u8]) -> &[u8] {
    memchr::memchr(b'?', path).map_or(path, |q| &path[..q])
}

/// A request target split once at its `?`, for all the conditions checked on it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub path: &'a str,
    /// After the `?`; `None` without one.
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn of(target: &'a str) -> Target<'a> {
        match memchr::memchr(b'?', target.as_bytes()) {
            Some(q) => Target { path: &target[..q], query: Some(&target[q + 1..]) },
            None => Target { path: target, query: None },
        }
    }
}

impl When {
    /// The conditions at `key` (`filter[0]`, `rewrite[2].when`), their regexes compiled;
    /// each one that does not compile is a problem in `found`.
    pub fn new(c: &Conditions, key: &str, found: &mut Vec<Problem>) -> When {
        When {
            methods: c.method.as_ref().map(|m| m.list()).unwrap_or_default(),
            path: compile(&format!("{key}.path"), c.path.as_ref(), found),
            host: compile(&format!("{key}.host"), c.host.as_ref(), found),
            header: c.header.clone(),
            header_value: compile(&format!("{key}.header_value"), c.header_value.as_ref(), found),
            query: c.query.clone(),
            query_value: compile(&format!("{key}.query_value"), c.query_value.as_ref(), found),
        }
    }

    /// Whether every condition holds for `r`, whose path (and query) is `target` now: the
    /// recorded one, or what the rules before made of it.
    pub fn matches(&self, r: &Record, target: Target<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| r.method.is(m)) {
            return false;
        }
        if let Some(m) = &self.path
            && !m.is_match(target.path.as_bytes())
        {
            return false;
        }
        if let Some(m) = &self.host
            && !r.host.as_ref().is_some_and(|h| m.is_match(h.as_bytes()))
        {
            return false;
        }
        if let Some(name) = &self.header {
            let mut values = r.headers.iter().filter(|(n, _)| n.is(name)).map(|(_, v)| v);
            let found = match &self.header_value {
                None => values.next().is_some(),
                Some(re) => values.any(|v| re.is_match(v)),
            };
            if !found {
                return false;
            }
        }
        if let Some(name) = &self.query {
            match (target.query.and_then(|q| query_value(q, name)), &self.query_value) {
                (None, _) => return false,
                (Some(v), Some(m)) if !m.is_match(v.as_bytes()) => return false,
                _ => {}
            }
        }
        true
    }
}
