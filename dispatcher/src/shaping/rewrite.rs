//! `[[rewrite]]`: a record's path, Host, headers, query and json body changed, rule after
//! rule, each rule's actions in a fixed order (path, Host, headers removed, renamed, set;
//! query parameters removed, set; json fields removed, set).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use bytes::Bytes;
use regex::Regex;

use super::conditions::{When, path_only};
use super::json::{self, Op};
use crate::config::{OnFailure, RewriteRule};
use crate::record::{Record, Text};

/// Failures logged per rule (with the record's method and path, never its headers or
/// body); the rest are only counted.
const FAILURES_LOGGED: u32 = 3;

#[derive(Debug)]
pub struct Rewrite {
    pub label: String,
    pub skip_on_failure: bool,
    when: Option<When>,
    path: Option<(Regex, String)>,
    set_host: Option<Text>,
    remove_headers: Vec<String>,
    rename_headers: Vec<(String, Text)>,
    set_headers: Vec<(Text, Bytes)>,
    remove_query: Vec<String>,
    set_query: Vec<(String, String)>,
    /// Removals, then sets, each with its pointer's tokens.
    json: Vec<(Vec<String>, Op)>,
    logged: AtomicU32,
}

/// What a rule did to a record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    /// It set the Host.
    pub host: bool,
    /// Why a part of it could not be applied.
    pub failed: Option<&'static str>,
}

impl Rewrite {
    /// `None` (logged) when a regex does not compile: validation refused such a job, so the
    /// job was changed underneath.
    pub fn new(rule: &RewriteRule, label: String) -> Option<Rewrite> {
        let when = match &rule.when {
            Some(c) => Some(When::new(c, &label).ok()?),
            None => None,
        };
        let path = match &rule.path {
            Some(p) => {
                let (from, to) = (p.from.as_deref()?, p.to.clone()?);
                match Regex::new(from) {
                    Ok(re) => Some((re, to)),
                    Err(e) => {
                        tracing::error!(rule = label, error = %e, "rewrite left out: path.from does not compile");
                        return None;
                    }
                }
            }
            None => None,
        };
        let json_set = rule.set_json.iter().map(|(ptr, v)| {
            // invariant: a TOML value without dates (validated) serializes as json.
            (json::tokens(ptr), Op::Set(serde_json::to_string(v).unwrap_or_else(|_| "null".into())))
        });
        Some(Rewrite {
            skip_on_failure: rule.on_failure == OnFailure::Skip,
            when,
            path,
            set_host: rule.set_host.as_deref().map(Text::from),
            remove_headers: rule.remove_headers.clone(),
            rename_headers: rule
                .rename_headers
                .iter()
                .map(|(a, b)| (a.clone(), Text::from(b.as_str())))
                .collect(),
            set_headers: rule
                .set_headers
                .iter()
                .map(|(n, v)| (Text::from(n.as_str()), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            remove_query: rule.remove_query.clone(),
            set_query: rule.set_query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            json: rule.remove_json.iter().map(|p| (json::tokens(p), Op::Remove)).chain(json_set).collect(),
            logged: AtomicU32::new(0),
            label,
        })
    }

    pub fn apply(&self, r: &mut Record) -> Outcome {
        let mut out = Outcome::default();
        if let Some(when) = &self.when
            && !when.matches(r, path_only(r.path.as_bytes()))
        {
            return out;
        }
        if let Some((re, to)) = &self.path {
            let (path, query) = split_query(&r.path);
            if let std::borrow::Cow::Owned(new) = re.replace(path, to.as_str()) {
                if new.starts_with('/') {
                    if new != path {
                        r.path = Text::from(format!("{new}{query}"));
                        out.changed = true;
                    }
                } else {
                    out.failed = Some("the new path does not start with /");
                }
            }
        }
        if let Some(host) = &self.set_host {
            out.changed |= r.host.as_ref() != Some(host);
            r.host = Some(host.clone());
            out.host = true;
        }
        out.changed |= self.headers(&mut r.headers);
        out.changed |= self.query(r);
        if !self.json.is_empty() && !r.body.is_empty() {
            for (tokens, op) in &self.json {
                match json::edit(&r.body, tokens, op) {
                    Ok(Some(body)) => {
                        r.body = Bytes::from(body);
                        out.changed = true;
                    }
                    Ok(None) => {}
                    Err(f) => {
                        out.failed.get_or_insert(f.as_str());
                        if f == json::Failure::NotJson {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(why) = out.failed
            && self.logged.fetch_add(1, Relaxed) < FAILURES_LOGGED
        {
            tracing::warn!(
                rule = self.label,
                why,
                method = %r.method,
                path = %String::from_utf8_lossy(path_only(r.path.as_bytes())),
                skipped = self.skip_on_failure,
                "rewrite could not be applied"
            );
        }
        out
    }

    fn headers(&self, headers: &mut Vec<(Text, Bytes)>) -> bool {
        let before = headers.len();
        let mut changed = false;
        for name in &self.remove_headers {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        for (from, to) in &self.rename_headers {
            for (n, _) in headers.iter_mut().filter(|(n, _)| n.eq_ignore_ascii_case(from)) {
                *n = to.clone();
                changed = true;
            }
        }
        for (name, value) in &self.set_headers {
            match headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name.as_str())) {
                Some(first) => {
                    changed |= headers[first].1 != *value;
                    headers[first].1 = value.clone();
                    let mut i = 0;
                    headers.retain(|(n, _)| {
                        i += 1;
                        i - 1 == first || !n.eq_ignore_ascii_case(name.as_str())
                    });
                }
                None => {
                    headers.push((name.clone(), value.clone()));
                    changed = true;
                }
            }
        }
        changed || headers.len() != before
    }

    fn query(&self, r: &mut Record) -> bool {
        if self.remove_query.is_empty() && self.set_query.is_empty() {
            return false;
        }
        let (path, query) = split_query(&r.path);
        let mut pairs: Vec<String> = match query.strip_prefix('?') {
            Some(q) if !q.is_empty() => q.split('&').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        for name in &self.remove_query {
            pairs.retain(|p| key(p) != name);
        }
        for (name, value) in &self.set_query {
            let pair = format!("{name}={value}");
            match pairs.iter().position(|p| key(p) == name) {
                Some(first) => {
                    pairs[first] = pair;
                    let mut i = 0;
                    pairs.retain(|p| {
                        i += 1;
                        i - 1 == first || key(p) != name
                    });
                }
                None => pairs.push(pair),
            }
        }
        let new = if pairs.is_empty() { path.to_owned() } else { format!("{path}?{}", pairs.join("&")) };
        if new == *r.path {
            return false;
        }
        r.path = Text::from(new);
        true
    }
}

/// A query pair's name.
fn key(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// The path and its query, `?` included (`""` without one).
fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(q) => path.split_at(q),
        None => (path, ""),
    }
}
