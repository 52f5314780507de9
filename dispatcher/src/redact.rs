//! Secrets stay secret in what reprise prints of a recording. The samples logged for
//! malformed input are raw bytes of any format (a json line, a GoReplay head, a log line),
//! so they are redacted without parsing: the values of secret headers (`Authorization`,
//! `Proxy-Authorization`, `Cookie`, `Set-Cookie` and `[analyzer] secret_headers`) become
//! `<redacted>` wherever the name is followed by a `:` (as in an HTTP head or a json object),
//! json body fields lose their value, and what follows an HTTP head (the body) is cut.
//! Query parameters whose values are secrets (those a `[[substitute]]` maps) lose their
//! value wherever `name=` follows a `?` or `&`.

/// Header names whose values are secrets (lowercase), and json body fields (quoted).
#[derive(Clone, Debug)]
pub struct Redactor {
    names: Vec<Vec<u8>>,
    /// Query parameter names, each with its `=`.
    queries: Vec<Vec<u8>>,
}

/// Always secret.
const SECRET_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];
/// Json fields holding a body (the analyzer's defaults; configured names are added).
const BODY_FIELDS: [&str; 2] = ["body", "body_base64"];
const REDACTED: &str = "<redacted>";

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(&[], &[])
    }
}

impl Redactor {
    /// The standard secret headers and `headers`; the default body fields and `bodies`.
    pub fn new(headers: &[String], bodies: &[String]) -> Self {
        let names = SECRET_HEADERS
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .chain(headers.iter().map(|n| n.to_ascii_lowercase().into_bytes()))
            .chain(
                BODY_FIELDS
                    .iter()
                    .copied()
                    .chain(bodies.iter().map(String::as_str))
                    .map(|f| format!("\"{f}\"").into_bytes()),
            )
            .collect();
        Redactor { names, queries: Vec::new() }
    }

    /// Also redacts the values of these query parameters.
    pub fn with_queries(mut self, names: &[String]) -> Self {
        self.queries = names.iter().map(|n| format!("{n}=").into_bytes()).collect();
        self
    }

    /// The first `max` bytes of `unit`, secrets and bodies replaced, as printable text.
    pub fn sample(&self, unit: &[u8], max: usize) -> String {
        let head_end =
            find(unit, b"\r\n\r\n").map(|e| (e, 4)).or_else(|| find(unit, b"\n\n").map(|e| (e, 2)));
        let (head, cut_body) = match head_end {
            Some((end, sep)) => (&unit[..end], unit.len() > end + sep),
            None => (unit, false),
        };
        let mut out = head.to_vec();
        for name in &self.names {
            out = redact_values(&out, name);
        }
        for name in &self.queries {
            out = redact_query(&out, name);
        }
        out.truncate(max);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if cut_body {
            text.push_str(" <body redacted>");
        }
        text
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Replaces the value after every case-insensitive `name` that is followed by `:` (a json
/// closing quote, spaces, `[` and an opening quote allowed in between) up to the end of the
/// value: an unescaped `"`, or the end of the line.
fn redact_values(text: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let here = &text[i..];
        if here.len() >= name.len() && here[..name.len()].eq_ignore_ascii_case(name) && starts_name(text, i) {
            let mut j = i + name.len();
            let skip = |j: &mut usize, set: &[u8]| {
                while *j < text.len() && set.contains(&text[*j]) {
                    *j += 1;
                }
            };
            skip(&mut j, b"\" \t");
            if j < text.len() && text[j] == b':' {
                j += 1;
                skip(&mut j, b" \t[");
                let quoted = j < text.len() && text[j] == b'"';
                if quoted {
                    j += 1;
                }
                out.extend_from_slice(&text[i..j]);
                out.extend_from_slice(REDACTED.as_bytes());
                i = value_end(text, j, quoted);
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// Replaces the value of every `name=` (name and its `=`) that follows a `?` or `&`, up
/// to the next `&`, `#`, space, quote or line end.
fn redact_query(text: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if i > 0 && matches!(text[i - 1], b'?' | b'&') && text[i..].starts_with(name) {
            out.extend_from_slice(name);
            out.extend_from_slice(REDACTED.as_bytes());
            i += name.len();
            while i < text.len() && !matches!(text[i], b'&' | b'#' | b' ' | b'"' | b'\r' | b'\n') {
                i += 1;
            }
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// A name starts at `i` when no letter, digit or `-` comes just before it ("cookie" in
/// "set-cookie" is redacted as part of "set-cookie" anyway).
fn starts_name(text: &[u8], i: usize) -> bool {
    i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_')
}

fn value_end(text: &[u8], mut j: usize, quoted: bool) -> usize {
    while j < text.len() {
        match text[j] {
            b'\\' if quoted => j += 2,
            b'"' if quoted => return j,
            b'\r' | b'\n' => return j,
            _ => j += 1,
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_header_values_and_bodies_never_show() {
        let r = Redactor::new(&["X-Api-Key".to_owned()], &["payload".to_owned()]);
        let json = br#"{"ts":1,"headers":{"Authorization":["Bearer s3cret\"x"],"cookie":"sid=abc","X-API-KEY":"k1"},"body":"pw=hunter2","payload":"p4","url":"/a"}"#;
        let s = r.sample(json, 1000);
        for secret in ["s3cret", "sid=abc", "k1", "hunter2", "p4"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(s.contains(r#""Authorization":["<redacted>"]"#) && s.contains(r#""url":"/a""#), "{s}");
        let head = b"1 id 1 0\r\nPOST /login HTTP/1.1\r\nProxy-Authorization: Basic Zm9v\r\nSet-Cookie: a=b\r\nX-Trace: 7\r\n\r\npassword=hunter2";
        let s = r.sample(head, 1000);
        assert!(!s.contains("Zm9v") && !s.contains("a=b") && !s.contains("hunter2"), "{s}");
        assert!(s.contains("Proxy-Authorization: <redacted>\r\n") && s.contains("X-Trace: 7"), "{s}");
        assert!(s.ends_with("<body redacted>"), "{s}");
        let s = r.sample(b"GET /authorization-docs?cookie=1 HTTP/1.1", 1000);
        assert!(s.contains("/authorization-docs?cookie=1"), "no `:` after the name: kept: {s}");
        assert_eq!(r.sample(b"abcdef", 3), "abc");
    }

    #[test]
    fn secret_query_values_never_show() {
        let r = Redactor::default().with_queries(&["token".to_owned()]);
        let s =
            r.sample(br#"{"url":"/a?x=1&token=s3cret&y=2","b":"/b?token=t2#f","c":"/c?mytoken=keep"}"#, 1000);
        assert!(!s.contains("s3cret") && !s.contains("t2"), "{s}");
        assert!(s.contains("/a?x=1&token=<redacted>&y=2") && s.contains("/b?token=<redacted>#f"), "{s}");
        assert!(s.contains("mytoken=keep"), "only the parameter named: {s}");
    }
}
