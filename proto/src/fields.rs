//! Names of the parts of a response that response comparison (`[compare]`, issue 13) counts
//! differences under, and the `ignore` patterns that remove them. Shared by the dispatcher,
//! which validates a job's patterns and reports per field, and the replayers, which compare.
//!
//! - `status`: the status code.
//! - `header:NAME`: a header, by its name in lower case.
//! - `body`: a body that is not JSON, compared by length and content hash.
//! - `$`, `$.a.b`, `$.items[*].price`, `$['odd key']`: a field of a JSON body, or of a gRPC
//!   answer's messages read as JSON (`$.1.3[*].2`, fields by number). Array indexes
//!   are normalised to `[*]`, so the elements of a list count under one name, and a pattern
//!   written with an index (`$.items[0].id`) means every element.
//!
//! A pattern removes the field it names and everything under it: `$.meta` ignores
//! `$.meta.took` too.

use std::fmt::Write as _;

/// A field name or `ignore` pattern that cannot be read: why, for a job-file error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadField(String);

/// An `ignore` pattern, in its normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPattern(String);

impl FieldPattern {
    /// Reads a pattern as a job file writes it: `status`, `header:NAME`, `body`, or a JSON
    /// path from `$`.
    pub fn parse(text: &str) -> Result<FieldPattern, BadField> {
        let text = text.trim();
        if text == "status" || text == "body" {
            return Ok(FieldPattern(text.to_owned()));
        }
        if let Some(name) = text.strip_prefix("header:") {
            let name = name.trim();
            if name.is_empty() || !crate::token::is_token(name.as_bytes()) {
                return Err(BadField(format!("`{text}`: `header:` must be followed by a header name")));
            }
            return Ok(FieldPattern(format!("header:{}", name.to_ascii_lowercase())));
        }
        let Some(rest) = text.strip_prefix('$') else {
            return Err(BadField(format!(
                "`{text}` is not a field: write `status`, `body`, `header:NAME` or a JSON path such as `$.items[*].id`"
            )));
        };
        let mut out = String::from("$");
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let key = &r[..end];
                if key.is_empty() {
                    return Err(BadField(format!("`{text}`: an empty key after `.`")));
                }
                push_key(&mut out, key);
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = closing(r).ok_or_else(|| BadField(format!("`{text}`: a `[` is not closed")))?;
                let inside = r[..end].trim();
                if inside == "*" || (!inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit())) {
                    out.push_str("[*]");
                } else if let Some(key) = quoted(inside) {
                    push_key(&mut out, &key);
                } else {
                    return Err(BadField(format!(
                        "`{text}`: `[{inside}]` is neither an index, `*`, nor a quoted key"
                    )));
                }
                rest = &r[end + 1..];
            } else {
                return Err(BadField(format!("`{text}`: expected `.` or `[` at `{rest}`")));
            }
        }
        Ok(FieldPattern(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `field` (a normal-form name, as [`JsonPath`] and [`header`] write them) is
    /// this pattern's field or under it.
    pub fn covers(&self, field: &str) -> bool {
        match field.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with(['.', '[']),
            None => false,
        }
    }
}

/// The name a header's field is counted under.
pub fn header(name: &str) -> String {
    format!("header:{}", name.to_ascii_lowercase())
}

/// A JSON path being walked, in normal form: keys as `.key` (or `['key']` when the key is
/// not a plain word), every array index as `[*]`.
#[derive(Debug, Clone, Default)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn root() -> JsonPath {
        JsonPath(String::from("$"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Goes into `key`; returns the length to go back to with [`JsonPath::truncate`].
    pub fn key(&mut self, key: &str) -> usize {
        let at = self.0.len();
        push_key(&mut self.0, key);
        at
    }

    /// Goes into an element of an array.
    pub fn element(&mut self) -> usize {
        let at = self.0.len();
        self.0.push_str("[*]");
        at
    }

    pub fn truncate(&mut self, at: usize) {
        self.0.truncate(at);
    }
}

fn push_key(out: &mut String, key: &str) {
    // Keys of digits alone are plain too: a protobuf field read without its schema is named
    // by its number (`$.1.3[*].2`); an index is always written `[*]`.
    let plain = !key.is_empty()
        && (!key.starts_with(|c: char| c.is_ascii_digit()) || key.bytes().all(|b| b.is_ascii_digit()))
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        out.push('.');
        out.push_str(key);
    } else {
        out.push_str("['");
        for c in key.chars() {
            match c {
                '\'' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push_str("']");
    }
}

/// Where the `]` closing a bracket that starts `r` is, quotes respected.
fn closing(r: &str) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in r.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            (None, _) => {}
        }
    }
    None
}

/// The key of `'key'` or `"key"`, escapes undone.
fn quoted(inside: &str) -> Option<String> {
    let q = inside.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = inside.strip_prefix(q)?.strip_suffix(q)?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else if c == q {
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(text: &str) -> String {
        FieldPattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).0
    }

    #[test]
    fn protobuf_field_numbers_are_plain_keys() {
        let p = FieldPattern::parse("$.1.3[0].2").expect("a path");
        assert_eq!(p.as_str(), "$.1.3[*].2");
        let mut path = JsonPath::root();
        path.key("1");
        path.element();
        path.key("2x");
        assert_eq!(path.as_str(), "$.1[*]['2x']");
        assert!(p.covers("$.1.3[*].2.7"));
    }

    #[test]
    fn patterns_take_their_normal_form() {
        assert_eq!(normal("status"), "status");
        assert_eq!(normal(" body "), "body");
        assert_eq!(normal("header:Date"), "header:date");
        assert_eq!(normal("$"), "$");
        assert_eq!(normal("$.timestamp"), "$.timestamp");
        assert_eq!(normal("$.items[*].id"), "$.items[*].id");
        assert_eq!(normal("$.items[3].id"), "$.items[*].id");
        assert_eq!(normal("$['items'][0]['price']"), "$.items[*].price");
        assert_eq!(normal("$['odd key'].x"), "$['odd key'].x");
        assert_eq!(normal(r#"$["it's"]"#), r"$['it\'s']");
        assert_eq!(normal("$.a[*][*]"), "$.a[*][*]");
        assert_eq!(normal("$['1st']"), "$['1st']");
    }

    #[test]
    fn bad_patterns_say_what_to_write() {
        for (text, says) in [
            ("timestamp", "JSON path such as"),
            ("header:", "header name"),
            ("header:a b", "header name"),
            ("$.", "empty key"),
            ("$.a[", "not closed"),
            ("$.a[x]", "neither an index"),
            ("$x", "expected `.` or `[`"),
            ("$.a..b", "empty key"),
        ] {
            let e = FieldPattern::parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    /// A path walked through a body has the same name as the pattern written for it.
    #[test]
    fn walked_paths_meet_their_patterns_and_what_is_under_them() {
        let mut p = JsonPath::root();
        p.key("items");
        let back = p.element();
        p.key("id");
        assert_eq!(p.as_str(), "$.items[*].id");
        let id = FieldPattern::parse("$.items[0].id").expect("pattern");
        assert!(id.covers(p.as_str()));
        p.key("x");
        assert!(id.covers(p.as_str()), "under the field");
        p.truncate(back);
        p.key("idx");
        assert!(!id.covers(p.as_str()), "a longer key is another field");
        let mut q = JsonPath::root();
        q.key("odd key");
        assert!(FieldPattern::parse("$['odd key']").expect("pattern").covers(q.as_str()));
        assert!(FieldPattern::parse("$").expect("root").covers("$.anything"));
        assert!(FieldPattern::parse("header:DATE").expect("header").covers(&header("Date")));
        assert!(!FieldPattern::parse("status").expect("status").covers("statuses"));
    }
}
