//! The json format: one object per line, e.g.
//! `{"ts":"2024-05-01T12:00:00.250Z","method":"POST","url":"/users?x=1",
//!   "headers":{"Accept":"*/*","Cookie":["a=1","b=2"]},"body":"{\"name\":\"x\"}"}`.
//! `ts` is an RFC 3339 string or a number in `[analyzer] timestamp_unit`; `url` is a path
//! with query or an absolute URL; `body` is UTF-8 text, `body_base64` any bytes.

mod values;

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{KeySource, Parsed, is_method, with_key};
use crate::config::values::parse_rfc3339_ns;
use crate::config::{JsonFields, TimeUnit};
use crate::record::{Record, Text, split_url};
use values::{Headers, Str, Val};

/// The json analyzer. One pass over the line reads the configured fields (strings borrowed
/// from the line where they hold no escapes) and skips the rest; headers and the hash key
/// are kept as raw JSON and parsed after it. No tree of the whole object is built: this is
/// the dispatcher's hottest loop. (Keeping every field raw and parsing it afterwards read
/// each string twice: 800–900 ns per line of bench (a)'s recording against 540–560.)
#[derive(Clone, Debug)]
pub struct Json {
    fields: JsonFields,
    unit: TimeUnit,
    key: Option<KeySource>,
}

/// The configured fields of one line.
#[derive(Default)]
struct Raw<'a> {
    ts: Option<Val<'a>>,
    method: Option<Val<'a>>,
    url: Option<Val<'a>>,
    headers: Option<&'a RawValue>,
    body: Option<Val<'a>>,
    body_base64: Option<Val<'a>>,
    key: Option<&'a RawValue>,
}

/// Why a line is malformed (kept small: the Ok side is a whole record).
struct Bad {
    reason: &'static str,
    detail: String,
}

impl Bad {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl Json {
    pub fn new(fields: JsonFields, unit: TimeUnit, key: Option<KeySource>) -> Self {
        Self { fields, unit, key }
    }

    /// Parses one line; the record's fields are slices of `line` where they hold no escapes.
    pub fn parse(&self, line: &Bytes) -> Parsed {
        let json_key = match &self.key {
            Some(KeySource::Json(name)) => Some(name.as_str()),
            _ => None,
        };
        let seed = Pick { names: &self.fields, key: json_key };
        let mut de = serde_json::Deserializer::from_slice(line);
        let raw = match seed.deserialize(&mut de).and_then(|raw| de.end().map(|()| raw)) {
            Ok(raw) => raw,
            Err(e) => return Parsed::malformed("json_syntax", e.to_string()),
        };
        match self.record(line, raw) {
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err(bad) => Parsed::malformed(bad.reason, bad.detail),
        }
    }

    fn record(&self, unit: &Bytes, raw: Raw<'_>) -> Result<Record, Bad> {
        let f = &self.fields;
        let ts = match raw.ts {
            None => return Err(Bad::new("missing_ts", format!("no field `{}`", f.ts))),
            Some(v) => self.timestamp(&v).ok_or_else(|| Bad::new("bad_ts", v.describe()))?,
        };
        let method = match raw.method {
            Some(Val::Str(m)) if is_method(&m) => Text::within_cow(unit, m),
            Some(v) => return Err(Bad::new("bad_method", v.describe())),
            None => return Err(Bad::new("missing_method", format!("no field `{}`", f.method))),
        };
        let (host, path) = match raw.url {
            Some(Val::Str(u)) => match split_url(&u) {
                Some((host, path)) => (host.map(|h| Text::within(unit, h)), Text::within_cow(unit, path)),
                None => return Err(Bad::new("bad_url", u.into_owned())),
            },
            Some(v) => return Err(Bad::new("bad_url", v.describe())),
            None => return Err(Bad::new("missing_url", format!("no field `{}`", f.url))),
        };
        let headers = match raw.headers.filter(|v| !is_null(v)) {
            None => Vec::new(),
            Some(h) => {
                let Headers(pairs) = serde_json::from_str::<Headers<'_>>(h.get())
                    .map_err(|e| Bad::new("bad_headers", e.to_string()))?;
                pairs
                    .into_iter()
                    .map(|(n, v)| (Text::within_cow(unit, n), Text::within_cow(unit, v).into_bytes()))
                    .collect::<Vec<_>>()
            }
        };
        let body = body(unit, raw.body, raw.body_base64)?;
        let host = host.or_else(|| host_header(&headers));
        let key = raw.key.and_then(|v| text(v).map(Cow::into_owned).or_else(|| scalar(v)));
        Ok(Record { ts, method, path, host, headers, body, key })
    }

    fn timestamp(&self, v: &Val<'_>) -> Option<i64> {
        let scale = match self.unit {
            TimeUnit::S => 1e9,
            TimeUnit::Ms => 1e6,
            TimeUnit::Us => 1e3,
            TimeUnit::Ns => 1.0,
        };
        let float = |f: f64| {
            let ns = f * scale;
            (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
        };
        match *v {
            Val::Str(ref s) => parse_rfc3339_ns(s),
            Val::Int(i) => i.checked_mul(scale as i64),
            Val::Uint(u) => match i64::try_from(u) {
                Ok(i) => i.checked_mul(scale as i64),
                Err(_) => float(u as f64),
            },
            Val::Float(f) => float(f),
            _ => None,
        }
    }
}

fn body(unit: &Bytes, text: Option<Val<'_>>, base64: Option<Val<'_>>) -> Result<Bytes, Bad> {
    if let Some(v) = base64.filter(|v| !v.is_null()) {
        let s = v.into_str().ok_or_else(|| Bad::new("bad_body", "body_base64 is not a string"))?;
        return base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(|e| Bad::new("bad_body", format!("body_base64: {e}")));
    }
    match text.filter(|v| !v.is_null()) {
        None => Ok(Bytes::new()),
        Some(Val::Str(s)) => Ok(Text::within_cow(unit, s).into_bytes()),
        Some(v) => Err(Bad::new("bad_body", format!("body is not a string: {}", v.describe()))),
    }
}

fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

/// The text of a JSON string (borrowed when it has no escapes); `None` for other values.
fn text(v: &RawValue) -> Option<Cow<'_, str>> {
    if !v.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Str<'_>>(v.get()).ok().map(|t| t.0)
}

/// A number or boolean as its JSON text.
fn scalar(v: &RawValue) -> Option<String> {
    let t = v.get();
    (t == "true" || t == "false" || t.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
        .then(|| t.to_owned())
}

/// Picks the configured fields out of a JSON object in one pass.
struct Pick<'s> {
    names: &'s JsonFields,
    key: Option<&'s str>,
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Raw<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let n = self.names;
        let mut raw = Raw::default();
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            let k = k.as_ref();
            let slot = if k == n.ts {
                &mut raw.ts
            } else if k == n.method {
                &mut raw.method
            } else if k == n.url {
                &mut raw.url
            } else if k == n.body {
                &mut raw.body
            } else if k == n.body_base64 {
                &mut raw.body_base64
            } else {
                let raw_slot = if k == n.headers {
                    &mut raw.headers
                } else if Some(k) == self.key {
                    &mut raw.key
                } else {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                };
                *raw_slot = Some(map.next_value::<&'de RawValue>()?);
                continue;
            };
            *slot = Some(map.next_value::<Val<'de>>()?);
        }
        Ok(raw)
    }
}

fn host_header(headers: &[(Text, Bytes)]) -> Option<Text> {
    // invariant: values were parsed from JSON strings, so UTF-8.
    let (_, v) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host"))?;
    std::str::from_utf8(v).ok().map(|h| Text::within(v, h))
}

pub(super) fn is_header_name(n: &str) -> bool {
    is_method(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(key: Option<KeySource>) -> Json {
        Json::new(JsonFields::default(), TimeUnit::Ms, key)
    }

    fn record(line: &str) -> Record {
        match json(None).parse(&Bytes::copy_from_slice(line.as_bytes())) {
            Parsed::Record(r) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    fn reason(line: &str) -> &'static str {
        match json(None).parse(&Bytes::copy_from_slice(line.as_bytes())) {
            Parsed::Malformed { reason, .. } => reason,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn a_full_line_becomes_a_record() {
        let r = record(
            r#"{"ts":"2024-05-01T12:00:00.250Z","method":"POST","url":"http://prod:80/u?x=1","headers":{"A":"1","Cookie":["a","b"]},"body":"hi"}"#,
        );
        assert_eq!(r.ts, 1_714_564_800_250_000_000);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/u?x=1"));
        assert_eq!(r.host.as_deref(), Some("prod:80"));
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.headers[2], (Text::from("Cookie"), Bytes::from("b")));
        assert_eq!(r.body, Bytes::from("hi"));
    }

    /// Fields without escapes are slices of the line, not copies; an escaped one is its own.
    #[test]
    fn fields_share_the_line_unless_unescaped() {
        let line = Bytes::from_static(
            br#"{"ts":1,"method":"GET","url":"http://h/p\u0020q","headers":{"A":["x","y"],"Host":"z"},"body":"b"}"#,
        );
        let Parsed::Record(r) = json(None).parse(&line) else { panic!("a record") };
        let inside = |b: &[u8]| line.as_ptr_range().contains(&b.as_ptr());
        assert!(inside(r.method.as_bytes()) && inside(&r.body) && inside(r.headers[1].0.as_bytes()));
        assert!(inside(&r.headers[0].1) && inside(&r.headers[1].1));
        assert_eq!((r.path.as_str(), r.host.as_deref()), ("/p q", Some("h")));
        assert!(!inside(r.path.as_bytes()), "unescaped, so copied");
    }

    #[test]
    fn numeric_timestamps_follow_the_unit() {
        assert_eq!(record(r#"{"ts":1500,"method":"GET","url":"/"}"#).ts, 1_500_000_000);
        let s = Json::new(JsonFields::default(), TimeUnit::S, None);
        let line = Bytes::from_static(br#"{"ts":1.5,"method":"GET","url":"/"}"#);
        let Parsed::Record(r) = s.parse(&line) else { panic!() };
        assert_eq!(r.ts, 1_500_000_000);
    }

    #[test]
    fn escaped_strings_and_unknown_fields_are_handled() {
        let r = record(
            r#"{"x":{"deep":[1,{"a":null}]},"ts":1,"method":"GET","url":"/a\u0020b","body":"q\"x","headers":null}"#,
        );
        assert_eq!(r.path, "/a b");
        assert_eq!(r.body, Bytes::from("q\"x"));
        assert!(r.headers.is_empty());
    }

    #[test]
    fn base64_bodies_carry_any_bytes() {
        let r = record(r#"{"ts":1,"method":"PUT","url":"/b","body_base64":"AP8Q"}"#);
        assert_eq!(r.body.as_ref(), &[0u8, 255, 16]);
    }

    #[test]
    fn keys_come_from_json_headers_or_query() {
        let line = Bytes::from_static(
            br#"{"ts":1,"method":"GET","url":"/x?u=7","headers":{"X-User":"ann"},"user":42}"#,
        );
        let key = |k| match json(Some(k)).parse(&line) {
            Parsed::Record(r) => r.key,
            _ => None,
        };
        assert_eq!(key(KeySource::Json("user".into())), Some("42".into()));
        assert_eq!(key(KeySource::Header("x-user".into())), Some("ann".into()));
        assert_eq!(key(KeySource::Query("u".into())), Some("7".into()));
    }

    #[test]
    fn malformed_lines_are_named_by_reason() {
        assert_eq!(reason("{not json"), "json_syntax");
        assert_eq!(reason(r#"{"method":"GET","url":"/"}"#), "missing_ts");
        assert_eq!(reason(r#"{"ts":"noon","method":"GET","url":"/"}"#), "bad_ts");
        assert_eq!(reason(r#"{"ts":1,"method":"G ET","url":"/"}"#), "bad_method");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"x"}"#), "bad_url");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","headers":{"A":1}}"#), "bad_headers");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","headers":{"A B":"1"}}"#), "bad_headers");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","body_base64":"%%"}"#), "bad_body");
        assert_eq!(reason(r#"[1,2]"#), "json_syntax");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/"} trailing"#), "json_syntax");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","body":5}"#), "bad_body");
        assert_eq!(reason(r#"{"ts":1,"method":7,"url":"/"}"#), "bad_method");
        assert_eq!(reason(r#"{"ts":1e300,"method":"GET","url":"/"}"#), "bad_ts");
        // Values of the wrong kind, even nested ones, are that field's fault, not the line's.
        assert_eq!(reason(r#"{"ts":true,"method":"GET","url":"/"}"#), "bad_ts");
        assert_eq!(reason(r#"{"ts":1,"method":{"a":[1,{}]},"url":"/"}"#), "bad_method");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":[["/"]]}"#), "bad_url");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":null}"#), "bad_url");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","body":{"x":"y"}}"#), "bad_body");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","body":"x","z":[}"#), "json_syntax");
    }

    #[test]
    fn samples_show_what_was_wrong() {
        let detail = |line: &str| match json(None).parse(&Bytes::copy_from_slice(line.as_bytes())) {
            Parsed::Malformed { detail, .. } => detail,
            other => panic!("not malformed: {other:?}"),
        };
        assert_eq!(detail(r#"{"ts":"noon","method":"GET","url":"/"}"#), r#""noon""#);
        assert_eq!(detail(r#"{"ts":1,"method":[1],"url":"/"}"#), "an array");
        assert_eq!(
            detail(r#"{"ts":1,"method":"GET","url":"/","body":false}"#),
            "body is not a string: false"
        );
    }

    /// Every number form a timestamp may take: integers (also past i64), fractions, exponents.
    #[test]
    fn timestamps_of_every_number_form() {
        let ts = |v: &str| record(&format!(r#"{{"ts":{v},"method":"GET","url":"/"}}"#)).ts;
        assert_eq!(ts("-5"), -5_000_000);
        assert_eq!(ts("2.5e3"), 2_500_000_000);
        assert_eq!(ts("0.0015"), 1_500);
        assert_eq!(ts("9000000000000"), 9_000_000_000_000_000_000);
        assert_eq!(reason(r#"{"ts":18446744073709551615,"method":"GET","url":"/"}"#), "bad_ts");
        assert_eq!(reason(r#"{"ts":9300000000000,"method":"GET","url":"/"}"#), "bad_ts");
    }
}
