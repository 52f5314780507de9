//! Checks of the sections that shape traffic (`[[filter]]`): every regex compiles, every
//! rule says what it does, names are unique, and a value condition has the name it is on.

use std::collections::BTreeSet;

use super::JobConfig;
use super::validate::{Problem, check_regex};

impl JobConfig {
    pub(super) fn validate_shaping(&self, p: &mut Vec<Problem>) {
        let mut names = BTreeSet::new();
        for (i, f) in self.filter.iter().enumerate() {
            let key = |field: &str| format!("filter[{i}].{field}");
            if f.action.is_none() {
                p.push(Problem::new(&key("action"), "", "is required: \"allow\" or \"deny\""));
            }
            for (field, pattern) in [
                ("path", &f.path),
                ("host", &f.host),
                ("header_value", &f.header_value),
                ("query_value", &f.query_value),
            ] {
                if let Some(pattern) = pattern {
                    check_regex(p, &key(field), pattern);
                }
            }
            if f.header_value.is_some() && f.header.is_none() {
                p.push(Problem::new(&key("header_value"), "", "needs header = \"Name\" to say which header"));
            }
            if f.query_value.is_some() && f.query.is_none() {
                p.push(Problem::new(
                    &key("query_value"),
                    "",
                    "needs query = \"name\" to say which parameter",
                ));
            }
            if let Some(m) = &f.method {
                for m in m.list() {
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        p.push(Problem::new(
                            &key("method"),
                            format!("{m:?}"),
                            "must be a method like \"POST\"",
                        ));
                    }
                }
            }
            let label = f.label(i);
            if !names.insert(label.clone()) {
                p.push(Problem::new(
                    &key("name"),
                    format!("{label:?}"),
                    "is the name of an earlier filter; names must be unique",
                ));
            }
        }
    }
}
