//! Endpoints: which requests count together in statistics. The dispatch loop names each
//! record's endpoint ([`EndpointTable::id`]) and sends the id with the record; replayers
//! only index by it, and their statistics come back keyed by it. So `[stats] max_endpoints`
//! holds for the whole job and the whole fleet, not per replayer.
//!
//! Policy: the first `max_endpoints` distinct names are kept apart, in the order the
//! dispatcher meets them; every later one counts as "other" (id 0). First come rather than
//! busiest: an endpoint's series is stable from its first second (a sink never sees it
//! move into "other" later), and deciding "busiest" would need the counts of endpoints not
//! kept.
//!
//! Names: the first `[stats] endpoints` rule that matches names the request; else, when its
//! path has ids in it ([`ids`]: numbers, UUIDs, hex, base64-like, `[stats] id_patterns`),
//! the path with each id as `{id}`; else the method and path as they are. Rules and ids
//! group paths before the cap counts, so a recording with ids in its paths keeps a readable
//! endpoint per route.

pub mod ids;

use std::sync::{Arc, Mutex};

use foldhash::HashMap;

use crate::config::{Problem, StatsConfig, not_a_regex};
use ids::IdShapes;

/// The name of id 0: requests of endpoints past the cap.
pub const OTHER: &str = "other";

/// (method, path) pairs remembered for their id when rules or ids are in use; past this the memo
/// starts over, so paths full of ids cannot grow it without bound.
const MEMO_MAX: usize = 100_000;

/// A grouping rule from `[stats] endpoints`.
#[derive(Debug)]
struct Rule {
    method: Option<String>,
    pattern: regex::Regex,
    name: String,
}

impl Rule {
    /// "GET /users/{id}" matches GETs only; "/users/{id}" any method, named "METHOD /users/{id}".
    fn new(pattern: &str, name: &str) -> Result<Rule, regex::Error> {
        let pattern = regex::Regex::new(pattern)?;
        let method = name
            .split_once(' ')
            .filter(|(m, rest)| {
                !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) && rest.starts_with('/')
            })
            .map(|(m, _)| m.to_owned());
        Ok(Rule { method, pattern, name: name.to_owned() })
    }

    fn name_for(&self, method: &str, path: &str) -> Option<String> {
        if self.method.as_deref().is_some_and(|m| m != method) || !self.pattern.is_match(path) {
            return None;
        }
        Some(match (&self.method, method) {
            (Some(_), _) | (None, "") => self.name.clone(),
            (None, _) => format!("{method} {}", self.name),
        })
    }
}

/// Endpoint names by id (0 is "other"), shared between the dispatch loop, which adds them,
/// and whoever reads statistics. Only ever grows, at most to the cap.
#[derive(Debug)]
pub struct EndpointNames(Mutex<Vec<Arc<str>>>);

impl Default for EndpointNames {
    fn default() -> Self {
        Self(Mutex::new(vec![Arc::from(OTHER)]))
    }
}

impl EndpointNames {
    /// The name of `id`; an id never handed out is "other" (a replayer cannot invent names).
    pub fn name(&self, id: u32) -> Arc<str> {
        self.with(|names| names.get(id as usize).unwrap_or(&names[0]).clone())
    }

    /// Every name, by id: for a batch of lookups without taking the lock for each.
    pub fn snapshot(&self) -> Vec<Arc<str>> {
        self.with(<[Arc<str>]>::to_vec)
    }

    fn with<T>(&self, f: impl FnOnce(&[Arc<str>]) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, name: Arc<str>) -> u32 {
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        names.push(name);
        (names.len() - 1) as u32
    }
}

/// Paths (without query, as bytes) → endpoint id, for one method.
type PathIds = HashMap<Box<[u8]>, u32>;

/// The dispatch loop's half: finds or hands out the id of each record's endpoint.
/// How `[stats]` groups requests into endpoints, compiled once by the compile step
/// (`plan::compile`): its rules' regexes, the id shapes and the cap.
#[derive(Debug)]
pub struct Grouping {
    rules: Vec<Rule>,
    ids: Option<IdShapes>,
    cap: usize,
}

impl Grouping {
    /// `[stats]` compiled; each regex that does not compile is a problem in `found`.
    pub fn new(cfg: &StatsConfig, found: &mut Vec<Problem>) -> Grouping {
        let rules = cfg
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                Rule::new(&r.pattern, &r.name)
                    .map_err(|e| {
                        found.push(not_a_regex(&format!("stats.endpoints[{i}].pattern"), &r.pattern, &e))
                    })
                    .ok()
            })
            .collect();
        Grouping { rules, ids: IdShapes::new(cfg, found), cap: cfg.max_endpoints.max(1) as usize }
    }
}

impl Default for Grouping {
    /// `[stats]`'s defaults: ids of every shape, no rules.
    fn default() -> Grouping {
        Grouping::new(&StatsConfig::default(), &mut Vec::new())
    }
}

#[derive(Debug)]
pub struct EndpointTable {
    grouping: Arc<Grouping>,
    kept: usize,
    /// method → path (without query) → id. Without rules or ids these are exactly the kept
    /// endpoints; with rules, a bounded memo of the names they gave; with ids alone, unused.
    memo: HashMap<Box<[u8]>, PathIds>,
    memo_len: usize,
    /// Names given by rules or ids → id.
    by_name: HashMap<Box<[u8]>, u32>,
    names: Arc<EndpointNames>,
    /// Where a templated name is made, kept from one record to the next.
    scratch: Vec<u8>,
}

impl EndpointTable {
    pub fn new(grouping: Arc<Grouping>, names: Arc<EndpointNames>) -> Self {
        Self {
            grouping,
            kept: 0,
            memo: HashMap::default(),
            memo_len: 0,
            by_name: HashMap::default(),
            names,
            scratch: Vec::new(),
        }
    }

    /// The id of the endpoint of a `method` request to `path` (the query is ignored); an
    /// empty method (a gRPC call) names the endpoint by its path alone. Both
    /// are looked up as bytes: a record's text is UTF-8 already, and checking it again on
    /// every lookup was 1.6 % of the dispatcher; only a first sighting reads it as text.
    pub fn id(&mut self, method: impl AsRef<[u8]>, path: impl AsRef<[u8]>) -> u32 {
        let (method, path) = (method.as_ref(), path.as_ref());
        let path = memchr::memchr(b'?', path).map_or(path, |q| &path[..q]);
        // Ids without rules, `[stats]`' default: the name is made in one pass and looked up,
        // no memo. A memo hit saves that pass, but on paths that hold ids (all distinct, as
        // production's often are) it never hits, and a miss cost four allocations and two
        // hash inserts: 14 % of the dispatcher's CPU on bench (a)'s production-shaped
        // recording.
        if self.grouping.rules.is_empty() && self.grouping.ids.is_some() {
            return self.templated(method, path);
        }
        if let Some(&id) = self.memo.get(method).and_then(|paths| paths.get(path)) {
            return id;
        }
        // Without rules or ids the memo is the table: a miss past the cap is "other" and
        // costs no allocation (nor a look at the text).
        let Grouping { rules, ids, cap } = &*self.grouping;
        let plain = rules.is_empty() && ids.is_none();
        if plain && self.kept >= *cap {
            return 0;
        }
        let (method, path) = (String::from_utf8_lossy(method), String::from_utf8_lossy(path));
        let (method, path) = (method.as_ref(), path.as_ref());
        if plain {
            let id = self.keep(if method.is_empty() { path.to_owned() } else { format!("{method} {path}") });
            self.remember(method, path, id);
            return id;
        }
        let id = match rules.iter().find_map(|r| r.name_for(method, path)) {
            Some(name) => self.by_name(name.as_bytes()),
            None => self.templated(method.as_bytes(), path.as_bytes()),
        };
        if self.memo_len >= MEMO_MAX {
            self.memo.clear();
            self.memo_len = 0;
        }
        self.remember(method, path, id);
        id
    }

    /// The id of a request no rule names: `METHOD /path/{id}`, its ids (if the job
    /// templates any) as placeholders.
    fn templated(&mut self, method: &[u8], path: &[u8]) -> u32 {
        let mut name = std::mem::take(&mut self.scratch);
        name.clear();
        if !method.is_empty() {
            name.extend_from_slice(method);
            name.push(b' ');
        }
        match &self.grouping.ids {
            Some(ids) => {
                ids.template_into(path, &mut name);
            }
            None => name.extend_from_slice(path),
        }
        let id = self.by_name(&name);
        self.scratch = name;
        id
    }

    /// The id of an endpoint name, handed out if it is new and the cap allows.
    fn by_name(&mut self, name: &[u8]) -> u32 {
        match self.by_name.get(name) {
            Some(&id) => id,
            None if self.kept < self.grouping.cap => {
                let id = self.keep(String::from_utf8_lossy(name).into_owned());
                self.by_name.insert(Box::from(name), id);
                id
            }
            None => 0,
        }
    }

    fn keep(&mut self, name: String) -> u32 {
        self.kept += 1;
        self.names.push(Arc::from(name))
    }

    fn remember(&mut self, method: &str, path: &str, id: u32) {
        self.memo_len += 1;
        let path = Box::from(path.as_bytes());
        match self.memo.get_mut(method.as_bytes()) {
            Some(paths) => paths.insert(path, id),
            None => self.memo.entry(Box::from(method.as_bytes())).or_default().insert(path, id),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::EndpointRule;

    fn grouping(cfg: &StatsConfig) -> Arc<Grouping> {
        let mut found = Vec::new();
        let grouping = Grouping::new(cfg, &mut found);
        assert!(found.is_empty(), "{found:?}");
        Arc::new(grouping)
    }

    fn table(max: u32, rules: &[(&str, &str)]) -> (EndpointTable, Arc<EndpointNames>) {
        let cfg = StatsConfig {
            endpoints: rules
                .iter()
                .map(|(p, n)| EndpointRule { pattern: (*p).to_owned(), name: (*n).to_owned() })
                .collect(),
            max_endpoints: max,
            templates: crate::config::Templates::All(false),
            id_patterns: vec![],
        };
        let names = Arc::new(EndpointNames::default());
        (EndpointTable::new(grouping(&cfg), Arc::clone(&names)), names)
    }

    fn named<'a>(t: &mut EndpointTable, names: &EndpointNames, reqs: &[(&'a str, &'a str)]) -> Vec<String> {
        reqs.iter().map(|(m, p)| names.name(t.id(m, p)).to_string()).collect()
    }

    #[test]
    fn rules_group_paths_and_a_method_in_the_name_filters() {
        let (mut t, names) =
            table(10, &[("^/users/[0-9]+$", "GET /users/{id}"), ("^/items/[^/]+$", "/items/{sku}")]);
        let got = named(
            &mut t,
            &names,
            &[
                ("GET", "/users/1"),
                ("GET", "/users/22?x"),
                ("POST", "/users/3"),
                ("GET", "/items/a"),
                ("PUT", "/items/b"),
            ],
        );
        assert_eq!(
            got,
            ["GET /users/{id}", "GET /users/{id}", "POST /users/3", "GET /items/{sku}", "PUT /items/{sku}"]
        );
        assert_eq!(names.snapshot().len(), 5, "other and four named");
    }

    #[test]
    fn endpoints_past_the_cap_count_as_other_for_the_whole_job() {
        for rules in [&[][..], &[("^/never$", "/never")][..]] {
            let (mut t, names) = table(2, rules);
            let got = named(
                &mut t,
                &names,
                &[("GET", "/a"), ("GET", "/b"), ("GET", "/c"), ("GET", "/a?q"), ("GET", "/c")],
            );
            assert_eq!(got, ["GET /a", "GET /b", "other", "GET /a", "other"], "rules {rules:?}");
            assert_eq!(t.id("POST", "/a"), 0, "another method is another endpoint");
        }
    }

    #[test]
    fn an_id_never_handed_out_reads_as_other() {
        let (mut t, names) = table(5, &[]);
        assert_eq!(t.id("GET", "/x"), 1);
        assert_eq!(&*names.name(1), "GET /x");
        assert_eq!(&*names.name(4_000_000), OTHER);
    }

    /// `[stats]`' default (ids, no rules) names without a memo: the same names, the query
    /// left out, a gRPC call by its path, and the cap counted on names.
    #[test]
    fn ids_alone_name_each_request_by_its_template() {
        let cfg = StatsConfig { max_endpoints: 3, ..StatsConfig::default() };
        let names = Arc::new(EndpointNames::default());
        let mut t = EndpointTable::new(grouping(&cfg), Arc::clone(&names));
        let got = named(
            &mut t,
            &names,
            &[
                ("GET", "/users/1/orders/5f1d7c2e9a?page=2"),
                ("GET", "/users/2/orders/0b1e9c2a?x"),
                ("", "/shop.Items/Get"),
                ("PUT", "/users/me"),
                ("GET", "/users/3/orders/77"),
                ("POST", "/users/4"),
            ],
        );
        assert_eq!(
            got,
            [
                "GET /users/{id}/orders/{id}",
                "GET /users/{id}/orders/{id}",
                "/shop.Items/Get",
                "PUT /users/me",
                "GET /users/{id}/orders/{id}",
                "other"
            ]
        );
        assert_eq!(names.snapshot().len(), 4, "other and three named");
    }

    #[test]
    fn ids_in_paths_group_under_the_cap_and_rules_still_win() {
        let cfg = StatsConfig {
            endpoints: vec![EndpointRule { pattern: "^/admin/".into(), name: "/admin".into() }],
            max_endpoints: 3,
            ..StatsConfig::default()
        };
        let names = Arc::new(EndpointNames::default());
        let mut t = EndpointTable::new(grouping(&cfg), Arc::clone(&names));
        let reqs: Vec<(String, String)> = (0..50)
            .flat_map(|i| {
                [("GET".to_owned(), format!("/users/{i}?x")), ("GET".into(), format!("/admin/{i}"))]
            })
            .chain([("DELETE".into(), "/users/0b1e9c2a-5f4d-4e7b-9a31-2c8d6f0e4b17".into())])
            .chain([("GET".into(), "/users/me".into())])
            .collect();
        let got: BTreeSet<String> = reqs.iter().map(|(m, p)| names.name(t.id(m, p)).to_string()).collect();
        let want = ["GET /users/{id}", "GET /admin", "DELETE /users/{id}", "other"];
        assert_eq!(got, want.iter().map(|s| (*s).to_owned()).collect(), "the 4th endpoint is past the cap");
    }
}
