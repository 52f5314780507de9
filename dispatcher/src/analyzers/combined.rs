//! nginx/Apache combined access-log lines:
//! `1.2.3.4 - user [10/Oct/2023:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326 "http://ref/" "curl/8"`.
//! Method, path and query come from the request line; Referer and User-Agent become headers;
//! the time comes from `[time_local]`. Bodies are not in such logs.

use bytes::Bytes;

use super::{KeySource, Parsed, is_method, with_key};
use crate::record::{Record, Text, split_url};

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
            return Parsed::malformed("not_utf8", String::from_utf8_lossy(line).into_owned());
        };
        match parse_line(line.trim_end()) {
            Ok(r) => Parsed::Record(with_key(r, self.key.as_ref())),
            Err(reason) => Parsed::malformed(reason, line.to_owned()),
        }
    }
}

fn parse_line(line: &str) -> Result<Record, &'static str> {
    let open = line.find('[').ok_or("no_time")?;
    let close = open + line[open..].find(']').ok_or("no_time")?;
    let ts = chrono::DateTime::parse_from_str(&line[open + 1..close], "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or("bad_time")?;
    let mut quoted = Quoted(&line[close + 1..]);
    let request = quoted.next().ok_or("no_request")?;
    let mut parts = request.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().ok_or("bad_request")?);
    if !is_method(method) {
        return Err("bad_request");
    }
    let (host, path) = split_url(target).ok_or("bad_request")?;
    let referer = quoted.next();
    let agent = quoted.next();
    let mut headers = Vec::new();
    for (name, value) in [("Referer", referer), ("User-Agent", agent)] {
        if let Some(v) = value.filter(|v| !v.is_empty() && *v != "-") {
            headers.push((Text::from(name), Bytes::from(unescape(v))));
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

fn unescape(v: &str) -> String {
    v.replace("\\\"", "\"").replace("\\\\", "\\")
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
            Parsed::Malformed { reason, .. } => reason,
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
