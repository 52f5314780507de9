//! GoReplay's .gor files: each unit is a meta line `TYPE ID TIMESTAMP_NS LATENCY`, then the
//! raw HTTP/1.1 message; units are separated by a line holding only the three monkeys
//! ([`GOR_SEPARATOR`]). Type 1 (requests) is replayed. Type 2 (the original response) is
//! skipped and counted, unless the job compares against recorded answers: then it is
//! parsed into an answer, and each request and answer goes out with its id for the fetcher
//! to pair them ([`Parsed::Request`], [`Parsed::Answer`]). Type 3 (a response GoReplay got
//! when it replayed) is always skipped. The fetcher hands over a unit without its separator
//! line.

use bytes::Bytes;

use super::answers::Answers;
use super::json::is_header_name;
use super::{KeySource, Parsed, is_method, with_key};
use crate::accounting::{Malformed, Skipped};
use crate::record::{Record, Text, split_url};

/// The separator line between GoReplay records (without its newline).
pub const GOR_SEPARATOR: &str = "\u{1F435}\u{1F648}\u{1F649}";

#[derive(Clone, Debug)]
pub struct Gor {
    key: Option<KeySource>,
    /// Set when the job compares against recorded answers.
    answers: Option<Answers>,
}

impl Gor {
    pub fn new(key: Option<KeySource>) -> Self {
        Self { key, answers: None }
    }

    /// Reads type 2 units as the answers to compare with.
    pub fn with_answers(self, answers: Option<Answers>) -> Self {
        Self { answers, ..self }
    }

    pub fn parse(&self, unit: &[u8]) -> Parsed {
        // GoReplay writes "\n" before the separator line; it is not part of the payload.
        let unit = unit.strip_suffix(b"\n").unwrap_or(unit);
        let Some(nl) = unit.iter().position(|&b| b == b'\n') else {
            return Parsed::malformed(Malformed::GorTruncated, "no payload after the meta line");
        };
        let meta = String::from_utf8_lossy(&unit[..nl]);
        let mut parts = meta.split_ascii_whitespace();
        let (kind, id, ts) = (parts.next(), parts.next(), parts.next());
        match (kind, &self.answers, id) {
            (Some("1"), _, _) => {}
            (Some("2"), Some(answers), Some(id)) => {
                return match response(&unit[nl + 1..]) {
                    Ok((status, (_, headers, body))) => Parsed::Answer {
                        id: Bytes::copy_from_slice(id.as_bytes()),
                        expected: answers.encode(status, &headers, &body),
                    },
                    Err((reason, detail)) => Parsed::malformed(reason, detail),
                };
            }
            (Some("2" | "3"), _, _) => return Parsed::Skipped(Skipped::GorResponse),
            _ => return Parsed::malformed(Malformed::GorMeta, meta.into_owned()),
        }
        let Some(ts) = ts.and_then(|t| t.parse::<i64>().ok()) else {
            return Parsed::malformed(Malformed::GorMeta, meta.into_owned());
        };
        match request(&unit[nl + 1..], ts) {
            Ok(r) => {
                let record = with_key(r, self.key.as_ref());
                match (&self.answers, id) {
                    (Some(_), Some(id)) => {
                        Parsed::Request { id: Bytes::copy_from_slice(id.as_bytes()), record }
                    }
                    _ => Parsed::Record(record),
                }
            }
            Err((reason, detail)) => Parsed::malformed(reason, detail),
        }
    }
}

type Bad = (Malformed, String);

/// A raw HTTP/1.x message's first line, headers (a `Transfer-Encoding: chunked` left out)
/// and body (de-chunked, or cut at its `Content-Length`).
type Message<'a> = (&'a str, Vec<(Text, Bytes)>, Bytes);

fn message(raw: &[u8]) -> Result<Message<'_>, Bad> {
    let (head, body) =
        split_head(raw).ok_or((Malformed::HttpHead, "no blank line ends the headers".to_owned()))?;
    let head =
        std::str::from_utf8(head).map_err(|_| (Malformed::HttpHead, "headers are not UTF-8".to_owned()))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first_line = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or((Malformed::HttpHeader, line.to_owned()))?;
        if !is_header_name(name) {
            return Err((Malformed::HttpHeader, line.to_owned()));
        }
        headers.push((Text::from(name), Bytes::copy_from_slice(value.trim().as_bytes())));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(body).ok_or((Malformed::HttpBody, "bad chunked encoding".to_owned()))?
    } else if let Some(len) = header("content-length") {
        let len: usize = std::str::from_utf8(&len)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or((Malformed::HttpHeader, "bad Content-Length".to_owned()))?;
        Bytes::copy_from_slice(&body[..len.min(body.len())])
    } else {
        Bytes::copy_from_slice(body)
    };
    if chunked {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("transfer-encoding"));
    }
    Ok((first_line, headers, body))
}

/// Parses a raw HTTP/1.x response: its status, headers and body.
fn response(raw: &[u8]) -> Result<(u16, Message<'_>), Bad> {
    let (status_line, headers, body) = message(raw)?;
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code.parse::<u16>().ok(),
        _ => None,
    };
    let status = status
        .filter(|s| (100..=599).contains(s))
        .ok_or((Malformed::HttpStatusLine, status_line.to_owned()))?;
    Ok((status, (status_line, headers, body)))
}

/// Parses a raw HTTP/1.x request.
fn request(raw: &[u8], ts: i64) -> Result<Record, Bad> {
    let (request_line, headers, body) = message(raw)?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err((Malformed::HttpRequestLine, request_line.to_owned()));
    };
    if !is_method(method) || !version.starts_with("HTTP/1.") {
        return Err((Malformed::HttpRequestLine, request_line.to_owned()));
    }
    let (url_host, path) = split_url(target).ok_or((Malformed::HttpRequestLine, request_line.to_owned()))?;
    let host = url_host.map(Text::from).or_else(|| {
        let (_, h) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host"))?;
        Some(String::from_utf8_lossy(h).into())
    });
    Ok(Record {
        ts,
        method: method.into(),
        path: path.into(),
        host,
        headers,
        body,
        key: None,
        expected: None,
    })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((&raw[..i], &raw[i + 4..]));
    }
    let i = raw.windows(2).position(|w| w == b"\n\n")?;
    Some((&raw[..i], &raw[i + 2..]))
}

fn dechunk(mut raw: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    loop {
        let nl = raw.iter().position(|&b| b == b'\n')?;
        let size_line = std::str::from_utf8(&raw[..nl]).ok()?.trim();
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[nl + 1..];
        if size == 0 {
            return Some(out.into());
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size..)?;
        raw = raw.strip_prefix(b"\r\n").or_else(|| raw.strip_prefix(b"\n"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the fetcher hands a unit over: GoReplay's "\n" before the separator line included.
    fn parse(unit: &str) -> Parsed {
        let unit = format!("{unit}\n");
        Gor::new(Some(KeySource::Header("X-Session".into()))).parse(unit.as_bytes())
    }

    #[test]
    fn a_request_unit_becomes_a_record() {
        let unit = "1 abc 1700000000123456789 0\nPOST /login?next=%2F HTTP/1.1\r\nHost: prod.example\r\nX-Session: s1\r\nContent-Length: 5\r\n\r\nhello";
        let Parsed::Record(r) = parse(unit) else { panic!("{:?}", parse(unit)) };
        assert_eq!(r.ts, 1_700_000_000_123_456_789);
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/login?next=%2F"));
        assert_eq!(r.host.as_deref(), Some("prod.example"));
        assert_eq!(r.body, Bytes::from("hello"));
        assert_eq!(r.key.as_deref(), Some("s1"));
    }

    #[test]
    fn responses_are_skipped() {
        assert_eq!(parse("2 abc 1 0\nHTTP/1.1 200 OK\r\n\r\n"), Parsed::Skipped(Skipped::GorResponse));
        assert_eq!(parse("3 abc 1 0\nHTTP/1.1 200 OK\r\n\r\n"), Parsed::Skipped(Skipped::GorResponse));
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let unit =
            "1 a 5 0\nPUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let Parsed::Record(r) = parse(unit) else { panic!() };
        assert_eq!(r.body, Bytes::from("abcde"));
        assert!(r.header("transfer-encoding").is_none());
    }

    #[test]
    fn malformed_units_are_named_by_reason() {
        let reason = |u: &str| match parse(u) {
            Parsed::Malformed { reason, .. } => reason.as_str(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("1 abc 5 0"), "gor_truncated");
        assert_eq!(reason("9 abc 5 0\nGET / HTTP/1.1\r\n\r\n"), "gor_meta");
        assert_eq!(reason("1 abc notanumber 0\nGET / HTTP/1.1\r\n\r\n"), "gor_meta");
        assert_eq!(reason("1 abc 5 0\nGET / HTTP/1.1\r\nHost: x\r\n"), "http_head");
        assert_eq!(reason("1 abc 5 0\nGET /\r\n\r\n"), "http_request_line");
        assert_eq!(reason("1 abc 5 0\nGET / HTTP/1.1\r\nbroken header\r\n\r\n"), "http_header");
        assert_eq!(
            reason("1 a 5 0\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            "http_body"
        );
    }

    fn answering(unit: &str) -> Parsed {
        let gor = Gor::new(None).with_answers(Some(Answers::new(&["Content-Type"], 8)));
        gor.parse(format!("{unit}\n").as_bytes())
    }

    /// Compared against recorded answers, requests and answers come with their ids, the
    /// answer holding its status, the compared headers and the body cut at `max_body`
    /// (whole length kept); replayed responses (type 3) are still skipped.
    #[test]
    fn with_answers_responses_are_read_and_requests_carry_their_ids() {
        let Parsed::Request { id, record } = answering("1 ab1 5 0\nGET /x HTTP/1.1\r\n\r\n") else {
            panic!()
        };
        assert_eq!((&id[..], record.path.as_str()), (&b"ab1"[..], "/x"));
        let unit = "2 ab1 6 1\nHTTP/1.1 404 Not Found\r\nContent-Type: a/b\r\nDate: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n";
        let Parsed::Answer { id, expected } = answering(unit) else { panic!("{:?}", answering(unit)) };
        let e = <reprise_proto::pb::Expected as prost::Message>::decode(&expected[..]).expect("decodes");
        assert_eq!(&id[..], b"ab1");
        assert_eq!((e.status, e.headers.len(), &e.body[..], e.length), (404, 1, &b"01234567"[..], 11));
        assert_eq!(answering("3 ab1 7 1\nHTTP/1.1 200 OK\r\n\r\n"), Parsed::Skipped(Skipped::GorResponse));
        let reason = |u: &str| match answering(u) {
            Parsed::Malformed { reason, .. } => reason.as_str(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("2 a 6 1\nHTTP/1.1 OK\r\n\r\n"), "http_status_line");
        assert_eq!(reason("2 a 6 1\nHTTP/1.1 999 X\r\n\r\n"), "http_status_line");
        assert_eq!(reason("2 a 6 1\nGET / HTTP/1.1\r\n\r\n"), "http_status_line");
    }
}
