//! The job file's sections that shape production traffic for a staging target:
//! `[[filter]]` (which records are replayed at all), `[[substitute]]` (production credentials
//! swapped for staging ones through a table) and `[[rewrite]]` (paths, hosts, headers, query
//! parameters and json body fields changed). See `crate::shaping` for how they apply.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[[filter]]`: a rule allowing or denying the records it matches. Every condition given
/// must hold for the rule to match; a rule without conditions matches every record. The
/// first rule that matches decides; a record no rule matches is replayed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilterRule {
    /// Shown in the accounting (`filtered`) and logs; defaults to `filter[N]`.
    pub name: Option<String>,
    pub action: Option<FilterAction>,
    /// One method or a list, compared without regard to case.
    pub method: Option<Methods>,
    /// A regex on the path, without the query.
    pub path: Option<String>,
    /// A regex on the recorded host (from an absolute URL or the Host header).
    pub host: Option<String>,
    /// A header that must be present (name compared without regard to case)...
    pub header: Option<String>,
    /// ...and, when given, a regex one of its values must match.
    pub header_value: Option<String>,
    /// A query parameter that must be present...
    pub query: Option<String>,
    /// ...and, when given, a regex its value (as recorded, not decoded) must match.
    pub query_value: Option<String>,
}

impl FilterRule {
    /// The name the accounting shows for the rule at `index`.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("filter[{index}]"))
    }

    /// The rule's conditions, as a rewrite's `when` holds them.
    pub fn conditions(&self) -> Conditions {
        Conditions {
            method: self.method.clone(),
            path: self.path.clone(),
            host: self.host.clone(),
            header: self.header.clone(),
            header_value: self.header_value.clone(),
            query: self.query.clone(),
            query_value: self.query_value.clone(),
        }
    }
}

/// Conditions a record must all meet: a filter's, and a rewrite's `when`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Conditions {
    pub method: Option<Methods>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub query: Option<String>,
    pub query_value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Replay the record (later rules are not looked at).
    Allow,
    /// Leave the record out, counted as filtered under the rule's name.
    Deny,
}

/// `method = "POST"` or `method = ["POST", "PUT"]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "expected a method like \"POST\" or a list like [\"POST\", \"PUT\"]")]
pub enum Methods {
    One(String),
    Many(Vec<String>),
}

impl Methods {
    pub fn list(&self) -> Vec<String> {
        match self {
            Methods::One(m) => vec![m.clone()],
            Methods::Many(ms) => ms.clone(),
        }
    }
}

/// `[[rewrite]]`: changes made to every record its `when` conditions hold for (every record
/// without `when`). Rules apply in order, each to what the ones before it made; within a
/// rule the actions apply in the order of the fields below. An action that does not concern
/// a record (a path the regex does not match, a header it lacks) leaves it as it is.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RewriteRule {
    /// Shown in the accounting (`rewrites`); defaults to `rewrite[N]`.
    pub name: Option<String>,
    pub when: Option<Conditions>,
    /// The path (without the query) through a regex with capture groups.
    pub path: Option<PathRewrite>,
    /// The Host header sent, whatever the target's host or `preserve_host`.
    pub set_host: Option<String>,
    /// Headers taken out, every value (names compared without regard to case).
    pub remove_headers: Vec<String>,
    /// Headers renamed (old name → new name), values and places kept.
    pub rename_headers: BTreeMap<String, String>,
    /// Headers given one value: in the place of the first one recorded, else added last.
    pub set_headers: BTreeMap<String, String>,
    /// Query parameters taken out, every occurrence.
    pub remove_query: Vec<String>,
    /// Query parameters given one value (written as given: percent-encode it yourself).
    pub set_query: BTreeMap<String, String>,
    /// Json body fields taken out, by JSON pointer (`/user/password`).
    pub remove_json: Vec<String>,
    /// Json body fields set, by JSON pointer, to any TOML value (a date as its text).
    pub set_json: BTreeMap<String, toml::Value>,
    /// What becomes of a record the rule cannot be applied to (its body is not json, a
    /// pointer's parent is missing, the new path would not start with `/`).
    pub on_failure: OnFailure,
}

impl RewriteRule {
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("rewrite[{index}]"))
    }
}

/// `path = { from = "^/v1/(.*)", to = "/v2/$1" }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PathRewrite {
    pub from: Option<String>,
    /// `$1`, `${1}` and `${name}` insert capture groups; `$$` is a dollar.
    pub to: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Replay it with the rest of the rule applied (counted as failed under the rule).
    #[default]
    Send,
    /// Leave it out (counted as failed, and as skipped `rewrite_failed`).
    Skip,
}

/// `[[substitute]]`: a header's, a cookie's or a query parameter's value mapped through a
/// table of production value → staging value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SubstituteRule {
    /// Shown in the accounting (`substitutes`); defaults to `substitute[N]`.
    pub name: Option<String>,
    /// Exactly one of `header`, `cookie` and `query` says which value is mapped.
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
    /// A regex on the value; its first capture group (the whole match without one) is the
    /// part looked up and replaced: `^Bearer (.+)$`. Without it the whole value is.
    pub pattern: Option<String>,
    /// A `.csv` file of `production,staging` rows or a `.json` object; relative to the job file.
    pub table: Option<String>,
    pub unmapped: Unmapped,
    /// With `unmapped = "default"`: what a value missing from the table becomes.
    pub default: Option<String>,
}

impl SubstituteRule {
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("substitute[{index}]"))
    }

    /// What the rule maps, for messages: `header Authorization`, `cookie sid`, `query token`.
    pub fn subject(&self) -> Option<(SubstituteOn, &str)> {
        match (&self.header, &self.cookie, &self.query) {
            (Some(h), None, None) => Some((SubstituteOn::Header, h)),
            (None, Some(c), None) => Some((SubstituteOn::Cookie, c)),
            (None, None, Some(q)) => Some((SubstituteOn::Query, q)),
            _ => None,
        }
    }
}

/// Which kind of value a substitute maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubstituteOn {
    Header,
    Cookie,
    Query,
}

/// What becomes of a value the table does not hold (or the pattern does not match).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Sent as recorded.
    #[default]
    Keep,
    /// The record is left out (counted as skipped `unmapped`).
    Drop,
    /// Replaced by `default`.
    Default,
}
