//! `[[filter]]`: the first rule whose conditions all hold decides whether a record is
//! replayed.

use super::conditions::{Target, When};
use crate::config::{FilterAction, FilterRule, Problem};
use crate::record::Record;

#[derive(Debug)]
struct Filter {
    deny: bool,
    when: When,
}

/// The rules, by their index in `[[filter]]`.
#[derive(Debug, Default)]
pub struct Filters {
    rules: Vec<(usize, Filter)>,
}

impl Filters {
    /// The rules compiled; a regex that does not compile is a problem in `found`.
    pub fn new(rules: &[FilterRule], found: &mut Vec<Problem>) -> Filters {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let when = When::new(&rule.conditions(), &format!("filter[{i}]"), found);
                (i, Filter { deny: rule.action == Some(FilterAction::Deny), when })
            })
            .collect();
        Filters { rules }
    }

    /// The index of the deny rule that leaves `r` out, if the first rule that matches it
    /// denies it.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn denied_by(&self, r: &Record) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let target = Target::of(r.path.as_str());
        let (i, rule) = self.rules.iter().find(|(_, f)| f.when.matches(r, target))?;
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
            expected: None,
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
        let mut found = Vec::new();
        let filters = Filters::new(
            &[
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
            ],
            &mut found,
        );
        assert!(found.is_empty(), "{found:?}");
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
        let mut found = Vec::new();
        let filters = Filters::new(
            &[
                rule(FilterAction::Allow, |r| r.path = Some("^/api/".into())),
                rule(FilterAction::Deny, |_| {}),
            ],
            &mut found,
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(filters.denied_by(&record("GET", "/api/x", None, &[])), None);
        assert_eq!(filters.denied_by(&record("GET", "/other", None, &[])), Some(1), "an allowlist");
    }
}
