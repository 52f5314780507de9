//! The json format: one object per line, e.g.
//! `{"ts":"2024-05-01T12:00:00.250Z","method":"POST","url":"/users?x=1",
//!   "headers":{"Accept":"*/*","Cookie":["a=1","b=2"]},"body":"{\"name\":\"x\"}"}`.
//! `ts` is an RFC 3339 string or a number in `[analyzer] timestamp_unit`; `url` is a path
//! with query or an absolute URL; `body` is UTF-8 text, `body_base64` any bytes.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::{KeySource, Parsed, is_method, with_key};
use crate::config::values::parse_rfc3339_ns;
use crate::config::{JsonFields, TimeUnit};
use crate::record::{Record, split_url};

#[derive(Clone, Debug)]
pub struct Json {
    fields: JsonFields,
    unit: TimeUnit,
    key: Option<KeySource>,
}

impl Json {
    pub fn new(fields: JsonFields, unit: TimeUnit, key: Option<KeySource>) -> Self {
        Self { fields, unit, key }
    }

    pub fn parse(&self, line: &[u8]) -> Parsed {
        let obj: Map<String, Value> = match serde_json::from_slice(line) {
            Ok(o) => o,
            Err(e) => return Parsed::malformed("json_syntax", e.to_string()),
        };
        match self.record(&obj) {
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err(bad) => Parsed::malformed(bad.reason, bad.detail),
        }
    }

    fn record(&self, obj: &Map<String, Value>) -> Result<Record, Bad> {
        let f = &self.fields;
        let ts = match obj.get(&f.ts) {
            None => {
                return Err(Bad::new("missing_ts", format!("no field `{}`", f.ts)));
            }
            Some(v) => self.timestamp(v).ok_or_else(|| Bad::new("bad_ts", v.to_string()))?,
        };
        let method = match obj.get(&f.method) {
            Some(Value::String(m)) if is_method(m) => m.clone(),
            Some(v) => return Err(Bad::new("bad_method", v.to_string())),
            None => {
                return Err(Bad::new("missing_method", format!("no field `{}`", f.method)));
            }
        };
        let (host, path) = match obj.get(&f.url) {
            Some(Value::String(u)) => split_url(u).ok_or_else(|| Bad::new("bad_url", u.clone()))?,
            Some(v) => return Err(Bad::new("bad_url", v.to_string())),
            None => {
                return Err(Bad::new("missing_url", format!("no field `{}`", f.url)));
            }
        };
        let headers = match obj.get(&f.headers) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(h)) => headers(h).map_err(|d| Bad::new("bad_headers", d))?,
            Some(v) => return Err(Bad::new("bad_headers", v.to_string())),
        };
        let body = self.body(obj)?;
        let host = host.or_else(|| host_header(&headers));
        let key = match &self.key {
            Some(KeySource::Json(name)) => obj.get(name).and_then(scalar_text),
            _ => None,
        };
        Ok(Record { ts, method, path, host, headers, body, key })
    }

    fn body(&self, obj: &Map<String, Value>) -> Result<Bytes, Bad> {
        if let Some(v) = obj.get(&self.fields.body_base64).filter(|v| !v.is_null()) {
            let Value::String(s) = v else {
                return Err(Bad::new("bad_body", "body_base64 is not a string"));
            };
            return base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Bytes::from)
                .map_err(|e| Bad::new("bad_body", format!("body_base64: {e}")));
        }
        match obj.get(&self.fields.body) {
            None | Some(Value::Null) => Ok(Bytes::new()),
            Some(Value::String(s)) => Ok(Bytes::from(s.clone())),
            Some(v) => Err(Bad::new("bad_body", format!("body is not a string: {v}"))),
        }
    }

    fn timestamp(&self, v: &Value) -> Option<i64> {
        match v {
            Value::String(s) => parse_rfc3339_ns(s),
            Value::Number(n) => {
                let scale = match self.unit {
                    TimeUnit::S => 1e9,
                    TimeUnit::Ms => 1e6,
                    TimeUnit::Us => 1e3,
                    TimeUnit::Ns => 1.0,
                };
                if let Some(i) = n.as_i64() {
                    return i.checked_mul(scale as i64);
                }
                let ns = n.as_f64()? * scale;
                (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
            }
            _ => None,
        }
    }
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

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn headers(h: &Map<String, Value>) -> Result<Vec<(String, Bytes)>, String> {
    let mut out = Vec::with_capacity(h.len());
    for (name, value) in h {
        if !is_header_name(name) {
            return Err(format!("`{name}` is not a header name"));
        }
        match value {
            Value::String(s) => out.push((name.clone(), Bytes::from(s.clone()))),
            Value::Array(items) => {
                for item in items {
                    let Value::String(s) = item else {
                        return Err(format!("header `{name}` has a non-string value {item}"));
                    };
                    out.push((name.clone(), Bytes::from(s.clone())));
                }
            }
            other => return Err(format!("header `{name}` has a non-string value {other}")),
        }
    }
    Ok(out)
}

fn host_header(headers: &[(String, Bytes)]) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
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
        match json(None).parse(line.as_bytes()) {
            Parsed::Record(r) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    fn reason(line: &str) -> &'static str {
        match json(None).parse(line.as_bytes()) {
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
        assert_eq!(r.headers[2], ("Cookie".to_string(), Bytes::from("b")));
        assert_eq!(r.body, Bytes::from("hi"));
    }

    #[test]
    fn numeric_timestamps_follow_the_unit() {
        assert_eq!(record(r#"{"ts":1500,"method":"GET","url":"/"}"#).ts, 1_500_000_000);
        let s = Json::new(JsonFields::default(), TimeUnit::S, None);
        let Parsed::Record(r) = s.parse(br#"{"ts":1.5,"method":"GET","url":"/"}"#) else { panic!() };
        assert_eq!(r.ts, 1_500_000_000);
    }

    #[test]
    fn base64_bodies_carry_any_bytes() {
        let r = record(r#"{"ts":1,"method":"PUT","url":"/b","body_base64":"AP8Q"}"#);
        assert_eq!(r.body.as_ref(), &[0u8, 255, 16]);
    }

    #[test]
    fn keys_come_from_json_headers_or_query() {
        let line = br#"{"ts":1,"method":"GET","url":"/x?u=7","headers":{"X-User":"ann"},"user":42}"#;
        let key = |k| match json(Some(k)).parse(line) {
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
        assert_eq!(reason(r#"{"ts":1e300,"method":"GET","url":"/"}"#), "bad_ts");
    }
}
