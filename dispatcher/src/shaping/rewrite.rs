//! `[[rewrite]]`: a record's path, Host, headers, query and json body changed, rule after
//! rule, each rule's actions in a fixed order (path, Host, headers removed, renamed, set;
//! query parameters removed, set; json fields removed, set).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use regex::CaptureLocations;

use super::conditions::{Target, When, path_only};
use super::json::{self, Op};
use super::path::{PathError, PathRule};
use crate::config::{OnFailure, Problem, RewriteRule, not_a_regex};
use crate::record::{Record, Text, pair_name, pairs};

/// Failures logged per rule (with the record's method and path, never its headers or
/// body); the rest are only counted.
const FAILURES_LOGGED: u32 = 3;

#[derive(Debug)]
pub struct Rewrite {
    pub label: String,
    pub skip_on_failure: bool,
    when: Option<When>,
    path: Option<PathRule>,
    /// Tells this rule's capture slots apart in a reader thread's [`Draft`].
    uid: u64,
    set_host: Option<Text>,
    remove_headers: Vec<String>,
    rename_headers: Vec<(String, Text)>,
    set_headers: Vec<(Text, Bytes)>,
    remove_query: Vec<String>,
    /// Each parameter's name, and the `name=value` pair written for it.
    set_query: Vec<(String, String)>,
    /// Removals, then sets, each with its pointer's tokens.
    json: Vec<(Vec<String>, Op)>,
    logged: AtomicU32,
}

/// Rules made so far, for their `uid`.
static RULES_MADE: AtomicU64 = AtomicU64::new(0);

/// A reader thread's buffers for one record: its path as the rules so far made it (so a
/// record whose path several rules change costs one allocation for it, at the end), a
/// spare each change is written into and then swapped with, and each path rule's capture
/// slots (the regex crate would allocate them per record).
#[derive(Debug, Default)]
pub struct Draft {
    pub path: String,
    spare: String,
    pub changed: bool,
    /// Where `path`'s query starts (its `?`), or its length.
    query_at: usize,
    /// By rule `uid`; a few rules each, so a scan beats a hash.
    slots: Vec<(u64, CaptureLocations)>,
}

impl Draft {
    /// Starts on a record whose path is `path`.
    pub fn load(&mut self, path: &str) {
        self.path.clear();
        self.path.push_str(path);
        self.changed = false;
        self.find_query();
        // Rules of jobs long over must not pile up in a dispatcher serving job after job.
        if self.slots.len() > 256 {
            self.slots.clear();
        }
    }

    /// The path as the rules left it, in memory of its own (exactly its size, so that the
    /// shared bytes need no second allocation).
    pub fn text(&self) -> Text {
        let mut s = String::with_capacity(self.path.len());
        s.push_str(&self.path);
        Text::from(s)
    }

    /// Makes the spare, written by a change, the path; its query starts at `query_at`.
    fn swap(&mut self, query_at: usize) {
        std::mem::swap(&mut self.path, &mut self.spare);
        self.changed = true;
        self.query_at = query_at;
    }

    fn find_query(&mut self) {
        self.query_at = memchr::memchr(b'?', self.path.as_bytes()).unwrap_or(self.path.len());
    }

    /// The path as conditions see it.
    fn target(&self) -> Target<'_> {
        let (path, query) = self.path.split_at(self.query_at);
        Target { path, query: query.strip_prefix('?') }
    }
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
    /// The rule at `[[rewrite]]` index `index`, compiled; `None` when a part of it cannot
    /// be (a regex that does not compile, a path rule without a side or naming a group its
    /// regex lacks), each such part a problem in `found`, so a broken rule refuses the job
    /// instead of being left out.
    pub fn new(rule: &RewriteRule, label: String, index: usize, found: &mut Vec<Problem>) -> Option<Rewrite> {
        let key = format!("rewrite[{index}]");
        let before = found.len();
        let when = rule.when.as_ref().map(|c| When::new(c, &format!("{key}.when"), found));
        let path = rule.path.as_ref().and_then(|p| {
            let (Some(from), Some(to)) = (p.from.as_deref(), p.to.as_deref()) else {
                let why = "needs from (a regex) and to (the new path, $1 for a capture group): \
                           path = { from = \"^/v1/(.*)\", to = \"/v2/$1\" }";
                found.push(Problem::new(&format!("{key}.path"), "", why));
                return None;
            };
            let problem = match PathRule::new(from, to) {
                Ok(compiled) => return Some(compiled),
                Err(PathError::From(e)) => not_a_regex(&format!("{key}.path.from"), from, &e),
                Err(PathError::To(why)) => Problem::new(&format!("{key}.path.to"), format!("{to:?}"), &why),
            };
            found.push(problem);
            None
        });
        if found.len() > before {
            return None;
        }
        let json_set = rule.set_json.iter().map(|(ptr, v)| {
            // invariant: a TOML value serializes as json (a date arrives as its text).
            (json::tokens(ptr), Op::Set(serde_json::to_string(v).unwrap_or_else(|_| "null".into())))
        });
        Some(Rewrite {
            skip_on_failure: rule.on_failure == OnFailure::Skip,
            when,
            path,
            set_host: rule.set_host.as_deref().map(Text::interned),
            remove_headers: rule.remove_headers.clone(),
            rename_headers: rule.rename_headers.iter().map(|(a, b)| (a.clone(), Text::interned(b))).collect(),
            set_headers: rule
                .set_headers
                .iter()
                .map(|(n, v)| (Text::interned(n), crate::record::interned(v.as_bytes())))
                .collect(),
            remove_query: rule.remove_query.clone(),
            set_query: rule.set_query.iter().take(64).map(|(k, v)| (k.clone(), format!("{k}={v}"))).collect(),
            json: rule.remove_json.iter().map(|p| (json::tokens(p), Op::Remove)).chain(json_set).collect(),
            logged: AtomicU32::new(0),
            uid: RULES_MADE.fetch_add(1, Relaxed),
            label,
        })
    }

    /// Applies the rule to `r`, whose path is `draft.path` (the rules before may have
    /// changed it; it goes back into `r` once all have run).
    pub fn apply(&self, r: &mut Record, draft: &mut Draft) -> Outcome {
        let mut out = Outcome::default();
        if let Some(when) = &self.when
            && !when.matches(r, draft.target())
        {
            return out;
        }
        if let Some(rule) = &self.path {
            let at = match draft.slots.iter().position(|(uid, _)| *uid == self.uid) {
                Some(at) => at,
                None => {
                    draft.slots.push((self.uid, rule.capture_locations()));
                    draft.slots.len() - 1
                }
            };
            let (path, query) = draft.path.split_at(draft.query_at);
            // The path with the match replaced, then the query, into the spare.
            let new = &mut draft.spare;
            new.clear();
            if rule.write(path, &mut draft.slots[at].1, new) {
                if !new.starts_with('/') {
                    out.failed = Some("the new path does not start with /");
                } else if new.as_str() != path {
                    let query_at = new.len();
                    new.push_str(query);
                    draft.swap(query_at);
                    out.changed = true;
                }
            }
        }
        if let Some(host) = &self.set_host {
            out.changed |= r.host.as_ref() != Some(host);
            r.host = Some(host.clone());
            out.host = true;
        }
        out.changed |= self.headers(&mut r.headers);
        out.changed |= self.query(draft);
        if !self.json.is_empty() && !r.body.is_empty() {
            match json::edit_all(&r.body, &self.json) {
                Ok((body, failed)) => {
                    if let Some(body) = body {
                        r.body = Bytes::from(body);
                        out.changed = true;
                    }
                    if let Some(f) = failed {
                        out.failed.get_or_insert(f.as_str());
                    }
                }
                Err(f) => {
                    out.failed.get_or_insert(f.as_str());
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
                path = %String::from_utf8_lossy(path_only(draft.path.as_bytes())),
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
            headers.retain(|(n, _)| !n.is(name));
        }
        for (from, to) in &self.rename_headers {
            for (n, _) in headers.iter_mut().filter(|(n, _)| n.is(from)) {
                *n = to.clone();
                changed = true;
            }
        }
        for (name, value) in &self.set_headers {
            match headers.iter().position(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name.as_bytes())) {
                Some(first) => {
                    changed |= headers[first].1 != *value;
                    headers[first].1 = value.clone();
                    let mut i = 0;
                    headers.retain(|(n, _)| {
                        i += 1;
                        i - 1 == first || !n.as_bytes().eq_ignore_ascii_case(name.as_bytes())
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

    /// Query parameters removed and set, written into the draft's spare (and swapped in
    /// when that changes the path).
    fn query(&self, draft: &mut Draft) -> bool {
        if self.remove_query.is_empty() && self.set_query.is_empty() {
            return false;
        }
        let (path, query) = draft.path.split_at(draft.query_at);
        let query = query.strip_prefix('?');
        // Nothing to set and none of the names to remove: the path stays (the common case
        // of a tracking parameter most records lack), without being written again.
        if self.set_query.is_empty()
            && !query.is_some_and(|q| pairs(q).any(|p| self.remove_query.iter().any(|n| n == pair_name(p))))
        {
            return false;
        }
        let new = &mut draft.spare;
        new.clear();
        new.push_str(path);
        // Which set_query parameters were written (validation allows at most 64).
        let mut done = 0u64;
        let push = |new: &mut String, pair: &str| {
            new.push(if new.len() == path.len() { '?' } else { '&' });
            new.push_str(pair);
        };
        for pair in pairs(query.unwrap_or_default()).filter(|p| !p.is_empty()) {
            let name = pair_name(pair);
            if self.remove_query.iter().any(|n| n == name) {
                continue;
            }
            match self.set_query.iter().position(|(n, _)| n == name) {
                // The first occurrence takes the value; later ones go.
                Some(i) if done & (1 << i) == 0 => {
                    done |= 1 << i;
                    push(new, &self.set_query[i].1);
                }
                Some(_) => {}
                None => push(new, pair),
            }
        }
        for (i, (_, pair)) in self.set_query.iter().enumerate() {
            if done & (1 << i) == 0 {
                push(new, pair);
            }
        }
        if *new == draft.path {
            return false;
        }
        let query_at = path.len();
        draft.swap(query_at);
        true
    }
}
