//! The job file's sections that shape production traffic for a staging target:
//! `[[filter]]` (which records are replayed at all). See `crate::shaping` for how they apply.

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
