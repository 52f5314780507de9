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
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, Version};
use reprise_proto::expected::{fnv_start, fnv1a};

use crate::privacy::Redact;

/// A body as it streamed past: its first `max_body` bytes, its whole length and hash.
#[derive(Debug)]
pub struct Captured {
    kept: BytesMut,
    length: u64,
    /// The whole body's FNV-1a so far, once it is longer than `max_body`: only a body that
    /// is cut needs one, so hashing starts at its first byte past `max_body` (hashing every
    /// body took 2 % of the proxy's CPU).
    hash: Option<u64>,
}

impl Captured {
    pub fn new() -> Self {
        Captured { kept: BytesMut::new(), length: 0, hash: None }
    }

    /// Takes the next piece of the body, keeping what fits under `max_body`.
    pub fn add(&mut self, part: &[u8], max_body: usize) {
        let room = max_body.saturating_sub(self.kept.len());
        let (kept, rest) = part.split_at(room.min(part.len()));
        self.kept.extend_from_slice(kept);
        self.length += part.len() as u64;
        if !rest.is_empty() {
            let hash = self.hash.unwrap_or_else(|| fnv1a(fnv_start(), &self.kept));
            self.hash = Some(fnv1a(hash, rest));
        }
    }

    /// The whole body's FNV-1a.
    fn hash(&self) -> u64 {
        self.hash.unwrap_or_else(|| fnv1a(fnv_start(), &self.kept))
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

/// What is kept of headers as they are captured: a redacted header's value is its keyed
/// hash, and the sink's key header (`--kafka-key`) is kept aside, redacted as recorded.
#[derive(Clone, Copy, Default)]
pub struct Keep<'a> {
    pub redact: Option<&'a Redact>,
    pub key: Option<&'a HeaderName>,
}

/// What the upstream answered.
#[derive(Debug, Default)]
pub struct Answer {
    /// `"status":…,"headers":{…}`: the head, written as json as it arrived.
    head: Vec<u8>,
    /// Whether the body is bytes whatever it holds ([`binary`]).
    binary: bool,
    pub body: Captured,
    /// HTTP/2 trailers (a gRPC call's `grpc-status`) as a json object; empty when there
    /// were none.
    trailers: Vec<u8>,
}

impl Answer {
    /// An answer's head, as it arrived.
    pub fn new(status: u16, headers: &HeaderMap, keep: Keep<'_>) -> Answer {
        let mut head = Vec::with_capacity(64 + headers.len() * 48);
        let _ = write!(Bytesink(&mut head), "\"status\":{status},\"headers\":");
        write_headers(&mut head, headers, None, keep.redact);
        Answer { head, binary: binary(headers), body: Captured::new(), trailers: Vec::new() }
    }

    /// The answer's trailers arrived.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        self.trailers.clear();
        if !trailers.is_empty() {
            write_headers(&mut self.trailers, trailers, None, None);
        }
    }
}

/// A request and what became of it. Heads are written as json when they arrive, from
/// the maps hyper parsed: copying a map out (a value hyper parsed is a slice of the
/// connection's read buffer, which a clone would keep alive while the exchange waits in
/// the sink's queue) and writing it later cost twice as much.
#[derive(Debug)]
pub struct Exchange {
    /// When the request's head arrived.
    at: SystemTime,
    /// From the request's arrival to the end of its answer.
    pub took: Duration,
    /// `"method":…,"url":…,"version":…,"headers":{…}`: the request's head as json.
    head: Vec<u8>,
    binary: bool,
    /// The value of the sink's key header, if the request has one.
    pub key: Option<Bytes>,
    pub body: Captured,
    pub answer: Option<Answer>,
    /// Why there is no answer (the upstream could not be reached, or broke off).
    pub error: Option<String>,
}

/// An empty exchange, what is left where one was taken out.
impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            at: SystemTime::UNIX_EPOCH,
            took: Duration::ZERO,
            head: Vec::new(),
            binary: false,
            key: None,
            body: Captured::new(),
            answer: None,
            error: None,
        }
    }
}

impl Exchange {
    /// A request whose head arrived `at`; HTTP/2's `:authority` is recorded as `host`.
    pub fn new(at: SystemTime, parts: &http::request::Parts, keep: Keep<'_>) -> Exchange {
        let headers = &parts.headers;
        let mut head = Vec::with_capacity(128 + headers.len() * 48);
        head.extend_from_slice(b"\"method\":");
        quoted(&mut head, parts.method.as_str().as_bytes());
        head.extend_from_slice(b",\"url\":");
        string(&mut head, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        head.extend_from_slice(b",\"version\":");
        quoted(&mut head, version(parts.version).as_bytes());
        head.extend_from_slice(b",\"headers\":");
        let authority = parts.uri.authority().map(|a| a.as_str());
        let host = (parts.version == Version::HTTP_2 && !headers.contains_key(http::header::HOST))
            .then_some(authority)
            .flatten();
        write_headers(&mut head, headers, host, keep.redact);
        let key = keep.key.and_then(|k| {
            let v = headers.get(k)?.as_bytes();
            Some(
                keep.redact
                    .and_then(|r| r.value(k, v))
                    .map_or_else(|| Bytes::copy_from_slice(v), Bytes::from),
            )
        });
        Exchange {
            at,
            took: Duration::ZERO,
            head,
            binary: binary(headers),
            key,
            body: Captured::new(),
            answer: None,
            error: None,
        }
    }

    /// Bytes this exchange holds, roughly: what the sink queue's bound counts.
    pub fn held(&self) -> usize {
        let answer = self.answer.as_ref().map_or(0, |a| a.head.len() + a.body.held() + a.trailers.len());
        256 + self.head.len() + self.body.held() + answer
    }

    /// Appends this exchange as one json line (with its `\n`).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let ts = chrono::DateTime::<chrono::Utc>::from(self.at)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        out.extend_from_slice(b"{\"ts\":\"");
        out.extend_from_slice(ts.as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&self.head);
        body(out, &self.body, self.binary);
        out.extend_from_slice(b",\"response\":");
        match &self.answer {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                out.push(b'{');
                out.extend_from_slice(&a.head);
                if !a.trailers.is_empty() {
                    out.extend_from_slice(b",\"trailers\":");
                    out.extend_from_slice(&a.trailers);
                }
                body(out, &a.body, a.binary);
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

/// A JSON string. Written here rather than by serde_json, whose writer copies each run
/// between two escapes with a call of its own: on a JSON body, with a quote every few
/// bytes, that took about 19 instructions a byte, a fifth of the proxy's (callgrind). Most
/// strings (header values) need no escape at all: they are found so 32 bytes at a time,
/// in a loop the compiler vectorises, and copied whole.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if plain(bytes) { quoted(out, bytes) } else { escaped(out, bytes) }
}

/// `bytes` between quotes, as they are: for what needs no escape (see [`plain`]), such as
/// a header name or a method, which are tokens.
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// `bytes` as a JSON string, escaped, a block at a time into room for its worst case
/// (every byte `\u00XX`), which is zeroed first: cheaper than counting the room.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const BLOCK: usize = 4096;
    out.push(b'"');
    for block in bytes.chunks(BLOCK) {
        let start = out.len();
        out.resize(start + block.len() * 6 + 8, 0);
        let written = escape_into(&mut out[start..], block);
        out.truncate(start + written);
    }
    out.push(b'"');
}

/// Writes `bytes` escaped into `room` (their worst case and 8 bytes more), and returns
/// the length written. Eight bytes at a time are copied as they are, then the first of
/// them that needs an escape, found by arithmetic on the 8 as one word, is written over
/// with its escape. JSON bodies have a quote every few bytes: a byte at a time, each
/// looked up and pushed, took a third more time on them.
fn escape_into(room: &mut [u8], bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n` (n <= 0x80). A bit can be set wrongly only
    // above one set rightly, and only the lowest is read.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let (mut i, mut at) = (0, 0);
    while i < bytes.len() {
        if let Some(eight) = bytes.get(i..i + 8) {
            room[at..at + 8].copy_from_slice(eight);
            let w = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
            let special = below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5c), 1);
            if special == 0 {
                i += 8;
                at += 8;
                continue;
            }
            let plain = special.trailing_zeros() as usize / 8;
            i += plain;
            at += plain;
        }
        let b = bytes[i];
        match ESCAPE[usize::from(b)] {
            0 => {
                room[at] = b;
                at += 1;
            }
            b'u' => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                room[at..at + 6].copy_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
                at += 6;
            }
            e => {
                room[at] = b'\\';
                room[at + 1] = e;
                at += 2;
            }
        }
        i += 1;
    }
    at
}

/// Whether `bytes` are ASCII that a JSON string holds as they are.
fn plain(bytes: &[u8]) -> bool {
    bytes
        .chunks(32)
        .all(|c| c.iter().fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')))
}

/// How each byte is written in a JSON string: 0 as it is, `u` as `\u00XX`, else after a
/// backslash.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A header value as a JSON string; one that is not UTF-8 (rare, and not sendable from
/// json) is kept with its bytes replaced by U+FFFD.
fn value_string(out: &mut Vec<u8>, v: &[u8]) {
    if plain(v) {
        return quoted(out, v);
    }
    match std::str::from_utf8(v) {
        Ok(text) => string(out, text),
        Err(_) => string(out, &String::from_utf8_lossy(v)),
    }
}

/// Headers as an object; a name that repeats holds an array of its values, in order, and
/// `host` (HTTP/2's `:authority`) comes last when given. A redacted value is its keyed
/// hash.
fn write_headers(out: &mut Vec<u8>, map: &HeaderMap, host: Option<&str>, redact: Option<&Redact>) {
    let one = |out: &mut Vec<u8>, name: &HeaderName, v: &http::HeaderValue| match redact
        .and_then(|r| r.value(name, v.as_bytes()))
    {
        Some(hash) => string(out, &hash),
        None => value_string(out, v.as_bytes()),
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
        quoted(out, name.as_str().as_bytes());
        out.push(b':');
        if entries.peek().is_none_or(|(next, _)| *next != name) {
            one(out, name, value);
            continue;
        }
        out.push(b'[');
        one(out, name, value);
        while let Some((_, v)) = entries.next_if(|(next, _)| *next == name) {
            out.push(b',');
            one(out, name, v);
        }
        out.push(b']');
    }
    if let Some(host) = host {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"host\":");
        string(out, host);
    }
    out.push(b'}');
}

/// Whether a body of this content type is bytes even where they happen to be UTF-8 (gRPC's
/// length-prefixed messages, protobuf): written as base64, as a reader of the json expects.
fn binary(headers: &HeaderMap) -> bool {
    let starts = |t: &[u8], with: &[u8]| t.get(..with.len()).is_some_and(|s| s.eq_ignore_ascii_case(with));
    headers.get(http::header::CONTENT_TYPE).map(http::HeaderValue::as_bytes).is_some_and(|t| {
        starts(t, b"application/grpc")
            || starts(t, b"application/octet-stream")
            || t.windows(8).any(|w| w.eq_ignore_ascii_case(b"protobuf"))
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
        let _ = write!(Bytesink(out), ",\"body_length\":{},\"body_fnv1a\":\"{:016x}\"", b.length, b.hash());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut r = http::Request::builder().method("POST").uri(uri).version(version);
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(()).expect("a request").into_parts().0
    }

    fn exchange() -> Exchange {
        let parts = request(
            Version::HTTP_11,
            "/cart?x=1",
            &[("host", "shop"), ("cookie", "a=1"), ("cookie", "b=\"2\"\t"), ("x-user", "u7")],
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let mut e = Exchange::new(at, &parts, Keep::default());
        e.took = Duration::from_micros(1500);
        e.body.add(b"{\"note\":\"line\\nbreak\"}", 100);
        e.error = Some("upstream: refused".into());
        e
    }

    fn line(e: &Exchange) -> serde_json::Value {
        let mut out = Vec::new();
        e.write_line(&mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    /// The line is the json format: time, method, url, repeated headers as an array in
    /// their order, the body as text (escaped where it must be), no answer as null.
    #[test]
    fn an_exchange_is_a_json_record() {
        let v = line(&exchange());
        assert_eq!(v["ts"], "2023-11-14T22:13:20.250000Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["url"], "/cart?x=1");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["headers"]["host"], "shop");
        assert_eq!(v["headers"]["cookie"], serde_json::json!(["a=1", "b=\"2\"\t"]));
        assert_eq!(v["headers"]["x-user"], "u7");
        assert_eq!(v["body"], "{\"note\":\"line\\nbreak\"}");
        assert_eq!(v["response"], serde_json::Value::Null);
        assert_eq!(v["error"], "upstream: refused");
        assert_eq!(v["took_us"], 1500);
    }

    /// Redacted headers are their keyed hash in the request and the answer, and the sink's
    /// key is taken as recorded; HTTP/2's `:authority` is recorded as `host`.
    #[test]
    fn heads_are_redacted_as_captured_and_http2_keeps_its_authority_as_host() {
        let redact = Redact::new(vec![HeaderName::from_static("x-user")], b"k");
        let key = HeaderName::from_static("x-user");
        let keep = Keep { redact: Some(&redact), key: Some(&key) };
        let parts = request(Version::HTTP_2, "http://shop:8080/cart", &[("x-user", "u7"), ("accept", "*/*")]);
        let mut e = Exchange::new(SystemTime::now(), &parts, keep);
        let mut answer = HeaderMap::new();
        answer.append("x-user", "u7".parse().expect("a value"));
        e.answer = Some(Answer::new(200, &answer, keep));
        let v = line(&e);
        let hash = redact.value(&key, b"u7").expect("redacted");
        assert_eq!(v["headers"]["x-user"], hash.as_str());
        assert_eq!(v["response"]["headers"]["x-user"], hash.as_str());
        assert_eq!(e.key.as_deref(), Some(hash.as_bytes()));
        assert_eq!(v["headers"]["host"], "shop:8080");
        assert_eq!(v["headers"]["accept"], "*/*");
        assert_eq!(v["url"], "/cart");
        assert_eq!(v["version"], "HTTP/2");
    }

    /// Bytes that are not UTF-8 go as base64; a body over max_body keeps its head, and its
    /// whole length and hash, computed over every piece however it was split.
    #[test]
    fn a_binary_or_long_body_is_kept_as_base64_or_cut_with_its_length_and_hash() {
        let mut e = exchange();
        let mut trailers = HeaderMap::new();
        trailers.append("grpc-status", "0".parse().expect("a value"));
        let mut answer = Answer::new(200, &HeaderMap::new(), Keep::default());
        answer.body.add(b"\x00\x01\xff", 4);
        answer.body.add(b"\x02\x03", 4);
        answer.body.add(b"\x04", 4);
        answer.trailers(&trailers);
        e.answer = Some(answer);
        let v = line(&e);
        let r = &v["response"];
        assert_eq!(r["status"], 200);
        assert_eq!(r["body_base64"], "AAH/Ag==");
        assert_eq!(r["body_length"], 6);
        assert_eq!(r["body_fnv1a"], format!("{:016x}", fnv1a(fnv_start(), b"\x00\x01\xff\x02\x03\x04")));
        assert_eq!(r["trailers"]["grpc-status"], "0");
        assert!(v.get("body_length").is_none(), "the request's body was whole");
    }

    /// Every character, escaped or not, reads back as it was; a header value that is not
    /// UTF-8 is kept with U+FFFD in place of its bad bytes.
    #[test]
    fn strings_read_back_as_they_were() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀 \u{7f}\"\\");
        // Escapes that take all the room counted for them, after what the line holds.
        let worst = ["\u{1}".repeat(50), "\"".repeat(50), "\n\\".repeat(30)];
        for s in [all.as_str(), "", "plain", &"x".repeat(100), &format!("{}\"", "y".repeat(40))]
            .into_iter()
            .chain(worst.iter().map(String::as_str))
        {
            let mut out = b"{".to_vec();
            string(&mut out, s);
            assert_eq!(serde_json::from_slice::<String>(&out[1..]).expect("valid JSON"), s);
        }
        let mut out = Vec::new();
        value_string(&mut out, b"a\xffb");
        assert_eq!(serde_json::from_slice::<String>(&out).expect("valid JSON"), "a\u{fffd}b");
    }

    /// Escaped a word at a time and a block at a time, strings come out as serde_json
    /// writes them: escapes at every place in a word, across blocks, up to the last byte.
    #[test]
    fn strings_escape_as_serde_json_does() {
        let alphabet = ['"', '\\', '\n', '\u{1}', '\u{1f}', 'a', ' ', '~', '\u{7f}', 'é', '😀'];
        let mut seed = 7u64;
        for n in (0..40).chain([4095, 4096, 4097, 9000]) {
            for density in [1, 3, 20] {
                let s: String = (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let r = (seed >> 33) as usize;
                        if r.is_multiple_of(density) { alphabet[r / density % alphabet.len()] } else { 'x' }
                    })
                    .collect();
                let mut out = b"[".to_vec();
                string(&mut out, &s);
                assert_eq!(out[1..], serde_json::to_vec(&s).expect("json")[..], "{s:?}");
            }
        }
    }

    /// Bodies of gRPC and protobuf are bytes, whatever the case of their content type.
    #[test]
    fn binary_content_types_are_known_in_any_case() {
        let of = |t: &str| {
            binary(&HeaderMap::from_iter([(http::header::CONTENT_TYPE, t.parse().expect("a value"))]))
        };
        for t in [
            "application/grpc",
            "Application/GRPC+proto",
            "application/x-Protobuf",
            "application/octet-stream",
        ] {
            assert!(of(t), "{t}");
        }
        for t in ["application/json", "text/plain; charset=utf-8", "application/grp", ""] {
            assert!(!of(t), "{t}");
        }
        assert!(!binary(&HeaderMap::new()));
    }

    /// A body cut at its first piece hashes the same as one cut later.
    #[test]
    fn a_body_cut_at_once_hashes_whole() {
        let mut c = Captured::new();
        c.add(b"0123456789", 4);
        assert_eq!((c.held(), c.length, c.hash()), (4, 10, fnv1a(fnv_start(), b"0123456789")));
    }
}
