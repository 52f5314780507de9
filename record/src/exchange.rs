//! One exchange the proxy saw, and the json record it becomes: the format the json
//! analyzer reads (docs/recordings.md), with the answer in `response` so a replay can
//! compare a candidate against it (`[compare] baseline = "recorded"`).
//!
//! A body is kept up to `max_body` bytes: as `body` when it is UTF-8, else `body_base64`.
//! When it was longer, `body_length` and `body_fnv1a` (the whole body's length and FNV-1a,
//! the hash a replayer takes of a candidate's body) say what it was, so an answer still
//! compares by length and hash, and a request cut short is known as one and not replayed.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::BytesMut;
use http::{HeaderMap, Method, Version};
use reprise_proto::expected::{fnv_start, fnv1a};

/// Headers copied out of what the connection read: a value hyper parsed is a slice of the
/// connection's read buffer, and a clone of it would keep that whole buffer alive for as
/// long as the exchange waits in the sink's queue (measured: 13 KB an exchange instead of
/// its 2 KB, with a stalled sink).
pub fn owned(map: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(map.len());
    for (name, value) in map {
        let mut copy = http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
            .unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}

/// A body as it streamed past: its first `max_body` bytes, its whole length and hash.
#[derive(Debug)]
pub struct Captured {
    kept: BytesMut,
    length: u64,
    hash: u64,
}

impl Captured {
    pub fn new() -> Self {
        Captured { kept: BytesMut::new(), length: 0, hash: fnv_start() }
    }

    /// Takes the next piece of the body, keeping what fits under `max_body`.
    pub fn add(&mut self, part: &[u8], max_body: usize) {
        let room = max_body.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&part[..room.min(part.len())]);
        self.length += part.len() as u64;
        self.hash = fnv1a(self.hash, part);
    }

    /// Bytes held (what the queue's bound counts).
    pub fn held(&self) -> usize {
        self.kept.len()
    }

    fn is_cut(&self) -> bool {
        self.length > self.kept.len() as u64
    }
}

impl Default for Captured {
    fn default() -> Self {
        Captured::new()
    }
}

/// What the upstream answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Captured,
    /// HTTP/2 trailers (a gRPC call's `grpc-status`), empty when there were none.
    pub trailers: HeaderMap,
}

/// A request and what became of it.
#[derive(Debug)]
pub struct Exchange {
    /// When the request's head arrived.
    pub at: SystemTime,
    /// From the request's arrival to the end of its answer.
    pub took: Duration,
    pub method: Method,
    /// Path and query, as sent.
    pub url: String,
    pub version: Version,
    /// The request's headers; `host` holds HTTP/2's `:authority`.
    pub headers: HeaderMap,
    pub body: Captured,
    pub answer: Option<Answer>,
    /// Why there is no answer (the upstream could not be reached, or broke off).
    pub error: Option<String>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            at: SystemTime::UNIX_EPOCH,
            took: Duration::ZERO,
            method: Method::GET,
            url: String::new(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Captured::new(),
            answer: None,
            error: None,
        }
    }
}

impl Exchange {
    /// Bytes this exchange holds, roughly: what the sink queue's bound counts.
    pub fn held(&self) -> usize {
        // A header costs its bytes and about 64 more: its entry, its name, its value's Bytes.
        let headers = |h: &HeaderMap| h.iter().map(|(n, v)| n.as_str().len() + v.len() + 64).sum::<usize>();
        let answer =
            self.answer.as_ref().map_or(0, |a| a.body.held() + headers(&a.headers) + headers(&a.trailers));
        256 + self.url.len() + headers(&self.headers) + self.body.held() + answer
    }

    /// Appends this exchange as one json line (with its `\n`).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let ts = chrono::DateTime::<chrono::Utc>::from(self.at)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        out.extend_from_slice(b"{\"ts\":\"");
        out.extend_from_slice(ts.as_bytes());
        out.extend_from_slice(b"\",\"method\":");
        string(out, self.method.as_str());
        out.extend_from_slice(b",\"url\":");
        string(out, &self.url);
        out.extend_from_slice(b",\"version\":");
        string(out, version(self.version));
        out.extend_from_slice(b",\"headers\":");
        headers(out, &self.headers);
        body(out, &self.body, binary(&self.headers));
        out.extend_from_slice(b",\"response\":");
        match &self.answer {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                let _ = write!(Bytesink(out), "{{\"status\":{},\"headers\":", a.status);
                headers(out, &a.headers);
                if !a.trailers.is_empty() {
                    out.extend_from_slice(b",\"trailers\":");
                    headers(out, &a.trailers);
                }
                body(out, &a.body, binary(&a.headers));
                out.push(b'}');
            }
        }
        let _ = write!(Bytesink(out), ",\"took_us\":{}", self.took.as_micros());
        if let Some(e) = &self.error {
            out.extend_from_slice(b",\"error\":");
            string(out, e);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `fmt::Write` into a byte vector.
struct Bytesink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytesink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A JSON string. invariant: serde_json writes a `&str` into a Vec without failing.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Headers as an object; a name that repeats holds an array of its values, in order. A
/// value that is not UTF-8 (rare, and not sendable from json) is kept with its bytes
/// replaced by U+FFFD.
fn headers(out: &mut Vec<u8>, map: &HeaderMap) {
    let one = |out: &mut Vec<u8>, v: &http::HeaderValue| match std::str::from_utf8(v.as_bytes()) {
        Ok(text) => string(out, text),
        Err(_) => string(out, &String::from_utf8_lossy(v.as_bytes())),
    };
    out.push(b'{');
    // A name's values come one after the other: one pass, no lookup by name.
    let mut entries = map.iter().peekable();
    let mut first = true;
    while let Some((name, value)) = entries.next() {
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, name.as_str());
        out.push(b':');
        if entries.peek().is_none_or(|(next, _)| *next != name) {
            one(out, value);
            continue;
        }
        out.push(b'[');
        one(out, value);
        while let Some((_, v)) = entries.next_if(|(next, _)| *next == name) {
            out.push(b',');
            one(out, v);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Whether a body of this content type is bytes even where they happen to be UTF-8 (gRPC's
/// length-prefixed messages, protobuf): written as base64, as a reader of the json expects.
fn binary(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.starts_with("application/grpc")
            || t.starts_with("application/octet-stream")
            || t.contains("protobuf")
    })
}

/// `,"body":…` (UTF-8 text) or `,"body_base64":…` (nothing for an empty body), and the
/// whole length and hash of a body that was cut.
fn body(out: &mut Vec<u8>, b: &Captured, binary: bool) {
    if !b.kept.is_empty() {
        match std::str::from_utf8(&b.kept).ok().filter(|_| !binary) {
            Some(text) => {
                out.extend_from_slice(b",\"body\":");
                string(out, text);
            }
            None => {
                out.extend_from_slice(b",\"body_base64\":\"");
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&b.kept).as_bytes());
                out.push(b'"');
            }
        }
    }
    if b.is_cut() {
        let _ = write!(Bytesink(out), ",\"body_length\":{},\"body_fnv1a\":\"{:016x}\"", b.length, b.hash);
    }
}

/// A body held whole, as the tests and a trailers-only answer have it.
pub fn captured(bytes: &[u8], max_body: usize) -> Captured {
    let mut c = Captured::new();
    c.add(bytes, max_body);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> Exchange {
        let mut headers = HeaderMap::new();
        headers.append("host", "shop".parse().expect("a value"));
        headers.append("cookie", "a=1".parse().expect("a value"));
        headers.append("cookie", "b=\"2\"".parse().expect("a value"));
        Exchange {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            took: Duration::from_micros(1500),
            method: Method::POST,
            url: "/cart?x=1".into(),
            version: Version::HTTP_11,
            headers,
            body: captured(b"{}", 100),
            answer: None,
            error: Some("upstream: refused".into()),
        }
    }

    fn line(e: &Exchange) -> serde_json::Value {
        let mut out = Vec::new();
        e.write_line(&mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    /// The line is the json format: time, method, url, repeated headers as an array in
    /// their order, the body as text, no answer as null.
    #[test]
    fn an_exchange_is_a_json_record() {
        let v = line(&exchange());
        assert_eq!(v["ts"], "2023-11-14T22:13:20.250000Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], "/cart?x=1");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["headers"]["host"], "shop");
        assert_eq!(v["headers"]["cookie"], serde_json::json!(["a=1", "b=\"2\""]));
        assert_eq!(v["body"], "{}");
        assert_eq!(v["response"], serde_json::Value::Null);
        assert_eq!(v["error"], "upstream: refused");
        assert_eq!(v["took_us"], 1500);
    }

    /// Bytes that are not UTF-8 go as base64; a body over max_body keeps its head, and its
    /// whole length and hash, computed over every piece however it was split.
    #[test]
    fn a_binary_or_long_body_is_kept_as_base64_or_cut_with_its_length_and_hash() {
        let mut e = exchange();
        let mut trailers = HeaderMap::new();
        trailers.append("grpc-status", "0".parse().expect("a value"));
        let mut body = Captured::new();
        body.add(b"\x00\x01\xff", 4);
        body.add(b"\x02\x03", 4);
        e.answer = Some(Answer { status: 200, headers: HeaderMap::new(), body, trailers });
        let v = line(&e);
        let r = &v["response"];
        assert_eq!(r["status"], 200);
        assert_eq!(r["body_base64"], "AAH/Ag==");
        assert_eq!(r["body_length"], 5);
        assert_eq!(r["body_fnv1a"], format!("{:016x}", fnv1a(fnv_start(), b"\x00\x01\xff\x02\x03")));
        assert_eq!(r["trailers"]["grpc-status"], "0");
        assert!(v.get("body_length").is_none(), "the request's body was whole");
    }
}
