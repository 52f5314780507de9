//! `[[filter]]`: the first rule whose conditions all hold decides whether a record is
//! replayed. Conditions are checked cheapest first (method, then the regexes).

use super::matcher::Matcher;
use crate::config::{FilterAction, FilterRule};
use crate::record::Record;

#[derive(Debug)]
struct Filter {
    deny: bool,
    methods: Vec<String>,
    path: Option<Matcher>,
    host: Option<Matcher>,
    header: Option<String>,
    header_value: Option<Matcher>,
    query: Option<String>,
    query_value: Option<Matcher>,
}

/// A regex the job file gave. Validation refused a job whose regexes do not compile, so a
/// failure here is a job changed underneath: the rule is left out, with an error in the log.
fn compile(rule: &str, pattern: Option<&String>) -> Result<Option<Matcher>, ()> {
    match pattern.map(|p| Matcher::new(p)) {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(e)) => {
            tracing::error!(filter = rule, error = %e, "filter left out: a regex does not compile");
            Err(())
        }
    }
}

impl Filter {
    fn new(rule: &FilterRule, label: &str) -> Result<Filter, ()> {
        Ok(Filter {
            deny: rule.action == Some(FilterAction::Deny),
            methods: rule.method.as_ref().map(|m| m.list()).unwrap_or_default(),
            path: compile(label, rule.path.as_ref())?,
            host: compile(label, rule.host.as_ref())?,
            header: rule.header.clone(),
            header_value: compile(label, rule.header_value.as_ref())?,
            query: rule.query.clone(),
            query_value: compile(label, rule.query_value.as_ref())?,
        })
    }

    /// Whether every condition holds for `r`, whose path without the query is `path`.
    fn matches(&self, r: &Record, path: &[u8]) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(&r.method)) {
            return false;
        }
        if let Some(m) = &self.path
            && !m.is_match(path)
        {
            return false;
        }
        if let Some(m) = &self.host
            && !r.host.as_ref().is_some_and(|h| m.is_match(h.as_bytes()))
        {
            return false;
        }
        if let Some(name) = &self.header {
            let mut values = r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let found = match &self.header_value {
                None => values.next().is_some(),
                Some(re) => values.any(|v| re.is_match(v)),
            };
            if !found {
                return false;
            }
        }
        if let Some(name) = &self.query {
            match (r.query_param(name), &self.query_value) {
                (None, _) => return false,
                (Some(v), Some(m)) if !m.is_match(v.as_bytes()) => return false,
                _ => {}
            }
        }
        true
    }
}

/// The rules, by their index in `[[filter]]`.
#[derive(Debug, Default)]
pub struct Filters {
    rules: Vec<(usize, Filter)>,
}

impl Filters {
    pub fn new(rules: &[FilterRule]) -> Filters {
        let rules = rules
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| Filter::new(rule, &rule.label(i)).ok().map(|f| (i, f)))
            .collect();
        Filters { rules }
    }

    /// The index of the deny rule that leaves `r` out, if the first rule that matches it
    /// denies it.
    pub fn denied_by(&self, r: &Record) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let path = r.path.as_bytes();
        let path = memchr::memchr(b'?', path).map_or(path, |q| &path[..q]);
        let (i, rule) = self.rules.iter().find(|(_, f)| f.matches(r, path))?;
        rule.deny.then_some(*i)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::Methods;

    fn record(method: &str, url: &str, host: Option<&str>, headers: &[(&str, &str)]) -> Record {
        Record {
            ts: 0,
            method: method.into(),
            path: url.into(),
            host: host.map(Into::into),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).into(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: Bytes::new(),
            key: None,
        }
    }

    fn rule(action: FilterAction, f: impl FnOnce(&mut FilterRule)) -> FilterRule {
        let mut r = FilterRule { action: Some(action), ..FilterRule::default() };
        f(&mut r);
        r
    }

    #[test]
    fn the_first_rule_that_matches_decides() {
        use FilterAction::{Allow, Deny};
        let filters = Filters::new(&[
            rule(Allow, |r| r.header = Some("X-Replay-Anyway".into())),
            rule(Deny, |r| {
                r.method = Some(Methods::Many(vec!["post".into(), "PUT".into()]));
                r.path = Some("^/payments/".into());
            }),
            rule(Deny, |r| r.path = Some("^/health$".into())),
            rule(Deny, |r| r.host = Some("^admin\\.".into())),
            rule(Deny, |r| {
                r.header = Some("x-debug".into());
                r.header_value = Some("^(1|true)$".into());
            }),
            rule(Deny, |r| {
                r.query = Some("dryrun".into());
                r.query_value = Some("^yes$".into());
            }),
            rule(Deny, |r| r.method = Some(Methods::One("DELETE".into()))),
        ]);
        let cases = [
            (record("POST", "/payments/1?x=1", None, &[]), Some(1)),
            (record("GET", "/payments/1", None, &[]), None),
            (record("POST", "/payments/1", None, &[("X-Replay-Anyway", "")]), None),
            (record("GET", "/health?probe=1", None, &[]), Some(2)),
            (record("GET", "/healthz", None, &[]), None),
            (record("GET", "/a", Some("admin.example.com"), &[]), Some(3)),
            (record("GET", "/a", Some("api.example.com"), &[]), None),
            (record("GET", "/a", None, &[("X-Debug", "0"), ("X-Debug", "true")]), Some(4)),
            (record("GET", "/a", None, &[("X-Debug", "0")]), None),
            (record("GET", "/a?dryrun=yes&b", None, &[]), Some(5)),
            (record("GET", "/a?dryrun=no", None, &[]), None),
            (record("DELETE", "/a", None, &[]), Some(6)),
        ];
        for (r, want) in cases {
            assert_eq!(filters.denied_by(&r), want, "{} {} {:?} {:?}", r.method, r.path, r.host, r.headers);
        }
    }

    #[test]
    fn a_rule_without_conditions_matches_everything() {
        let filters = Filters::new(&[
            rule(FilterAction::Allow, |r| r.path = Some("^/api/".into())),
            rule(FilterAction::Deny, |_| {}),
        ]);
        assert_eq!(filters.denied_by(&record("GET", "/api/x", None, &[])), None);
        assert_eq!(filters.denied_by(&record("GET", "/other", None, &[])), Some(1), "an allowlist");
    }
}
