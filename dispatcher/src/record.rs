//! The record: one recorded HTTP request, as analyzers produce it and the wheel schedules it.
//!
//! A record's text and bytes are slices of the unit it was parsed from ([`Text`], `Bytes`):
//! parsing allocates once per unit (the unit itself), not once per field, and the dispatch
//! loop writes the fields straight into a replayer's batch
//! ([`reprise_proto::batch::RecordRef`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// UTF-8 text in shared bytes: a slice of the unit it was parsed from, or text of its own
/// (when it had to be unescaped). Reads as a `&str`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// `part` as a slice of `unit` when it lies inside it (no copy), else as a copy.
    pub fn within(unit: &Bytes, part: &str) -> Text {
        let start = (part.as_ptr() as usize).wrapping_sub(unit.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= unit.len() => Text(unit.slice(start..end)),
            _ => Text::from(part),
        }
    }

    /// Text a job file sets on records (a header a rule sets, its value, a Host), shared by
    /// every record it goes into without a reference count: see [`interned`].
    pub fn interned(text: &str) -> Text {
        Text(interned(text.as_bytes()))
    }

    /// The same text, owned by `unit` where it lies inside it: see [`Text::within`].
    pub fn within_cow(unit: &Bytes, part: Cow<'_, str>) -> Text {
        match part {
            Cow::Borrowed(p) => Text::within(unit, p),
            Cow::Owned(p) => Text::from(p),
        }
    }

    pub fn as_str(&self) -> &str {
        // invariant: built only from `str`s (`within`, `From`), so always UTF-8. The check
        // (`unsafe` is forbidden here) is simdutf8's: read on every use of a path or
        // header name, it was the std check's 2 % of a reader thread with rewrites.
        simdutf8::basic::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Equal to `other` but for ASCII case (header names, methods), compared as bytes: no
    /// UTF-8 check, as a `&str` of the text would make.
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.as_bytes())
    }
}

/// Values job files set, each kept once for the process's life.
static INTERNED: Mutex<BTreeSet<&'static [u8]>> = Mutex::new(BTreeSet::new());

/// `bytes` as static bytes, kept once per distinct value for the process's life (a
/// dispatcher serving job after job keeps each value its rules set once, not once per job).
/// A counted `Bytes` cloned into every record cost an atomic increment in the reader thread
/// and a decrement where the record is dropped: 5 % of a reader thread's time with a header
/// set on every record (bench (r)); a static one costs neither.
pub fn interned(bytes: &[u8]) -> Bytes {
    let mut set = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let kept = match set.get(bytes) {
        Some(kept) => *kept,
        None => {
            let kept: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
            set.insert(kept);
            kept
        }
    };
    Bytes::from_static(kept)
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(s: Cow<'_, str>) -> Self {
        match s {
            Cow::Borrowed(s) => Text::from(s),
            Cow::Owned(s) => Text::from(s),
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Recorded instant, Unix nanoseconds.
    pub ts: i64,
    pub method: Text,
    /// Origin form: path and query, e.g. "/users/1?x=2". Always starts with '/'.
    pub path: Text,
    /// Recorded host (from an absolute URL or the Host header), for `preserve_host`.
    pub host: Option<Text>,
    /// Headers in recorded order; a repeated header appears once per value.
    pub headers: Vec<(Text, Bytes)>,
    pub body: Bytes,
    /// Hash key choosing the replayer (see `[analyzer] hash_field`); `None` = round-robin.
    pub key: Option<String>,
    /// The answer the recording holds for this request, encoded as the wire's
    /// `pb::Expected` once it is parsed ([`reprise_proto::expected`]), when the job compares
    /// against recorded answers (`[compare] baseline = "recorded"`). Boxed: a record without
    /// one (every other job's) grows by a pointer, not by a `Bytes`.
    pub expected: Option<Box<Bytes>>,
}

impl Record {
    /// First value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n.is(name)).map(|(_, v)| v)
    }

    /// First value of a query parameter (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(&self.path, name)
    }

    /// A gRPC call: a POST whose `content-type` is `application/grpc` or a subtype of it.
    pub fn is_grpc(&self) -> bool {
        self.method.as_bytes() == b"POST"
            && self.header("content-type").is_some_and(|v| reprise_proto::token::is_grpc_content_type(v))
    }
}

/// First value of the query parameter `name` of an origin-form target (not percent-decoded).
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    query_value(&target[memchr::memchr(b'?', target.as_bytes())? + 1..], name)
}

/// First value of the parameter `name` in `query` (the part after the `?`).
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    pairs(query).find_map(|pair| match pair.as_bytes().get(name.len()) {
        _ if !pair.as_bytes().starts_with(name.as_bytes()) => None,
        None => Some(""),
        Some(b'=') => Some(&pair[name.len() + 1..]),
        Some(_) => None,
    })
}

/// The `&`-separated pairs of `query`, empty ones included. Split on bytes with memchr (a
/// filter on a parameter asks this of every record; `str::split` costs several times more).
pub fn pairs(query: &str) -> Pairs<'_> {
    Pairs { rest: Some(query) }
}

/// See [`pairs`].
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr::memchr(b'&', rest.as_bytes()) {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => self.rest.take(),
        }
    }
}

/// The name of a `name=value` pair (all of it without `=`).
pub fn pair_name(pair: &str) -> &str {
    memchr::memchr(b'=', pair.as_bytes()).map_or(pair, |i| &pair[..i])
}

/// Splits an absolute URL into (host, origin-form path), borrowed from `url` (the path is
/// owned only when a '/' had to be put before a bare query); a path stays as it is.
pub fn split_url(url: &str) -> Option<(Option<&str>, Cow<'_, str>)> {
    if url.starts_with('/') {
        return Some((None, Cow::Borrowed(url)));
    }
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let path = if path.starts_with('?') { Cow::Owned(format!("/{path}")) } else { Cow::Borrowed(path) };
    Some((Some(authority), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_split_into_host_and_path() {
        assert_eq!(split_url("/a?b=1"), Some((None, "/a?b=1".into())));
        assert_eq!(split_url("http://h:8/x/y?z"), Some((Some("h:8"), "/x/y?z".into())));
        assert_eq!(split_url("https://h"), Some((Some("h"), "/".into())));
        assert_eq!(split_url("https://h?q=1"), Some((Some("h"), "/?q=1".into())));
        assert_eq!(split_url("ftp://h/x"), None);
        assert_eq!(split_url("relative"), None);
    }

    #[test]
    fn text_within_a_unit_shares_its_bytes_and_text_outside_is_copied() {
        let unit = Bytes::from_static(b"GET /users/1 x");
        let line = std::str::from_utf8(&unit).expect("utf-8");
        let path = Text::within(&unit, &line[4..12]);
        assert_eq!(path, "/users/1");
        assert_eq!(path.as_bytes().as_ptr(), unit[4..].as_ptr(), "a slice, not a copy");
        let elsewhere = String::from("/other");
        let copied = Text::within(&unit, &elsewhere);
        assert_eq!(copied, "/other");
        assert_ne!(copied.as_bytes().as_ptr(), elsewhere.as_ptr());
        assert_eq!(Text::within(&unit, "/"), "/");
        assert_eq!(Text::within_cow(&unit, Cow::Owned("/é".into())).as_str(), "/é");
    }

    #[test]
    fn query_params_are_found_by_name() {
        let r = Record {
            ts: 0,
            method: "GET".into(),
            path: "/p?a=1&user=42&flag".into(),
            host: None,
            headers: vec![],
            body: Bytes::new(),
            key: None,
            expected: None,
        };
        assert_eq!(r.query_param("user"), Some("42"));
        assert_eq!(r.query_param("flag"), Some(""));
        assert_eq!(r.query_param("missing"), None);
        // A name that starts another is not it; the first of a repeated name wins.
        assert_eq!(query_value("username=x&user=y&user=z", "user"), Some("y"));
        assert_eq!(query_value("user", "use"), None);
        assert_eq!(query_value("a=1&&=e", ""), Some(""));
        assert_eq!(query_value("a=1&=e", ""), Some("e"));
        assert_eq!(query_value("", "a"), None);
        assert_eq!(query_value("a=x=y&é=1", "a"), Some("x=y"));
        assert_eq!(query_value("a=x=y&é=1", "é"), Some("1"));
        assert_eq!(query_param("/p", "a"), None);
        assert_eq!(pairs("a=1&&b").collect::<Vec<_>>(), ["a=1", "", "b"]);
        assert_eq!(pairs("").collect::<Vec<_>>(), [""]);
        assert_eq!(pairs("a&").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(pair_name("a=1=2"), "a");
        assert_eq!(pair_name("flag"), "flag");
    }
}
