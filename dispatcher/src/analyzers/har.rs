//! The har format (HAR 1.2, as browsers, mitmproxy and Charles write it): each unit is one
//! entry of `log.entries[]` (a file is cut into its entries as it streams past, by
//! [`crate::fetchers`]; from Kafka each message is one entry). An entry's
//! `startedDateTime` is the record's time, its `request` the request (`method`, an absolute
//! `url`, `headers` as `{name, value}` pairs, `postData.text`, base64 when
//! `postData.encoding` says so), and its `response` the recorded answer for
//! `[compare] baseline = "recorded"` (`status`, `headers`, `content.text`, base64 when
//! `content.encoding` says so).
//!
//! HTTP/2 captures carry pseudo-headers (`:method`, `:authority`, …): they are not replayed
//! as headers; `:authority` stands for the Host a request without one had. Connection
//! headers stay in the record and are left out when sent, as for every format.
//!
//! An entry is parsed into a `serde_json::Value` and read from it: a HAR's entries are
//! few next to a log's lines, and a tree makes each problem easy to name.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use super::answers::Answers;
use super::{KeySource, Parsed, is_method, is_token, with_key};
use crate::accounting::Malformed;
use crate::config::values::parse_rfc3339_ns;
use crate::record::{Record, Text, split_url};

#[derive(Clone, Debug)]
pub struct Har {
    key: Option<KeySource>,
    answers: Option<Answers>,
}

impl Har {
    pub fn new(key: Option<KeySource>) -> Self {
        Self { key, answers: None }
    }

    /// Reads each entry's `response` as the answer to compare with.
    pub fn with_answers(self, answers: Option<Answers>) -> Self {
        Self { answers, ..self }
    }

    pub fn parse(&self, unit: &Bytes) -> Parsed {
        match self.record(unit) {
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err((reason, detail)) => Parsed::malformed(reason, detail),
        }
    }

    fn record(&self, unit: &[u8]) -> Result<Record, (Malformed, String)> {
        let entry: Value =
            serde_json::from_slice(unit).map_err(|e| (Malformed::HarEntry, format!("not JSON: {e}")))?;
        let Some(entry) = entry.as_object() else {
            return Err((Malformed::HarEntry, "an entry that is not an object".into()));
        };
        let Some(request) = entry.get("request").and_then(Value::as_object) else {
            return Err((Malformed::HarEntry, "an entry without a `request` object".into()));
        };
        let ts = match entry.get("startedDateTime") {
            Some(Value::String(s)) => parse_rfc3339_ns(s).ok_or_else(|| {
                (Malformed::HarTime, format!("startedDateTime {s:?} is not an RFC 3339 time"))
            })?,
            _ => return Err((Malformed::HarTime, "no startedDateTime string".into())),
        };
        let method = match request.get("method") {
            Some(Value::String(m)) if is_method(m) => Text::from(m.as_str()),
            other => return Err((Malformed::BadMethod, format!("request.method is {}", shown(other)))),
        };
        let (host, path) = match request.get("url") {
            Some(Value::String(u)) => match split_url(u) {
                Some((host, path)) => (host.map(Text::from), Text::from(path.as_ref())),
                None => return Err((Malformed::BadUrl, format!("request.url {u:?} is not an http(s) URL"))),
            },
            other => return Err((Malformed::BadUrl, format!("request.url is {}", shown(other)))),
        };
        let (headers, authority) = headers(request.get("headers"))
            .map_err(|why| (Malformed::BadHeaders, format!("request.{why}")))?;
        let body = body(request.get("postData"))
            .map_err(|why| (Malformed::BadBody, format!("request.postData{why}")))?;
        let host = host.or(authority).or_else(|| {
            let (_, v) = headers.iter().find(|(n, _)| n.is("host"))?;
            std::str::from_utf8(v).ok().map(Text::from)
        });
        let expected = match (&self.answers, entry.get("response")) {
            (Some(answers), Some(response)) => expected(answers, response)?,
            _ => None,
        };
        Ok(Record { ts, method, path, host, headers, body, key: None, expected })
    }
}

/// How a value is named in a problem: its JSON type, never its content (it may be secret).
fn shown(v: Option<&Value>) -> &'static str {
    match v {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "not a valid value",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

/// Headers as a record holds them, and the `:authority` pseudo-header's value.
type Headers = (Vec<(Text, Bytes)>, Option<Text>);

/// A `headers` list of `{name, value}`: the headers, and the `:authority` pseudo-header's
/// value (the other pseudo-headers are the request line's, kept elsewhere).
fn headers(list: Option<&Value>) -> Result<Headers, String> {
    let Some(list) = list.filter(|v| !v.is_null()) else { return Ok((Vec::new(), None)) };
    let Some(list) = list.as_array() else { return Err(format!("headers is {}", shown(Some(list)))) };
    let mut out = Vec::with_capacity(list.len());
    let mut authority = None;
    for (i, h) in list.iter().enumerate() {
        let (Some(Value::String(name)), Some(Value::String(value))) = (h.get("name"), h.get("value")) else {
            return Err(format!("headers[{i}] is not a {{\"name\", \"value\"}} pair of strings"));
        };
        if let Some(pseudo) = name.strip_prefix(':') {
            if pseudo.eq_ignore_ascii_case("authority") {
                authority = Some(Text::from(value.as_str()));
            }
            continue;
        }
        if !is_token(name) {
            return Err(format!("headers[{i}]: `{name}` is not a header name"));
        }
        out.push((Text::from(name.as_str()), Bytes::copy_from_slice(value.as_bytes())));
    }
    Ok((out, authority))
}

/// The body of a `postData` or `content` object: its `text`, decoded when its `encoding` is
/// base64. An error names what is wrong after the object's name.
fn body(holder: Option<&Value>) -> Result<Bytes, String> {
    let Some(holder) = holder.filter(|v| !v.is_null()) else { return Ok(Bytes::new()) };
    let text = match holder.get("text") {
        None | Some(Value::Null) => return Ok(Bytes::new()),
        Some(Value::String(t)) => t,
        Some(other) => return Err(format!(".text is {}", shown(Some(other)))),
    };
    match holder.get("encoding").and_then(Value::as_str) {
        Some(e) if e.eq_ignore_ascii_case("base64") => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|e| format!(".text is not base64: {e}")),
        _ => Ok(Bytes::copy_from_slice(text.as_bytes())),
    }
}

/// The recorded answer of an entry; a status of 0 (no answer: the request failed) is none.
fn expected(answers: &Answers, response: &Value) -> Result<Option<Box<Bytes>>, (Malformed, String)> {
    let bad = |why: String| (Malformed::BadResponse, format!("response{why}"));
    if response.is_null() {
        return Ok(None);
    }
    let status = match response.get("status").and_then(Value::as_u64) {
        Some(0) => return Ok(None),
        Some(s @ 100..=599) => s as u16,
        _ => return Err(bad(".status must be a number from 100 to 599".into())),
    };
    let (headers, _) = headers(response.get("headers")).map_err(|why| bad(format!(".{why}")))?;
    let body = body(response.get("content")).map_err(|why| bad(format!(".content{why}")))?;
    Ok(Some(answers.encode(status, &headers, &body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entry: &str, answers: bool) -> Parsed {
        let har = Har::new(None).with_answers(answers.then(|| Answers::new(&["etag"], 1024)));
        har.parse(&Bytes::copy_from_slice(entry.as_bytes()))
    }

    fn reason(entry: &str) -> (&'static str, String) {
        match parse(entry, true) {
            Parsed::Malformed { reason, detail } => (reason.as_str(), detail),
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn an_http2_entry_becomes_a_record_without_its_pseudo_headers() {
        let entry = r#"{"startedDateTime":"2024-05-01T12:00:00.250Z","time":3,
            "request":{"method":"POST","url":"https://api.example.com/v1/items?x=1","httpVersion":"HTTP/2.0",
              "headers":[{"name":":method","value":"POST"},{"name":":authority","value":"api.example.com"},
                         {"name":"content-type","value":"application/grpc"},{"name":"authorization","value":"Bearer t"}],
              "postData":{"mimeType":"application/grpc","text":"AAAAAAMKAWE=","encoding":"base64"}},
            "response":{"status":200,"headers":[{"name":"etag","value":"e1"}],
              "content":{"size":2,"mimeType":"text/plain","text":"ok"}}}"#;
        let Parsed::Record(r) = parse(entry, true) else { panic!("{:?}", parse(entry, true)) };
        assert_eq!(r.ts, 1_714_564_800_250_000_000);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/items?x=1"));
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "authorization"]);
        assert_eq!(&r.body[..], &[0, 0, 0, 0, 3, 10, 1, b'a']);
        use prost::Message as _;
        let e = reprise_proto::pb::Expected::decode(&r.expected.as_deref().expect("an answer")[..])
            .expect("decodes");
        assert_eq!((e.status, &e.body[..]), (200, &b"ok"[..]));
    }

    #[test]
    fn broken_entries_are_counted_by_reason_and_name_no_values() {
        let ok_request = r#""request":{"method":"GET","url":"http://h/a","headers":[]}"#;
        assert_eq!(reason("[1]").0, "har_entry");
        assert_eq!(reason("{\"startedDateTime\":\"2024-05-01T12:00:00Z\"").0, "har_entry");
        assert_eq!(reason(r#"{"startedDateTime":"2024-05-01T12:00:00Z"}"#).0, "har_entry");
        assert_eq!(reason(&format!("{{{ok_request}}}")).0, "har_time");
        assert_eq!(reason(&format!(r#"{{"startedDateTime":"yesterday",{ok_request}}}"#)).0, "har_time");
        let at = r#""startedDateTime":"2024-05-01T12:00:00Z""#;
        assert_eq!(reason(&format!(r#"{{{at},"request":{{"method":"G T","url":"/a"}}}}"#)).0, "bad_method");
        assert_eq!(reason(&format!(r#"{{{at},"request":{{"method":"GET","url":"ftp://x"}}}}"#)).0, "bad_url");
        let (why, detail) = reason(&format!(
            r#"{{{at},"request":{{"method":"GET","url":"/a","headers":[{{"name":"bad name","value":"s3cret"}}]}}}}"#
        ));
        assert_eq!(why, "bad_headers");
        assert!(!detail.contains("s3cret"), "{detail}");
        let bad64 = format!(
            r#"{{{at},"request":{{"method":"POST","url":"/a","postData":{{"text":"%%%","encoding":"base64"}}}}}}"#
        );
        assert_eq!(reason(&bad64).0, "bad_body");
        assert_eq!(
            reason(&format!(r#"{{{at},{ok_request},"response":{{"status":"x"}}}}"#)).0,
            "bad_response"
        );
        let unanswered = format!(r#"{{{at},{ok_request},"response":{{"status":0,"headers":[]}}}}"#);
        assert!(matches!(parse(&unanswered, true), Parsed::Record(r) if r.expected.is_none()));
    }
}
