//! A `[[rewrite]]` rule's `path`: `from` matched against a record's path (without its
//! query), `to` written with `from`'s groups.
//!
//! `from` of the form `^LITERAL(.*)$` (or `^LITERAL(.*)`), the usual change of a path
//! prefix, is matched without the regex engine: the path starts with the literal, and
//! group 1 is the rest up to a newline, which `.` does not match (with `$`, a newline
//! there is no match): the regex's answer exactly. Bench (r) timed a regex with captures at ~400 ns a record on its
//! recording's paths; the prefix compare is a few.

use regex::{CaptureLocations, Regex};

#[derive(Debug)]
pub struct PathRule {
    re: Regex,
    /// `from`'s literal when it is `^LITERAL(.*)$` (true: anchored at the end) or
    /// `^LITERAL(.*)` (false).
    prefix: Option<(Box<str>, bool)>,
    to: Vec<Part>,
}

impl PathRule {
    pub fn new(from: &str, to: &str) -> Result<PathRule, PathError> {
        let re = Regex::new(from).map_err(PathError::From)?;
        let to = template(&re, to).map_err(PathError::To)?;
        Ok(PathRule { prefix: literal_prefix(from), re, to })
    }

    /// Capture slots for [`PathRule::write`], kept per rule and thread by the caller (the
    /// regex crate would allocate them per record).
    pub fn capture_locations(&self) -> CaptureLocations {
        self.re.capture_locations()
    }

    /// Writes `path` with `from`'s match replaced by `to` into `out`; false (nothing
    /// written) when `from` does not match.
    pub fn write(&self, path: &str, slots: &mut CaptureLocations, out: &mut String) -> bool {
        if let Some((lit, ended)) = &self.prefix {
            let Some(rest) = path.strip_prefix(&**lit) else { return false };
            // `.` stops at a newline: `$` then fails, and without it the match ends there.
            let end = match memchr::memchr(b'\n', rest.as_bytes()) {
                Some(_) if *ended => return false,
                Some(nl) => lit.len() + nl,
                None => path.len(),
            };
            let groups = [(0, end), (lit.len(), end)];
            self.expand(path, |i| groups.get(i).copied(), out);
            return true;
        }
        if self.re.captures_read(slots, path).is_none() {
            return false;
        }
        self.expand(path, |i| slots.get(i), out);
        true
    }

    /// `path` with group 0 replaced by `to`, its groups read through `group`.
    fn expand(&self, path: &str, group: impl Fn(usize) -> Option<(usize, usize)>, out: &mut String) {
        let (start, end) = group(0).unwrap_or((0, 0));
        out.push_str(&path[..start]);
        for part in &self.to {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Group(i) => {
                    if let Some((a, b)) = group(*i) {
                        out.push_str(&path[a..b]);
                    }
                }
            }
        }
        out.push_str(&path[end..]);
    }
}

/// The literal of `^LITERAL(.*)$` or `^LITERAL(.*)`, when it has no metacharacter, and
/// whether `$` ends it.
fn literal_prefix(from: &str) -> Option<(Box<str>, bool)> {
    let rest = from.strip_prefix('^')?;
    let (lit, ended) = match rest.strip_suffix("(.*)$") {
        Some(lit) => (lit, true),
        None => (rest.strip_suffix("(.*)")?, false),
    };
    (regex::escape(lit) == lit).then(|| (lit.into(), ended))
}

/// A piece of `path.to`: text, or a capture group by index.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(usize),
}

/// Why a path rule cannot be used: the side of it at fault.
#[derive(Debug)]
pub enum PathError {
    /// `from` is not a regex.
    From(regex::Error),
    /// `to` names a group `from` lacks, or has a `$` that names none.
    To(String),
}

/// `to` as pieces, group names resolved against `re` (`$1`, `${1}`, `$name`, `${name}`;
/// `$$` is a dollar). Every group it names must exist in `re`: the regex crate reads `$1a`
/// as a group named `1a` and inserts nothing for a group that does not exist, so a typo
/// would silently cut the path; here it refuses the rule.
fn template(re: &Regex, to: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = to;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = if let Some(r) = rest.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or("has a `${` without its `}`")?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            return Err(
                "has a `$` that names no group: write $1 or ${name} for a group, $$ for a dollar".into()
            );
        }
        let index = name.parse::<usize>().ok().or_else(|| re.capture_names().position(|n| n == Some(name)));
        let Some(i) = index.filter(|&i| i < re.captures_len()) else {
            return Err(format!(
                "names group `{name}`, which path.from does not have (it has {} numbered); write ${{1}}x when a \
                 letter or digit follows the group, $$ for a dollar",
                re.captures_len() - 1
            ));
        };
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Group(i));
        rest = after;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix rule rewrites what its regex would, and only that: paths with and without
    /// the prefix, a newline after it, an empty rest, and rules of other forms.
    #[test]
    fn a_prefix_rule_writes_what_its_regex_would() {
        let paths = [
            "/users/7/orders/x",
            "/users/",
            "/users",
            "/usersx/1",
            "/v1/users/1",
            "/users/a\nb",
            "/users/caf\u{e9}",
        ];
        // (from, to, whether it is matched as a prefix)
        let rules = [
            ("^/users/(.*)$", "/api/v2/users/$1", true),
            ("^/users/(.*)", "/u/${1}!", true),
            ("^/users(.*)$", "$0|$1", true),
            ("^/users/([0-9]+)/orders/(.*)$", "/v2/$2/$1", false),
            ("^/us.rs/(.*)$", "/dot/$1", false),
        ];
        for (from, to, prefix) in rules {
            let rule = PathRule::new(from, to).expect("compiles");
            assert_eq!(rule.prefix.is_some(), prefix, "{from}");
            let re = Regex::new(from).expect("regex");
            let mut slots = rule.capture_locations();
            for path in paths {
                let mut out = String::new();
                let wrote = rule.write(path, &mut slots, &mut out);
                let want = re.is_match(path).then(|| re.replace(path, to).into_owned());
                assert_eq!(wrote.then_some(out), want, "{from} on {path:?}");
            }
        }
    }

    #[test]
    fn a_template_reads_groups_by_number_and_name() {
        let re = Regex::new("^/v1/(?P<kind>\\w+)/(\\d+)(.*)$").expect("regex");
        let t = template(&re, "/v2/${kind}s/$2/$$x${3}y$$").expect("valid");
        assert_eq!(
            t,
            vec![
                Part::Text("/v2/".into()),
                Part::Group(1),
                Part::Text("s/".into()),
                Part::Group(2),
                Part::Text("/$x".into()),
                Part::Group(3),
                Part::Text("y$".into()),
            ]
        );
        assert_eq!(template(&re, "/plain"), Ok(vec![Part::Text("/plain".into())]));
        let refused = |to: &str| template(&re, to).expect_err(to);
        assert!(refused("/a/$9/b").contains("names group `9`"), "a group it lacks would insert nothing");
        assert!(refused("/a/$1a").contains("names group `1a`"));
        assert!(refused("/a/${kind").contains("without its `}`"));
        assert!(refused("/a/$-").contains("names no group"));
    }
}
