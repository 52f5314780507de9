//! nginx/Apache combined access-log lines:
//! `1.2.3.4 - user [10/Oct/2023:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326 "http://ref/" "curl/8"`.
//! Method, path and query come from the request line; Referer and User-Agent become headers;
//! the time comes from `[time_local]`. Bodies are not in such logs.
//!
//! Both servers escape what they log, and the escapes are undone: nginx writes `"`, `\`,
//! control bytes and every byte past ASCII as `\xHH` (so a raw UTF-8 path or a quoted user
//! agent reads `\xE6\x97…`, `\x22`); Apache writes `\"`, `\\` and `\xHH`. In the request
//! line a decoded byte that a URI may not hold becomes `%HH`, as a client would have sent
//! it; in the quoted fields (Referer, User-Agent) it becomes the byte itself. Other
//! backslashes stay as they are.

use bytes::Bytes;

use super::{KeySource, Parsed, is_method, with_key};
use crate::accounting::Malformed;
use crate::record::{Record, Text, split_url};
use reprise_proto::token::{URI_BYTE, push_percent_encoded};

#[derive(Clone, Debug)]
pub struct Combined {
    key: Option<KeySource>,
}

impl Combined {
    pub fn new(key: Option<KeySource>) -> Self {
        Self { key }
    }

    pub fn parse(&self, line: &[u8]) -> Parsed {
        let Ok(line) = std::str::from_utf8(line) else {
            return Parsed::malformed(Malformed::NotUtf8, String::from_utf8_lossy(line).into_owned());
        };
        match parse_line(line.trim_end()) {
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err(reason) => Parsed::malformed(reason, line.to_owned()),
        }
    }
}

fn parse_line(line: &str) -> Result<Record, Malformed> {
    let open = line.find('[').ok_or(Malformed::NoTime)?;
    let close = open + line[open..].find(']').ok_or(Malformed::NoTime)?;
    let ts = chrono::DateTime::parse_from_str(&line[open + 1..close], "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or(Malformed::BadTime)?;
    let mut quoted = Quoted(&line[close + 1..]);
    let request = quoted.next().ok_or(Malformed::NoRequest)?;
    let request = decode_target(request);
    let mut parts = request.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().ok_or(Malformed::BadRequest)?);
    if !is_method(method) {
        return Err(Malformed::BadRequest);
    }
    let (host, path) = split_url(target).ok_or(Malformed::BadRequest)?;
    let referer = quoted.next();
    let agent = quoted.next();
    let mut headers = Vec::new();
    for (name, value) in [("Referer", referer), ("User-Agent", agent)] {
        if let Some(v) = value.filter(|v| !v.is_empty() && *v != "-") {
            headers.push((Text::from(name), Bytes::from(decode_bytes(v))));
        }
    }
    Ok(Record {
        ts,
        method: method.into(),
        path: path.into(),
        host: host.map(Text::from),
        headers,
        body: Bytes::new(),
        key: None,
        expected: None,
    })
}

/// Yields the double-quoted fields of a log line, honouring `\"` inside them.
struct Quoted<'a>(&'a str);

impl<'a> Iterator for Quoted<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let start = self.0.find('"')? + 1;
        let bytes = self.0.as_bytes();
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let field = &self.0[start..i];
                    self.0 = &self.0[i + 1..];
                    return Some(field);
                }
                _ => i += 1,
            }
        }
        None
    }
}

/// What a decoded escape becomes.
#[derive(Clone, Copy, PartialEq)]
enum Decoded {
    /// Part of a request target: bytes a URI may not hold are percent-encoded.
    Uri,
    /// A header value: the byte itself.
    Bytes,
}

/// The byte an escape at the start of `rest` (just past its backslash) stands for, and how
/// many bytes of `rest` it takes: `\"`, `\\`, `\xHH` (either case).
fn escape(rest: &[u8]) -> Option<(u8, usize)> {
    match rest {
        [b'"', ..] => Some((b'"', 1)),
        [b'\\', ..] => Some((b'\\', 1)),
        [b'x' | b'X', hi, lo, ..] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some(((hex(*hi)? * 16 + hex(*lo)?) as u8, 3))
        }
        _ => None,
    }
}

/// Undoes the log's escapes into bytes of the given kind.
fn decode_into(v: &str, into: Decoded) -> Vec<u8> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = if bytes[i] == b'\\' { escape(&bytes[i + 1..]) } else { None };
        match decoded {
            Some((b, taken)) if into == Decoded::Uri && !URI_BYTE[usize::from(b)] => {
                push_percent_encoded(&mut out, b);
                i += 1 + taken;
            }
            Some((b, taken)) => {
                out.push(b);
                i += 1 + taken;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// A request line with its escapes undone; it stays text, since what is not a URI byte is
/// percent-encoded. Borrowed when there is no backslash.
fn decode_target(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains('\\') {
        return v.into();
    }
    // invariant: every byte past ASCII is percent-encoded, and the rest is the line's own
    // UTF-8.
    let text = String::from_utf8(decode_into(v, Decoded::Uri));
    text.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()).into()
}

fn decode_bytes(v: &str) -> Vec<u8> {
    if v.contains('\\') { decode_into(v, Decoded::Bytes) } else { v.as_bytes().to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Parsed {
        Combined::new(None).parse(line.as_bytes())
    }

    #[test]
    fn a_combined_line_becomes_a_record() {
        let line = r#"10.0.0.1 - bob [10/Oct/2023:13:55:36 -0700] "GET /a/b?c=1 HTTP/1.1" 200 2326 "http://ref.example/x" "Mozilla/5.0 \"quoted\"""#;
        let Parsed::Record(r) = parse(line) else { panic!("{:?}", parse(line)) };
        assert_eq!(r.ts, 1_696_971_336_000_000_000);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/a/b?c=1"));
        assert_eq!(r.header("referer"), Some(&Bytes::from("http://ref.example/x")));
        assert_eq!(r.header("user-agent"), Some(&Bytes::from("Mozilla/5.0 \"quoted\"")));
    }

    #[test]
    fn nginx_and_apache_escapes_are_undone() {
        // As nginx logs a raw UTF-8 path, a raw quote in the query and quotes in the agent.
        let line = r#"127.0.0.1 - - [04/Dec/2026:06:00:00 +0000] "GET /raw/\xE6\x97\xA5?term=\x22quoted\x22&b=\x5C HTTP/1.1" 404 153 "-" "curl \x22x\x22 \xC3\xA9 \\ \"y\" \q""#;
        let Parsed::Record(r) = parse(line) else { panic!("{:?}", parse(line)) };
        assert_eq!(r.path.as_str(), "/raw/%E6%97%A5?term=%22quoted%22&b=%5C");
        assert_eq!(r.header("user-agent"), Some(&Bytes::from("curl \"x\" é \\ \"y\" \\q")));
        // Escapes of bytes a URI holds stay those bytes; a broken escape stays as written.
        let Parsed::Record(r) =
            parse(r#"h - - [01/Jan/2024:00:00:00 +0000] "GET /a\x2Fb\xZZ HTTP/1.1" 200 1"#)
        else {
            panic!()
        };
        assert_eq!(r.path.as_str(), "/a/b\\xZZ");
        assert_eq!(decode_bytes(r"\xff\x00"), vec![0xFF, 0]);
    }

    #[test]
    fn dashes_are_absent_headers() {
        let Parsed::Record(r) =
            parse(r#"::1 - - [01/Jan/2024:00:00:00 +0000] "HEAD / HTTP/1.0" 200 0 "-" "-""#)
        else {
            panic!()
        };
        assert!(r.headers.is_empty());
        assert_eq!(r.method, "HEAD");
    }

    #[test]
    fn malformed_lines_are_named_by_reason() {
        let reason = |l: &str| match parse(l) {
            Parsed::Malformed { reason, .. } => reason.as_str(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("just text"), "no_time");
        assert_eq!(reason(r#"h - - [yesterday] "GET / HTTP/1.1" 200 1"#), "bad_time");
        assert_eq!(reason(r#"h - - [01/Jan/2024:00:00:00 +0000] 200 1"#), "no_request");
        assert_eq!(reason(r#"h - - [01/Jan/2024:00:00:00 +0000] "-" 400 0 "-" "-""#), "bad_request");
        assert_eq!(
            reason(r#"h - - [01/Jan/2024:00:00:00 +0000] "GET nopath HTTP/1.1" 400 0"#),
            "bad_request"
        );
    }
}
