//! Checks of the sections that shape traffic (`[[filter]]`, `[[substitute]]`,
//! `[[rewrite]]`): every rule says what it does, names are unique within a section, a value
//! condition has the name it is on, and what a rewrite writes is a header, a query
//! parameter or a JSON pointer that can be sent. Regexes, path replacements and tables are
//! left to the compile step (`shaping::Shaping::new`, called by `plan::compile`), which
//! makes each once and lists those that cannot be made with these problems.

use std::collections::BTreeSet;

use super::JobConfig;
use super::shaping::{Conditions, RewriteRule, SubstituteRule, Unmapped};
use super::validate::Problem;

/// Headers a replayer writes itself (from the body, the connection and the target): a rule
/// cannot set them.
const WRITTEN_BY_REPLAYER: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "trailer",
];

impl JobConfig {
    pub(super) fn validate_shaping(&self, p: &mut Vec<Problem>) {
        let mut names = BTreeSet::new();
        for (i, f) in self.filter.iter().enumerate() {
            let prefix = format!("filter[{i}]");
            if f.action.is_none() {
                p.push(Problem::new(&format!("{prefix}.action"), "", "is required: \"allow\" or \"deny\""));
            }
            check_conditions(p, &prefix, &f.conditions());
            unique(p, &mut names, &prefix, f.label(i), "filter");
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.substitute.iter().enumerate() {
            let prefix = format!("substitute[{i}]");
            check_substitute(p, &prefix, s);
            unique(p, &mut names, &prefix, s.label(i), "substitute");
        }
        let mut names = BTreeSet::new();
        for (i, r) in self.rewrite.iter().enumerate() {
            let prefix = format!("rewrite[{i}]");
            check_rewrite(p, &prefix, r);
            unique(p, &mut names, &prefix, r.label(i), "rewrite");
        }
    }
}

fn unique(p: &mut Vec<Problem>, names: &mut BTreeSet<String>, prefix: &str, label: String, kind: &str) {
    if !names.insert(label.clone()) {
        p.push(Problem::new(
            &format!("{prefix}.name"),
            format!("{label:?}"),
            &format!("is the name of an earlier {kind}; names must be unique"),
        ));
    }
}

/// A filter's conditions, or a rewrite's `when` (`prefix` is where they are written).
fn check_conditions(p: &mut Vec<Problem>, prefix: &str, c: &Conditions) {
    let key = |field: &str| format!("{prefix}.{field}");
    if c.header_value.is_some() && c.header.is_none() {
        p.push(Problem::new(&key("header_value"), "", "needs header = \"Name\" to say which header"));
    }
    if c.query_value.is_some() && c.query.is_none() {
        p.push(Problem::new(&key("query_value"), "", "needs query = \"name\" to say which parameter"));
    }
    if let Some(m) = &c.method {
        for m in m.list() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                p.push(Problem::new(&key("method"), format!("{m:?}"), "must be a method like \"POST\""));
            }
        }
    }
}

fn check_substitute(p: &mut Vec<Problem>, prefix: &str, s: &SubstituteRule) {
    let key = |field: &str| format!("{prefix}.{field}");
    if s.subject().is_none() {
        p.push(Problem::new(
            prefix,
            "",
            "needs exactly one of header = \"Authorization\", cookie = \"session\" or query = \"token\"",
        ));
    }
    if let Some(h) = &s.header {
        check_header_name(p, &key("header"), h);
    }
    if let Some(q) = &s.query {
        check_query_name(p, &key("query"), q);
    }
    if let Some(c) = &s.cookie
        && (c.is_empty() || c.bytes().any(|b| b"=; \t\r\n\",".contains(&b)))
    {
        p.push(Problem::new(
            &key("cookie"),
            format!("{c:?}"),
            "must be a cookie name (no `=`, `;`, `,`, quotes or spaces)",
        ));
    }
    match s.table.as_deref() {
        None | Some("") => p.push(Problem::new(
            &key("table"),
            "",
            "is required: a .csv file of `production,staging` rows or a .json object, relative to the job file",
        )),
        Some(t) if !(t.ends_with(".csv") || t.ends_with(".json")) => p.push(Problem::new(
            &key("table"),
            format!("{t:?}"),
            "must end in .csv (rows of `production,staging`) or .json (an object of production → staging)",
        )),
        Some(_) => {}
    }
    match (s.unmapped, &s.default) {
        (Unmapped::Default, None) => p.push(Problem::new(
            &key("default"),
            "",
            "is required with unmapped = \"default\": the value sent for one the table lacks",
        )),
        (Unmapped::Keep | Unmapped::Drop, Some(_)) => p.push(Problem::new(
            &key("default"),
            "",
            "is used only with unmapped = \"default\"; set that, or remove default",
        )),
        _ => {}
    }
    if let Some(d) = &s.default
        && d.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        p.push(Problem::new(&key("default"), "", "must not hold CR, LF or NUL"));
    }
}

fn check_rewrite(p: &mut Vec<Problem>, prefix: &str, r: &RewriteRule) {
    let key = |field: &str| format!("{prefix}.{field}");
    if let Some(when) = &r.when {
        check_conditions(p, &key("when"), when);
    }
    let does_nothing = r.path.is_none()
        && r.set_host.is_none()
        && r.remove_headers.is_empty()
        && r.rename_headers.is_empty()
        && r.set_headers.is_empty()
        && r.remove_query.is_empty()
        && r.set_query.is_empty()
        && r.remove_json.is_empty()
        && r.set_json.is_empty();
    if does_nothing {
        p.push(Problem::new(
            prefix,
            "",
            "changes nothing: give path, set_host, set_headers, remove_headers, rename_headers, set_query, \
             remove_query, set_json or remove_json",
        ));
    }
    if let Some(h) = &r.set_host
        && (h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/'))
    {
        p.push(Problem::new(
            &key("set_host"),
            format!("{h:?}"),
            "must be a host like \"staging.example.com\" or \"host:8080\"",
        ));
    }
    for h in &r.remove_headers {
        check_header_name(p, &key("remove_headers"), h);
    }
    for (from, to) in &r.rename_headers {
        check_header_name(p, &key("rename_headers"), from);
        check_header_name(p, &key("rename_headers"), to);
    }
    for (name, value) in &r.set_headers {
        check_header_name(p, &key("set_headers"), name);
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            p.push(Problem::new(&key(&format!("set_headers.{name}")), "", "must not hold CR, LF or NUL"));
        }
    }
    for q in r.remove_query.iter().chain(r.set_query.keys()) {
        check_query_name(p, &key("remove_query/set_query"), q);
    }
    if r.set_query.len() > 64 {
        p.push(Problem::new(
            &key("set_query"),
            r.set_query.len(),
            "sets at most 64 parameters; split it into two rules",
        ));
    }
    for (name, value) in &r.set_query {
        if value.bytes().any(|b| b == b'&' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control()) {
            p.push(Problem::new(
                &key(&format!("set_query.{name}")),
                format!("{value:?}"),
                "must be percent-encoded: no `&`, `#`, spaces or control characters",
            ));
        }
    }
    for ptr in &r.remove_json {
        if ptr.is_empty() {
            p.push(Problem::new(
                &key("remove_json"),
                "\"\"",
                "cannot remove the whole body; give a field like \"/card/number\"",
            ));
        } else {
            check_pointer(p, &key("remove_json"), ptr);
        }
    }
    for ptr in r.set_json.keys() {
        check_pointer(p, &key("set_json"), ptr);
    }
}

/// A header a rule may write: a token (RFC 9110), and not one the replayer writes itself.
fn check_header_name(p: &mut Vec<Problem>, key: &str, name: &str) {
    let token = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        p.push(Problem::new(
            key,
            format!("{name:?}"),
            "is not a header name (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    } else if name.eq_ignore_ascii_case("host") {
        p.push(Problem::new(
            key,
            format!("{name:?}"),
            "the Host is set with set_host = \"staging.example.com\"",
        ));
    } else if WRITTEN_BY_REPLAYER.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        p.push(Problem::new(
            key,
            format!("{name:?}"),
            "is written by the replayer for each connection and body; a rule cannot set it",
        ));
    }
}

fn check_query_name(p: &mut Vec<Problem>, key: &str, name: &str) {
    if name.is_empty() || name.bytes().any(|b| b"&=#?".contains(&b) || b.is_ascii_whitespace()) {
        p.push(Problem::new(
            key,
            format!("{name:?}"),
            "must be a query parameter name (no `&`, `=`, `#`, `?` or spaces)",
        ));
    }
}

/// A JSON pointer (RFC 6901): empty (the whole body) or `/`-separated tokens, `~` only as
/// `~0` (a `~`) or `~1` (a `/`).
fn check_pointer(p: &mut Vec<Problem>, key: &str, ptr: &str) {
    let tilde_ok =
        ptr.match_indices('~').all(|(i, _)| matches!(ptr.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if !(ptr.is_empty() || ptr.starts_with('/')) || !tilde_ok {
        p.push(Problem::new(
            key,
            format!("{ptr:?}"),
            "is not a JSON pointer: write \"/user/email\" (a field), \"/items/0\" (an element), ~1 for a `/` in a name and ~0 for a `~`",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::JobConfig;

    fn problems(sections: &str) -> Vec<String> {
        let text =
            format!("[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n{sections}");
        JobConfig::parse(&text).expect_err("invalid").iter().map(ToString::to_string).collect()
    }

    fn has(ps: &[String], start: &str, part: &str) -> bool {
        ps.iter().any(|p| p.starts_with(start) && p.contains(part))
    }

    #[test]
    fn rewrites_are_checked_for_what_they_write() {
        let ps = problems(
            r#"
[[rewrite]]
path = { from = "^/v1/(.*)", to = "/v2/$1a" }
[[rewrite]]
path = { from = "^/(" }
[[rewrite]]
set_headers = { "Content-Length" = "5", "Bad Name" = "x" }
rename_headers = { "X-A" = "Host" }
[[rewrite]]
remove_json = ["", "a/b"]
set_json = { "when" = 1 }
set_query = { q = "a b" }
[[rewrite]]
name = "nothing"
when = { header_value = "x" }
"#,
        );
        assert!(
            has(&ps, "rewrite[2].set_headers = \"Content-Length\"", "written by the replayer"),
            "{ps:#?}"
        );
        assert!(has(&ps, "rewrite[2].set_headers = \"Bad Name\"", "is not a header name"), "{ps:#?}");
        assert!(has(&ps, "rewrite[2].rename_headers = \"Host\"", "set_host"), "{ps:#?}");
        assert!(has(&ps, "rewrite[3].remove_json = \"\"", "cannot remove the whole body"), "{ps:#?}");
        assert!(has(&ps, "rewrite[3].remove_json = \"a/b\"", "is not a JSON pointer"), "{ps:#?}");
        assert!(has(&ps, "rewrite[3].set_json = \"when\"", "is not a JSON pointer"), "{ps:#?}");
        assert!(has(&ps, "rewrite[3].set_query.q", "percent-encoded"), "{ps:#?}");
        assert!(has(&ps, "rewrite[4]:", "changes nothing"), "{ps:#?}");
        assert!(has(&ps, "rewrite[4].when.header_value", "needs header"), "{ps:#?}");
    }

    #[test]
    fn substitutes_need_one_subject_a_table_and_a_default_that_is_used() {
        let ps = problems(
            r#"
[[substitute]]
header = "Authorization"
cookie = "sid"
table = "t.txt"
[[substitute]]
query = "token"
unmapped = "default"
pattern = "("
[[substitute]]
name = "x"
cookie = "sid"
table = "t.csv"
default = "d"
[[substitute]]
name = "x"
header = "Host"
table = "t.json"
"#,
        );
        assert!(has(&ps, "substitute[0]:", "needs exactly one of header"), "{ps:#?}");
        assert!(has(&ps, "substitute[0].table = \"t.txt\"", "must end in .csv"), "{ps:#?}");
        assert!(has(&ps, "substitute[1].table:", "is required"), "{ps:#?}");
        assert!(has(&ps, "substitute[1].default:", "is required with unmapped = \"default\""), "{ps:#?}");
        assert!(has(&ps, "substitute[2].default:", "is used only with"), "{ps:#?}");
        assert!(has(&ps, "substitute[3].name = \"x\"", "names must be unique"), "{ps:#?}");
        assert!(has(&ps, "substitute[3].header = \"Host\"", "set_host"), "{ps:#?}");
    }
}
