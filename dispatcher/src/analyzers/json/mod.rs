//! The json format: one object per line, e.g.
//! `{"ts":"2024-05-01T12:00:00.250Z","method":"POST","url":"/users?x=1",
//!   "headers":{"Accept":"*/*","Cookie":["a=1","b=2"]},"body":"{\"name\":\"x\"}"}`.
//! `ts` is an RFC 3339 string or a number in `[analyzer] timestamp_unit`; `url` is a path
//! with query or an absolute URL; `body` is UTF-8 text, `body_base64` any bytes. When the
//! job compares against recorded answers, a `response` object holds the answer:
//! `{"status":200,"headers":{…},"body":"…"}` (or `body_base64`), headers and bodies read as
//! the request's. HTTP/2 pseudo-headers are not headers: `:authority` is read as `host`, the
//! others are left out. A `version` field (`"HTTP/2"`) may be there; which HTTP a record
//! is replayed over is `[replayer] http`'s to choose.

mod scan;

use std::borrow::Cow;
use std::cell::RefCell;

use base64::Engine as _;
use bytes::Bytes;

use super::answers::Answers;
use super::{KeySource, Parsed, is_method, is_token, with_key};
use crate::accounting::{Malformed, Skipped};
use crate::config::values::parse_rfc3339_ns;
use crate::config::{JsonFields, TimeUnit};
use crate::record::{Record, Text, split_url};
use scan::{Reader, SyntaxError, Val};

/// The json analyzer. One pass over the line ([`scan::Reader`]) reads the configured fields,
/// strings borrowed from the line where they hold no escapes, and checks and skips the rest.
/// No tree of the whole object is built: this is the dispatcher's hottest loop. (Keeping
/// every field raw and parsing it afterwards read each string twice: 800–900 ns per line of
/// bench (a)'s recording; one pass with serde_json 540–600 ns; with [`scan`] 405–425 ns.)
#[derive(Clone, Debug)]
pub struct Json {
    fields: JsonFields,
    unit: TimeUnit,
    key: Option<KeySource>,
    /// Set when the job compares against recorded answers: the `response` field is read.
    answers: Option<Answers>,
}

/// The configured fields of one line.
#[derive(Default)]
struct Raw<'a> {
    ts: Option<Val<'a>>,
    method: Option<Val<'a>>,
    url: Option<Val<'a>>,
    /// The headers as the record holds them, or why they are not headers.
    headers: Option<Result<Vec<(Text, Bytes)>, String>>,
    body: Option<Val<'a>>,
    body_base64: Option<Val<'a>>,
    /// The whole body's length, when the recording kept only part of it.
    body_length: Option<Val<'a>>,
    /// The hash key's text: a string's content, a number's or boolean's JSON text.
    key: Option<Cow<'a, str>>,
    /// The recorded answer (`None` inside: null, none recorded), or why it is not one.
    response: Option<Result<Option<Response<'a>>, String>>,
}

/// A `response` object's fields.
#[derive(Default)]
struct Response<'a> {
    status: Option<Val<'a>>,
    headers: Option<Result<Vec<(Text, Bytes)>, String>>,
    /// HTTP/2 trailers (a gRPC call's `grpc-status`), compared as headers.
    trailers: Option<Result<Vec<(Text, Bytes)>, String>>,
    body: Option<Val<'a>>,
    body_base64: Option<Val<'a>>,
    /// A body cut at `reprise record --max-body`: the whole one's length and FNV-1a (hex).
    body_length: Option<Val<'a>>,
    body_fnv1a: Option<Val<'a>>,
}

/// Why a line is malformed (kept small: the Ok side is a whole record).
struct Bad {
    reason: Malformed,
    detail: String,
}

impl Bad {
    fn new(reason: Malformed, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl Json {
    pub fn new(fields: JsonFields, unit: TimeUnit, key: Option<KeySource>) -> Self {
        Self { fields, unit, key, answers: None }
    }

    /// Reads each record's `response` as the answer to compare with.
    pub fn with_answers(self, answers: Option<Answers>) -> Self {
        Self { answers, ..self }
    }

    /// Parses one line; the record's fields are slices of `line` where they hold no escapes.
    pub fn parse(&self, line: &Bytes) -> Parsed {
        let raw = match Reader::new(line).and_then(|mut r| self.pick(&mut r, line)) {
            Ok(raw) => raw,
            Err(e) => return Parsed::malformed(Malformed::JsonSyntax, e.to_string()),
        };
        let whole = raw.body_length.as_ref().and_then(Val::as_u64);
        match self.record(line, raw) {
            Ok(r) if whole.is_some_and(|n| n > r.body.len() as u64) => Parsed::Skipped(Skipped::BodyCut),
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err(bad) => Parsed::malformed(bad.reason, bad.detail),
        }
    }

    /// Reads the configured fields of the line's object (a repeated field: the last one) and
    /// checks the rest of it. `unit` is the line, which header texts are slices of.
    fn pick<'a>(&self, r: &mut Reader<'a>, unit: &Bytes) -> Result<Raw<'a>, SyntaxError> {
        let n = &self.fields;
        let key = match &self.key {
            Some(KeySource::Json(name)) => Some(name.as_str()),
            _ => None,
        };
        let mut raw = Raw::default();
        r.object()?;
        let mut members = 0;
        while let Some(k) = r.member(members)? {
            members += 1;
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
            } else if k == "body_length" {
                &mut raw.body_length
            } else if k == n.headers {
                raw.headers = Some(headers(r, unit)?);
                continue;
            } else if self.answers.is_some() && k == n.response {
                raw.response = Some(response(r, unit)?);
                continue;
            } else if Some(k) == key {
                let start = r.offset();
                raw.key = match r.value()? {
                    Val::Str(s) => Some(s),
                    Val::Int(_) | Val::Uint(_) | Val::Float(_) | Val::Bool(_) => {
                        Some(Cow::Borrowed(r.since(start)))
                    }
                    Val::Null | Val::Object | Val::Array => None,
                };
                continue;
            } else {
                r.skip(0)?;
                continue;
            };
            *slot = Some(r.value()?);
        }
        r.end()?;
        Ok(raw)
    }

    fn record(&self, unit: &Bytes, raw: Raw<'_>) -> Result<Record, Bad> {
        let f = &self.fields;
        let ts = match raw.ts {
            None => return Err(Bad::new(Malformed::MissingTs, format!("no field `{}`", f.ts))),
            Some(v) => self.timestamp(&v).ok_or_else(|| Bad::new(Malformed::BadTs, v.describe()))?,
        };
        let method = match raw.method {
            Some(Val::Str(m)) if is_method(&m) => Text::within_cow(unit, m),
            Some(v) => return Err(Bad::new(Malformed::BadMethod, v.describe())),
            None => return Err(Bad::new(Malformed::MissingMethod, format!("no field `{}`", f.method))),
        };
        let (host, path) = match raw.url {
            Some(Val::Str(u)) => match split_url(&u) {
                Some((host, path)) => (host.map(|h| Text::within(unit, h)), Text::within_cow(unit, path)),
                None => return Err(Bad::new(Malformed::BadUrl, u.into_owned())),
            },
            Some(v) => return Err(Bad::new(Malformed::BadUrl, v.describe())),
            None => return Err(Bad::new(Malformed::MissingUrl, format!("no field `{}`", f.url))),
        };
        let headers = match raw.headers {
            None => Vec::new(),
            Some(Err(why)) => return Err(Bad::new(Malformed::BadHeaders, why)),
            Some(Ok(pairs)) => pairs,
        };
        let body = body(unit, raw.body, raw.body_base64)?;
        let host = host.or_else(|| host_header(&headers));
        let key = raw.key.map(Cow::into_owned);
        let expected = match (&self.answers, raw.response) {
            (Some(answers), Some(response)) => expected(answers, unit, response)?,
            _ => None,
        };
        Ok(Record { ts, method, path, host, headers, body, key, expected })
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

/// Reads the headers value: an object of strings, or of arrays of strings for repeated
/// headers (order kept), or null; names and values are slices of `unit` where they hold no
/// escapes. A value of another shape is read to its end and is the headers' fault (`Err`),
/// not the line's; only broken JSON is a [`SyntaxError`].
fn headers(r: &mut Reader<'_>, unit: &Bytes) -> Result<Result<Vec<(Text, Bytes)>, String>, SyntaxError> {
    match r.value_kind()? {
        b'{' => {}
        b'n' => return r.value().map(|_| Ok(Vec::new())),
        _ => {
            let v = r.value()?;
            return Ok(Err(format!("headers are {}, not an object", v.describe())));
        }
    }
    GATHERED.with_borrow_mut(|out| {
        let gathered = gather(r, unit, out).map(|wrong| {
            wrong.map_or_else(
                || {
                    // Moved out; `out` keeps its capacity for the next record.
                    let mut headers = Vec::with_capacity(out.len());
                    headers.append(out);
                    Ok(headers)
                },
                Err,
            )
        });
        out.clear();
        gathered
    })
}

thread_local! {
    /// Each reader thread's list a record's headers are gathered in, then moved out at their
    /// exact count: a vector grown from empty to production's 10-11 headers took three
    /// allocations and two copies, 8 % of the dispatcher's CPU on bench (a).
    static GATHERED: RefCell<Vec<(Text, Bytes)>> = const { RefCell::new(Vec::new()) };
}

/// The members of a headers object, into `out`; what is wrong with them, if anything.
fn gather(
    r: &mut Reader<'_>,
    unit: &Bytes,
    out: &mut Vec<(Text, Bytes)>,
) -> Result<Option<String>, SyntaxError> {
    let mut wrong = None;
    r.object()?;
    let mut members = 0;
    while let Some(name) = r.member(members)? {
        members += 1;
        // HTTP/2 pseudo-headers are the request line's, not headers; `:authority` is the
        // Host an HTTP/2 request carries.
        let name = match name.strip_prefix(':') {
            Some(pseudo) if pseudo.eq_ignore_ascii_case("authority") => Cow::Borrowed("host"),
            Some(_) => {
                r.skip(0)?;
                continue;
            }
            None => name,
        };
        if !is_header_name(&name) && wrong.is_none() {
            wrong = Some(format!("`{name}` is not a header name"));
        }
        let name = Text::within_cow(unit, name);
        if r.value_kind()? == b'[' {
            r.array()?;
            let mut values = 0;
            while r.element(values)? {
                values += 1;
                match r.value()? {
                    Val::Str(v) => out.push((name.clone(), Text::within_cow(unit, v).into_bytes())),
                    v => {
                        wrong.get_or_insert_with(|| format!("header `{name}` has a value {}", v.describe()));
                    }
                }
            }
            continue;
        }
        match r.value()? {
            Val::Str(v) => out.push((name, Text::within_cow(unit, v).into_bytes())),
            v => {
                wrong.get_or_insert_with(|| format!("header `{name}` is {}, not a string", v.describe()));
            }
        }
    }
    Ok(wrong)
}

/// Reads a `response` value: an object of `status`, `headers`, `body`, `body_base64`
/// (others skipped), or null (no answer recorded). Another shape is the response's fault
/// (`Err`), not the line's.
fn response<'a>(
    r: &mut Reader<'a>,
    unit: &Bytes,
) -> Result<Result<Option<Response<'a>>, String>, SyntaxError> {
    match r.value_kind()? {
        b'{' => {}
        b'n' => return r.value().map(|_| Ok(None)),
        _ => {
            let v = r.value()?;
            return Ok(Err(format!("is {}, not an object", v.describe())));
        }
    }
    let mut out = Response::default();
    r.object()?;
    let mut members = 0;
    while let Some(k) = r.member(members)? {
        members += 1;
        let slot = match k.as_ref() {
            "status" => &mut out.status,
            "body" => &mut out.body,
            "body_base64" => &mut out.body_base64,
            "body_length" => &mut out.body_length,
            "body_fnv1a" => &mut out.body_fnv1a,
            "headers" => {
                out.headers = Some(headers(r, unit)?);
                continue;
            }
            "trailers" => {
                out.trailers = Some(headers(r, unit)?);
                continue;
            }
            _ => {
                r.skip(0)?;
                continue;
            }
        };
        *slot = Some(r.value()?);
    }
    Ok(Ok(Some(out)))
}

/// A record's recorded answer, encoded (`None` for a null one); a `response` that is not
/// one makes the line malformed (`bad_response`), as a bad request field does.
fn expected(
    answers: &Answers,
    unit: &Bytes,
    response: Result<Option<Response<'_>>, String>,
) -> Result<Option<Box<Bytes>>, Bad> {
    let bad = |why: String| Bad::new(Malformed::BadResponse, format!("response: {why}"));
    let Some(r) = response.map_err(bad)? else { return Ok(None) };
    let status = match r.status {
        Some(Val::Int(s)) => u16::try_from(s).ok(),
        Some(Val::Uint(s)) => u16::try_from(s).ok(),
        _ => None,
    };
    let status = status
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| bad("`status` must be a number from 100 to 599".to_owned()))?;
    let mut headers = match r.headers {
        None => Vec::new(),
        Some(Err(why)) => return Err(bad(why)),
        Some(Ok(pairs)) => pairs,
    };
    match r.trailers {
        None => {}
        Some(Err(why)) => return Err(bad(format!("trailers: {why}"))),
        Some(Ok(mut pairs)) => headers.append(&mut pairs),
    }
    let body = body(unit, r.body, r.body_base64).map_err(|b| bad(b.detail))?;
    let whole = match (r.body_length, r.body_fnv1a) {
        (None, None) => None,
        (Some(length), Some(Val::Str(hash))) => match (length.as_u64(), u64::from_str_radix(&hash, 16)) {
            (Some(length), Ok(hash)) if length >= body.len() as u64 => Some((length, hash)),
            _ => {
                return Err(bad(
                    "`body_length` must be the whole body's length and `body_fnv1a` its hash in hex".into(),
                ));
            }
        },
        _ => return Err(bad("`body_length` and `body_fnv1a` go together (a body cut at --max-body)".into())),
    };
    Ok(Some(answers.encode_cut(status, &headers, &body, whole)))
}

fn body(unit: &Bytes, text: Option<Val<'_>>, base64: Option<Val<'_>>) -> Result<Bytes, Bad> {
    if let Some(v) = base64.filter(|v| !v.is_null()) {
        let s = v.into_str().ok_or_else(|| Bad::new(Malformed::BadBody, "body_base64 is not a string"))?;
        return base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes::from)
            .map_err(|e| Bad::new(Malformed::BadBody, format!("body_base64: {e}")));
    }
    match text.filter(|v| !v.is_null()) {
        None => Ok(Bytes::new()),
        Some(Val::Str(s)) => Ok(Text::within_cow(unit, s).into_bytes()),
        Some(v) => Err(Bad::new(Malformed::BadBody, format!("body is not a string: {}", v.describe()))),
    }
}

fn host_header(headers: &[(Text, Bytes)]) -> Option<Text> {
    // invariant: values were parsed from JSON strings, so UTF-8.
    let (_, v) = headers.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(b"host"))?;
    std::str::from_utf8(v).ok().map(|h| Text::within(v, h))
}

/// Any HTTP token: header names are not capped like methods (names past 32 bytes exist).
pub(super) fn is_header_name(n: &str) -> bool {
    is_token(n)
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
            Parsed::Malformed { reason, .. } => reason.as_str(),
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

    #[test]
    fn http2_pseudo_headers_are_left_out_and_the_authority_is_the_host() {
        let r = record(
            r#"{"ts":1,"version":"HTTP/2","method":"GET","url":"/a","headers":{":method":"GET",":authority":"api:8443","accept":"*/*"}}"#,
        );
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "accept"]);
        assert_eq!(r.host.as_deref(), Some("api:8443"));
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
        // Headers of the wrong shape are the headers' fault, unless the line is broken too.
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","headers":"A: 1"}"#), "bad_headers");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","headers":{"A":["x",2]}}"#), "bad_headers");
        assert_eq!(reason(r#"{"ts":1,"method":"GET","url":"/","headers":{"A":1},"z":[}"#), "json_syntax");
        let not_utf8 = Bytes::from_static(b"{\"ts\":1,\"method\":\"GET\",\"url\":\"/\xff\"}");
        assert!(matches!(
            json(None).parse(&not_utf8),
            Parsed::Malformed { reason: Malformed::JsonSyntax, .. }
        ));
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
        assert_eq!(
            detail(r#"{"ts":1,"method":"GET","url":"/","headers":{"A":{}}}"#),
            "header `A` is an object, not a string"
        );
        assert_eq!(
            detail(r#"{"ts":1,"method":"GET","url":"/" "body":""}"#),
            "expected `,` or `}` at column 34"
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

    /// Compared against recorded answers, a record's `response` becomes its expected
    /// answer; null is none; a response that is not one makes the line malformed. Without
    /// the recorded baseline the field is left alone.
    #[test]
    fn a_response_object_is_the_recorded_answer() {
        let answering = json(None).with_answers(Some(Answers::new(&["etag"], 1 << 10)));
        let parse = |a: &Json, line: &str| a.parse(&Bytes::copy_from_slice(line.as_bytes()));
        let line = r#"{"ts":1,"method":"GET","url":"/a","response":{"status":201,"headers":{"ETag":"e1","Date":"d"},"body_base64":"AAEC","extra":[1]}}"#;
        let Parsed::Record(r) = parse(&answering, line) else { panic!("{:?}", parse(&answering, line)) };
        let e = <reprise_proto::pb::Expected as prost::Message>::decode(&r.expected.expect("an answer")[..])
            .expect("decodes");
        assert_eq!((e.status, e.headers.len(), &e.body[..], e.length), (201, 1, &[0u8, 1, 2][..], 3));
        assert_eq!(record(line).expected, None, "without the recorded baseline");
        let null = r#"{"ts":1,"method":"GET","url":"/a","response":null}"#;
        assert!(matches!(parse(&answering, null), Parsed::Record(Record { expected: None, .. })));
        for bad in [
            r#"{"ts":1,"method":"GET","url":"/a","response":{"status":"200"}}"#,
            r#"{"ts":1,"method":"GET","url":"/a","response":{"status":42}}"#,
            r#"{"ts":1,"method":"GET","url":"/a","response":{"status":200,"body":7}}"#,
            r#"{"ts":1,"method":"GET","url":"/a","response":{"status":200,"headers":[]}}"#,
            r#"{"ts":1,"method":"GET","url":"/a","response":[]}"#,
        ] {
            match parse(&answering, bad) {
                Parsed::Malformed { reason, detail } => {
                    assert_eq!(reason, Malformed::BadResponse, "{bad}");
                    assert!(detail.starts_with("response: "), "{detail}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// What `reprise record` writes: an answer's trailers are compared as its headers (a
    /// gRPC call's `grpc-status`), a body cut at its `--max-body` compares by the whole
    /// one's length and hash, and a request whose own body was cut is skipped, not sent
    /// short.
    #[test]
    fn a_captured_answer_keeps_its_trailers_and_a_cut_body_its_length_and_hash() {
        let answering = json(None).with_answers(Some(Answers::new(&[], 4)));
        let parse = |line: &str| answering.parse(&Bytes::copy_from_slice(line.as_bytes()));
        let line = r#"{"ts":1,"method":"POST","url":"/a","response":{"status":200,"headers":{"content-type":"application/grpc"},"trailers":{"grpc-status":"5"},"body":"abcd","body_length":10,"body_fnv1a":"00000000000000ff"}}"#;
        let Parsed::Record(r) = parse(line) else { panic!("{:?}", parse(line)) };
        let e = <reprise_proto::pb::Expected as prost::Message>::decode(&r.expected.expect("an answer")[..])
            .expect("decodes");
        assert_eq!((&e.body[..], e.length, e.hash), (&b"abcd"[..], 10, 0xff));
        assert_eq!(e.headers.len(), 1, "grpc-status, from the trailers");
        assert_eq!(&e.headers[0].value[..], b"5");
        let cut = r#"{"ts":1,"method":"POST","url":"/a","body":"abcd","body_length":10}"#;
        assert!(matches!(parse(cut), Parsed::Skipped(Skipped::BodyCut)), "{:?}", parse(cut));
        let whole = r#"{"ts":1,"method":"POST","url":"/a","body":"abcd","body_length":4}"#;
        assert!(matches!(parse(whole), Parsed::Record(_)));
        let lone =
            r#"{"ts":1,"method":"GET","url":"/a","response":{"status":200,"body":"ab","body_length":10}}"#;
        assert!(
            matches!(parse(lone), Parsed::Malformed { reason: Malformed::BadResponse, .. }),
            "{:?}",
            parse(lone)
        );
    }
}
