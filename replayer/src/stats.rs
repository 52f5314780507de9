//! What a replayer measured since its last statistics report, and how many records it is
//! done with (the ack). Acks go out as often as credits need; statistics once a second.
//!
//! Every request records under one lock, so nothing slow may happen under it: histograms are
//! large (three of ~140 KB per endpoint), and allocating and zeroing them there stalled every
//! worker once a second. Taking a delta swaps in clean spares prepared outside the lock;
//! the taken ones are encoded, reset and kept as the next spares, also outside the lock.

use std::collections::HashMap;
use std::sync::Mutex;

use reprise_proto::pb;
use reprise_proto::stats::{EndpointStats, Outcome};

/// Name used for endpoints past the cap.
pub const OTHER: &str = "other";

/// Raw (method, path) pairs remembered for their endpoint; past this the memo starts over, so
/// paths full of ids cannot grow it without bound.
const MEMO_MAX: usize = 100_000;

/// An endpoint grouping rule from `[stats] endpoints`.
#[derive(Debug)]
pub struct Rule {
    method: Option<String>,
    pattern: regex::Regex,
    name: String,
}

impl Rule {
    /// "GET /users/{id}" matches GETs only; "/users/{id}" any method, named "METHOD /users/{id}".
    pub fn new(pattern: &str, name: &str) -> Result<Rule, regex::Error> {
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
        Some(if self.method.is_some() { self.name.clone() } else { format!("{method} {}", self.name) })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// method → path (without query) → endpoint index; looked up without allocating.
    index: HashMap<String, HashMap<String, usize>>,
    memo: usize,
    /// Endpoint name → index.
    by_name: HashMap<String, usize>,
    /// Endpoint names by index; "other" once the cap is reached.
    names: Vec<String>,
    other: Option<usize>,
    /// Statistics since the last report, by endpoint index (always allocated).
    delta: Vec<EndpointStats>,
    completed: u64,
    cancelled: u64,
    unreported: u64,
    /// Rows of this interval, when raw results are on.
    raw: Vec<pb::RawResult>,
    raw_dropped: u64,
}

/// Raw rows kept per interval (a second); past this they are counted, not kept.
const RAW_MAX: usize = 100_000;

/// When a request was due and sent, Unix µs: what a raw result row needs beyond the outcome.
#[derive(Clone, Copy, Debug)]
pub struct RawTimes {
    pub due_unix_us: i64,
    pub sent_unix_us: i64,
}

impl Inner {
    fn endpoint(&mut self, method: &str, path: &str, cap: usize, rules: &[Rule]) -> usize {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(&i) = self.index.get(method).and_then(|paths| paths.get(path)) {
            return i;
        }
        let name = rules
            .iter()
            .find_map(|r| r.name_for(method, path))
            .unwrap_or_else(|| endpoint_name(method, path));
        let i = match self.by_name.get(&name) {
            Some(&i) => i,
            None if self.names.len() - usize::from(self.other.is_some()) < cap => {
                let i = self.push(name.clone());
                self.by_name.insert(name, i);
                i
            }
            None => match self.other {
                Some(o) => o,
                None => {
                    let o = self.push(OTHER.to_owned());
                    self.other = Some(o);
                    o
                }
            },
        };
        if self.memo >= MEMO_MAX {
            self.index.clear();
            self.memo = 0;
        }
        self.memo += 1;
        self.index.entry(method.to_owned()).or_default().insert(path.to_owned(), i);
        i
    }

    fn push(&mut self, name: String) -> usize {
        self.names.push(name);
        // Once per endpoint and job: the only allocation of statistics under the lock.
        self.delta.push(EndpointStats::default());
        self.names.len() - 1
    }
}

/// A delta ready to ship.
#[derive(Debug)]
pub struct Delta {
    pub endpoints: Vec<pb::EndpointDelta>,
    pub completed_total: u64,
    pub cancelled_total: u64,
    pub raw: Vec<pb::RawResult>,
    pub raw_dropped: u64,
}

#[derive(Debug)]
pub struct Recorder {
    inner: Mutex<Inner>,
    rules: Vec<Rule>,
    /// Clean statistics to swap in at the next take.
    spares: Mutex<Vec<EndpointStats>>,
    max_endpoints: usize,
}

/// "METHOD /path" without the query.
pub fn endpoint_name(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    format!("{method} {path}")
}

impl Recorder {
    pub fn new(max_endpoints: u32, rules: Vec<Rule>) -> Self {
        Self {
            inner: Mutex::default(),
            rules,
            spares: Mutex::default(),
            max_endpoints: max_endpoints.max(1) as usize,
        }
    }

    /// Records one finished request (and its raw row, when given); returns how many
    /// completions are not yet acknowledged.
    pub fn record(&self, method: &str, path: &str, outcome: &Outcome<'_>, raw: Option<RawTimes>) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let i = inner.endpoint(method, path, self.max_endpoints, &self.rules);
        inner.delta[i].record(outcome);
        if let Some(t) = raw {
            if inner.raw.len() < RAW_MAX {
                let row = pb::RawResult {
                    due_unix_us: t.due_unix_us,
                    sent_unix_us: t.sent_unix_us,
                    latency_us: outcome.latency_us,
                    status: outcome.status.map_or(0, u32::from),
                    endpoint: inner.names[i].clone(),
                    error: outcome.error.unwrap_or_default().to_owned(),
                };
                inner.raw.push(row);
            } else {
                inner.raw_dropped += 1;
            }
        }
        inner.completed += 1;
        inner.unreported += 1;
        inner.unreported
    }

    /// Records dropped unsent because the job was stopped.
    pub fn cancel(&self, n: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.completed += n;
        inner.cancelled += n;
    }

    pub fn completed(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).completed
    }

    /// The ack to send now: records done with; resets the count of unacknowledged ones.
    pub fn ack(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.unreported = 0;
        inner.completed
    }

    /// Takes everything since the last call.
    pub fn take(&self) -> Delta {
        let endpoints = self.inner.lock().unwrap_or_else(|p| p.into_inner()).names.len();
        let mut spares = std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner()));
        spares.resize_with(endpoints.max(spares.len()), EndpointStats::default);
        let (taken, completed_total, cancelled_total, raw) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            inner.unreported = 0;
            let mut taken = Vec::new();
            for (slot, name) in inner.delta.iter_mut().zip(&inner.names) {
                if slot.count() > 0 {
                    let fresh = spares.pop().unwrap_or_default();
                    taken.push((name.clone(), std::mem::replace(slot, fresh)));
                }
            }
            let raw = (std::mem::take(&mut inner.raw), std::mem::take(&mut inner.raw_dropped));
            (taken, inner.completed, inner.cancelled, raw)
        };
        let endpoints = taken.iter().map(|(name, s)| s.to_wire(name)).collect();
        for (_, mut used) in taken {
            used.reset();
            spares.push(used);
        }
        *self.spares.lock().unwrap_or_else(|p| p.into_inner()) = spares;
        Delta { endpoints, completed_total, cancelled_total, raw: raw.0, raw_dropped: raw.1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome<'static> {
        Outcome { status: Some(200), error: None, latency_us: 10, service_us: 5, lag_us: 1 }
    }

    #[test]
    fn deltas_and_acks_move_together() {
        let r = Recorder::new(10, Vec::new());
        r.record("GET", "/a?x=1", &ok(), None);
        r.record("GET", "/a?x=2", &ok(), Some(RawTimes { due_unix_us: 5, sent_unix_us: 7 }));
        let d = r.take();
        assert_eq!(d.completed_total, 2);
        assert_eq!(d.raw.len(), 1, "a row only where raw times were given");
        assert_eq!((d.raw[0].endpoint.as_str(), d.raw[0].status, d.raw[0].sent_unix_us), ("GET /a", 200, 7));
        assert_eq!(d.endpoints.len(), 1);
        assert_eq!(d.endpoints[0].endpoint, "GET /a");
        assert_eq!(d.endpoints[0].ok, 2);
        r.cancel(3);
        let d = r.take();
        assert_eq!((d.completed_total, d.cancelled_total, d.endpoints.len()), (5, 3, 0));
    }

    #[test]
    fn rules_group_paths_and_a_method_in_the_name_filters() {
        let rules = vec![
            Rule::new("^/users/[0-9]+$", "GET /users/{id}").expect("rule"),
            Rule::new("^/items/[^/]+$", "/items/{sku}").expect("rule"),
        ];
        let r = Recorder::new(10, rules);
        for (m, p) in [
            ("GET", "/users/1"),
            ("GET", "/users/22?x"),
            ("POST", "/users/3"),
            ("GET", "/items/a"),
            ("PUT", "/items/b"),
        ] {
            r.record(m, p, &ok(), None);
        }
        let d = r.take();
        let names: Vec<(&str, u64)> = d.endpoints.iter().map(|e| (e.endpoint.as_str(), e.ok)).collect();
        assert_eq!(
            names,
            vec![
                ("GET /users/{id}", 2),
                ("POST /users/3", 1),
                ("GET /items/{sku}", 1),
                ("PUT /items/{sku}", 1)
            ]
        );
    }

    #[test]
    fn endpoints_past_the_cap_count_as_other() {
        let r = Recorder::new(2, Vec::new());
        for p in ["/a", "/b", "/c", "/d", "/a", "/c?q"] {
            r.record("GET", p, &ok(), None);
        }
        let d = r.take();
        let names: Vec<(&str, u64)> = d.endpoints.iter().map(|e| (e.endpoint.as_str(), e.ok)).collect();
        assert_eq!(names, vec![("GET /a", 2), ("GET /b", 1), ("other", 3)]);
    }
}
