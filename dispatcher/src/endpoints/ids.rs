//! Ids in paths: `/api/users/4711` and `/api/users/4712` are one endpoint,
//! `GET /api/users/{id}`. A real recording has thousands of such paths. Without this, each
//! would be an endpoint of its own until `[stats] max_endpoints`, and the rest "other".
//!
//! A segment is an id when it has one of the shapes of [`IdKind`] (all on by default,
//! `[stats] templates` picks them) or matches one of `[stats] id_patterns`. The shapes are
//! chosen so that words are never ids: a number, a UUID, hex with digits and letters mixed,
//! or a long base64-like run with digits and letters mixed. `v2`, `orders`, `2fa`,
//! `deadbeef` and `order-summary-2024` stay as they are.

use regex::bytes::RegexSet;

use crate::config::{IdKind, Problem, StatsConfig, not_a_regex};

/// What an id segment reads as in an endpoint's name.
pub const PLACEHOLDER: &str = "{id}";

/// The id shapes of a job.
#[derive(Debug)]
pub struct IdShapes {
    number: bool,
    uuid: bool,
    hex: bool,
    base64: bool,
    extra: Option<RegexSet>,
}

impl IdShapes {
    /// The shapes `[stats]` asks for; `None` when it asks for none. A pattern that does not
    /// compile is a problem in `found` (which refuses the job).
    pub fn new(cfg: &StatsConfig, found: &mut Vec<Problem>) -> Option<IdShapes> {
        let t = &cfg.templates;
        let patterns: Vec<String> = cfg
            .id_patterns
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                regex::Regex::new(p)
                    .map_err(|e| found.push(not_a_regex(&format!("stats.id_patterns[{i}]"), p, &e)))
                    .is_ok()
            })
            .map(|(_, p)| format!("^(?:{p})$"))
            .collect();
        let shapes = IdShapes {
            number: t.has(IdKind::Number),
            uuid: t.has(IdKind::Uuid),
            hex: t.has(IdKind::Hex),
            base64: t.has(IdKind::Base64),
            extra: RegexSet::new(&patterns).ok().filter(|s| !s.is_empty()),
        };
        (shapes.number || shapes.uuid || shapes.hex || shapes.base64 || shapes.extra.is_some())
            .then_some(shapes)
    }

    /// Whether one path segment is an id. Segments are read as bytes: the shapes are ASCII,
    /// and a record's path is UTF-8 already (checking it again per record cost more than
    /// the shapes).
    pub fn is_id(&self, seg: &[u8]) -> bool {
        !seg.is_empty()
            && ((self.number && is_number(seg))
                || (self.uuid && is_uuid(seg))
                || (self.hex && is_hex(seg))
                || (self.base64 && is_base64_id(seg))
                || self.extra.as_ref().is_some_and(|x| x.is_match(seg)))
    }

    /// Appends `path` (without its query) to `out` with each id segment replaced by
    /// [`PLACEHOLDER`]; whether it had an id. One pass, no allocation of its own: the
    /// dispatch loop names every record's endpoint, and on a recording whose paths are all
    /// distinct no memo of earlier paths ever hits.
    pub fn template_into(&self, path: &[u8], out: &mut Vec<u8>) -> bool {
        let mut any = false;
        for (i, seg) in path.split(|&b| b == b'/').enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            if self.is_id(seg) {
                out.extend_from_slice(PLACEHOLDER.as_bytes());
                any = true;
            } else {
                out.extend_from_slice(seg);
            }
        }
        any
    }

    /// `path` with its ids as [`PLACEHOLDER`], or `None` when it has no id.
    #[cfg(test)]
    fn template(&self, path: &str) -> Option<String> {
        let mut out = Vec::new();
        self.template_into(path.as_bytes(), &mut out)
            .then(|| String::from_utf8(out).expect("UTF-8 in, UTF-8 out"))
    }
}

fn is_number(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_digit)
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_hex(s: &[u8]) -> bool {
    s.len() >= 8
        && s.iter().all(u8::is_ascii_hexdigit)
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
}

fn is_base64_id(s: &[u8]) -> bool {
    let body = &s[..s.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1)];
    if body.len() < 16 || !body.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return false;
    }
    let has = |f: fn(&u8) -> bool| body.iter().any(f);
    let mixed_case = has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase);
    let separated = has(|b| *b == b'-' || *b == b'_');
    has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic) && (!separated || mixed_case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Templates;

    fn shapes(templates: Templates, extra: &[&str]) -> Option<IdShapes> {
        let mut found = Vec::new();
        let cfg = StatsConfig {
            templates,
            id_patterns: extra.iter().map(|p| (*p).to_owned()).collect(),
            ..StatsConfig::default()
        };
        let shapes = IdShapes::new(&cfg, &mut found);
        assert!(found.is_empty(), "{found:?}");
        shapes
    }

    #[test]
    fn ids_of_every_kind_become_placeholders_and_words_stay() {
        let s = shapes(Templates::All(true), &[]).expect("on by default");
        for (path, want) in [
            ("/api/users/4711", "/api/users/{id}"),
            ("/users/4711/orders/9", "/users/{id}/orders/{id}"),
            ("/o/0b1e9c2a-5f4d-4e7b-9A31-2c8d6f0e4b17", "/o/{id}"),
            ("/blob/5f1d7c2e9a", "/blob/{id}"),
            ("/commit/3f2a9c1d4e5b6a7c8d9e0f1a2b3c4d5e6f7a8b9c", "/commit/{id}"),
            ("/s/aGVsbG8gd29ybGQ9PQ2x", "/s/{id}"),
            ("/t/dGhpcy1pcy1hLXRva2Vu_3Q==", "/t/{id}"),
        ] {
            assert_eq!(s.template(path).as_deref(), Some(want), "{path}");
        }
        for path in [
            "/",
            "/api/v2/orders",
            "/2fa/setup",
            "/deadbeef",
            "/reports/order-summary-2024-final",
            "/static/app.3f2a9c1d.js",
            "/users/me",
            "/a//b",
        ] {
            assert_eq!(s.template(path), None, "{path}");
        }
    }

    #[test]
    fn kinds_can_be_chosen_and_patterns_added() {
        let numbers = shapes(Templates::Kinds(vec![IdKind::Number]), &[]).expect("numbers");
        assert_eq!(
            numbers.template("/u/12/o/0b1e9c2a-5f4d-4e7b-9a31-2c8d6f0e4b17").as_deref(),
            Some("/u/{id}/o/0b1e9c2a-5f4d-4e7b-9a31-2c8d6f0e4b17")
        );
        let own = shapes(Templates::All(false), &["usr_[a-z0-9]+", "me"]).expect("patterns only");
        assert_eq!(own.template("/users/usr_9x2k/me/12").as_deref(), Some("/users/{id}/{id}/12"));
        assert_eq!(own.template("/users/xusr_9x2k"), None, "a pattern matches a whole segment");
        assert!(shapes(Templates::All(false), &[]).is_none(), "off");
        assert!(shapes(Templates::Kinds(vec![]), &[]).is_none(), "no kinds is off");
    }
}
