//! Response comparison (`[compare]`, issue 13), the part that says where two responses
//! differ: field by field for JSON bodies and for gRPC answers (their messages read as JSON,
//! [`crate::protobuf`], and their `grpc-status`), by length and content hash for others. Field
//! names are [`reprise_proto::fields`]'s, so the dispatcher's reports and the job's
//! `ignore` patterns speak of the same fields.
//!
//! The executor's [`crate::executor`] compare part calls it once per compared request (see
//! docs/design.md, "Response comparison").

use reprise_proto::compare::cut;
use reprise_proto::fields::{self, FieldPattern, JsonPath};
use serde_json::Value;

use reprise_proto::expected::{digest, fnv_start, fnv1a};

use crate::answer::{Answer, Keep};

/// How the bodies of a request's answers are read.
#[derive(Debug, Clone, Default)]
pub enum Reading {
    /// As JSON, when they are.
    #[default]
    Json,
    /// As gRPC messages: by the output type of the call's method, or by field number.
    Grpc(Option<prost_reflect::MessageDescriptor>),
}

/// The field a gRPC answer's status is compared as.
pub const GRPC_STATUS: &str = "header:grpc-status";

/// One field that differs, with an example of each side (`None`: the field is missing
/// there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// What an example of a secret header's value shows.
pub const REDACTED: &str = "(redacted)";

/// Headers whose values never appear in a report.
fn is_secret(name: &str) -> bool {
    ["authorization", "proxy-authorization", "cookie", "set-cookie"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
}

/// Appends to `out` where answer `right` differs from answer `left`: the status, each kept
/// header, and the body ([`bodies`]; by length and hash alone when either was longer than
/// `max_body`). Returns whether one was.
pub fn answers(
    left: &Answer,
    right: &Answer,
    keep: &Keep,
    how: &Reading,
    ignore: &[FieldPattern],
    out: &mut Vec<Difference>,
) -> bool {
    answers_against(left, None, right, keep, how, ignore, out)
}

/// The live comparison: where the candidate `c` differs from the primary `p` into
/// `differing`, where the secondary `s` does into `noise` ([`answers`] twice, the primary's
/// body parsed once for both). Returns whether a body was longer than `max_body`.
#[allow(clippy::too_many_arguments)] // the three answers, and how to read them
pub fn live(
    p: &Answer,
    c: &Answer,
    s: &Answer,
    keep: &Keep,
    how: &Reading,
    ignore: &[FieldPattern],
    differing: &mut Vec<Difference>,
    noise: &mut Vec<Difference>,
) -> bool {
    let base = (!p.over_max_body(keep)).then(|| Body::of(&p.body, how));
    let over = answers_against(p, base.as_ref(), c, keep, how, ignore, differing);
    answers_against(p, base.as_ref(), s, keep, how, ignore, noise) | over
}

/// [`answers`], with `left`'s body already parsed when `parsed` is given.
fn answers_against(
    left: &Answer,
    parsed: Option<&Body<'_>>,
    right: &Answer,
    keep: &Keep,
    how: &Reading,
    ignore: &[FieldPattern],
    out: &mut Vec<Difference>,
) -> bool {
    let kept = |field: &str| !ignore.iter().any(|p| p.covers(field));
    if left.status != right.status && kept("status") {
        out.push(Difference {
            field: "status".into(),
            left: Some(left.status.to_string()),
            right: Some(right.status.to_string()),
        });
    }
    // A gRPC answer's status is its trailer's, compared when both sides have one (a
    // recording that kept no trailers cannot say) and the job does not list it itself.
    if let (Some(l), Some(r)) = (left.grpc_status, right.grpc_status)
        && l != r
        && kept(GRPC_STATUS)
        && !keep.headers.iter().any(|h| h == "grpc-status")
    {
        out.push(Difference {
            field: GRPC_STATUS.into(),
            left: Some(l.to_string()),
            right: Some(r.to_string()),
        });
    }
    for name in &keep.headers {
        let value = |a: &Answer| a.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let (l, r) = (value(left), value(right));
        let field = fields::header(name);
        if l != r && kept(&field) {
            // A secret's values are compared, never kept as examples.
            let shown = |v: Option<String>| if is_secret(name) { v.map(|_| REDACTED.to_owned()) } else { v };
            out.push(Difference { field, left: shown(l), right: shown(r) });
        }
    }
    let over = left.over_max_body(keep) || right.over_max_body(keep);
    if over {
        if (left.length, left.hash()) != (right.length, right.hash()) && kept("body") {
            out.push(Difference {
                field: "body".into(),
                left: Some(digest(left.length, left.hash())),
                right: Some(digest(right.length, right.hash())),
            });
        }
    } else {
        let own;
        let left = match parsed {
            Some(body) => body,
            None => {
                own = Body::of(&left.body, how);
                &own
            }
        };
        diff_bodies(left, &Body::of(&right.body, how), ignore, out);
    }
    over
}

/// A body with its JSON parse (`None`: not JSON, or not gRPC messages that decode), made
/// once however many diffs read it.
struct Body<'a> {
    bytes: &'a [u8],
    json: Option<Value>,
}

impl<'a> Body<'a> {
    fn of(bytes: &'a [u8], how: &Reading) -> Self {
        let json = match how {
            Reading::Json => serde_json::from_slice(bytes).ok(),
            Reading::Grpc(schema) => crate::protobuf::grpc_body(bytes, schema.as_ref()),
        };
        Body { bytes, json }
    }
}

/// Appends to `out` the fields where body `left` and body `right` differ, each field once
/// however many elements of a list differ under it, leaving out what `ignore` covers.
/// Bodies that are not both JSON are one field, `body`, compared by length and a hash of
/// their bytes.
#[cfg(test)]
pub fn bodies(left: &[u8], right: &[u8], ignore: &[FieldPattern], out: &mut Vec<Difference>) {
    diff_bodies(&Body::of(left, &Reading::Json), &Body::of(right, &Reading::Json), ignore, out);
}

fn diff_bodies(left: &Body<'_>, right: &Body<'_>, ignore: &[FieldPattern], out: &mut Vec<Difference>) {
    match (&left.json, &right.json) {
        (Some(l), Some(r)) => {
            let start = out.len();
            walk(&mut JsonPath::root(), Some(l), Some(r), ignore, out, start);
        }
        _ if left.bytes == right.bytes => {}
        _ => {
            if !ignore.iter().any(|p| p.covers("body")) {
                out.push(Difference {
                    field: "body".into(),
                    left: Some(digest_of(left.bytes)),
                    right: Some(digest_of(right.bytes)),
                });
            }
        }
    }
}

/// A body that is not JSON, as its report shows it: its length and a hash.
fn digest_of(body: &[u8]) -> String {
    digest(body.len() as u64, fnv1a(fnv_start(), body))
}

/// Compares `l` and `r` at `path`; differences found since `start` are this body's.
fn walk(
    path: &mut JsonPath,
    l: Option<&Value>,
    r: Option<&Value>,
    ignore: &[FieldPattern],
    out: &mut Vec<Difference>,
    start: usize,
) {
    if ignore.iter().any(|p| p.covers(path.as_str())) {
        return;
    }
    match (l, r) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for (k, v) in a {
                let back = path.key(k);
                walk(path, Some(v), b.get(k), ignore, out, start);
                path.truncate(back);
            }
            for (k, v) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                let back = path.key(k);
                walk(path, None, Some(v), ignore, out, start);
                path.truncate(back);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            let back = path.element();
            for i in 0..a.len().max(b.len()) {
                walk(path, a.get(i), b.get(i), ignore, out, start);
            }
            path.truncate(back);
        }
        (l, r) if l == r => {}
        (l, r) => {
            // Each field once per body: the first differing element gives the example.
            if !out[start..].iter().any(|d| d.field == path.as_str()) {
                out.push(Difference {
                    field: path.as_str().to_owned(),
                    left: l.map(sample),
                    right: r.map(sample),
                });
            }
        }
    }
}

/// A value as compact JSON, cut short for the report.
fn sample(v: &Value) -> String {
    cut(&v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(l: &str, r: &str, ignore: &[&str]) -> Vec<(String, Option<String>, Option<String>)> {
        let ignore: Vec<FieldPattern> =
            ignore.iter().map(|p| FieldPattern::parse(p).expect("pattern")).collect();
        let mut out = Vec::new();
        bodies(l.as_bytes(), r.as_bytes(), &ignore, &mut out);
        out.into_iter().map(|d| (d.field, d.left, d.right)).collect()
    }

    fn d(field: &str, l: Option<&str>, r: Option<&str>) -> (String, Option<String>, Option<String>) {
        (field.into(), l.map(Into::into), r.map(Into::into))
    }

    #[test]
    fn json_bodies_differ_by_field_with_indexes_normalised() {
        let left =
            r#"{"id":1,"items":[{"id":7,"price":10},{"id":8,"price":20}],"meta":{"at":"x"},"gone":true}"#;
        let right =
            r#"{"id":1,"items":[{"id":9,"price":10},{"id":8,"price":25}],"meta":{"at":"y"},"new":null}"#;
        assert_eq!(
            diff(left, right, &[]),
            // In key order (serde_json's maps are sorted), left's keys then right's new ones.
            vec![
                d("$.gone", Some("true"), None),
                d("$.items[*].id", Some("7"), Some("9")),
                d("$.items[*].price", Some("20"), Some("25")),
                d("$.meta.at", Some("\"x\""), Some("\"y\"")),
                d("$.new", None, Some("null")),
            ]
        );
        // Keys in another order, the same values: no difference.
        assert_eq!(diff(r#"{"a":1,"b":[1,2]}"#, r#"{"b":[1,2],"a":1}"#, &[]), vec![]);
        // A longer list: the extra element is missing on the left.
        assert_eq!(diff("[1]", "[1,2]", &[]), vec![d("$[*]", None, Some("2"))]);
        // Another type at the same place.
        assert_eq!(
            diff(r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#, &[]),
            vec![d("$.a", Some(r#"{"b":1}"#), Some("[1]"))]
        );
    }

    #[test]
    fn ignore_removes_a_field_and_what_is_under_it() {
        let left = r#"{"ts":1,"items":[{"id":7,"price":10}],"meta":{"took":3,"host":"a"}}"#;
        let right = r#"{"ts":2,"items":[{"id":9,"price":11}],"meta":{"took":4,"host":"b"}}"#;
        assert_eq!(
            diff(left, right, &["$.ts", "$.items[0].id", "$.meta"]),
            vec![d("$.items[*].price", Some("10"), Some("11"))]
        );
    }

    #[test]
    fn other_bodies_differ_as_one_field_by_length_and_hash() {
        assert_eq!(diff("same", "same", &[]), vec![]);
        let got = diff("<p>a</p>", "<p>b</p>", &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "body");
        assert_ne!(got[0].1, got[0].2);
        assert!(got[0].1.as_deref().is_some_and(|s| s.starts_with("8 bytes, fnv1a ")), "{got:?}");
        // JSON on one side only is a body difference too.
        assert_eq!(diff("{}", "oops", &[]).first().map(|d| d.0.as_str()), Some("body"));
        assert_eq!(diff("<a>", "<b>", &["body"]), vec![]);
    }

    #[test]
    fn answers_differ_by_status_kept_headers_and_body() {
        let keep =
            Keep { headers: vec!["etag".into(), "content-type".into(), "set-cookie".into()], max_body: 64 };
        let answer = |status: u16, etag: &str, body: &str| {
            let mut a = Answer::default();
            let head = format!("HTTP/1.1 {status} X\r\nETag: {etag}\r\nSet-Cookie: s={etag}\r\n\r\n");
            a.take_head(&keep, status, head.as_bytes());
            a.take_body(&keep, body.as_bytes());
            a
        };
        let (l, r) = (answer(200, "a", r#"{"x":1,"t":5}"#), answer(500, "b", r#"{"x":2,"t":6}"#));
        let mut out = Vec::new();
        let ignore = [FieldPattern::parse("$.t").expect("pattern")];
        assert!(!answers(&l, &r, &keep, &Reading::Json, &ignore, &mut out));
        let got: Vec<_> =
            out.iter().map(|d| (d.field.as_str(), d.left.as_deref(), d.right.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("status", Some("200"), Some("500")),
                ("header:etag", Some("a"), Some("b")),
                ("header:set-cookie", Some(REDACTED), Some(REDACTED)),
                ("$.x", Some("1"), Some("2"))
            ]
        );
        // Past max_body: one field, by length and hash; the same long body is no difference.
        let long = "y".repeat(100);
        let (l, r) = (answer(200, "a", &long), answer(200, "a", &format!("{long}z")));
        out.clear();
        assert!(answers(&l, &r, &keep, &Reading::Json, &[], &mut out));
        assert_eq!(out.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(), ["body"]);
        out.clear();
        assert!(answers(&l, &answer(200, "a", &long), &keep, &Reading::Json, &[], &mut out));
        assert_eq!(out, vec![]);
    }

    /// The live comparison finds what comparing the primary with each of the others does,
    /// whatever the bodies: JSON, text, over `max_body` on either side.
    #[test]
    fn live_is_the_two_comparisons_with_the_primary() {
        let keep = Keep { headers: vec!["etag".into()], max_body: 16 };
        let answer = |status: u16, body: &str| {
            let mut a = Answer::default();
            a.take_head(&keep, status, format!("HTTP/1.1 {status} X\r\nETag: {body}\r\n\r\n").as_bytes());
            a.take_body(&keep, body.as_bytes());
            a
        };
        let bodies = [r#"{"a":1}"#, r#"{"a":2,"b":[1]}"#, "text", "a body longer than sixteen", r#"{"a":1}"#];
        for p in bodies {
            for c in bodies {
                for s in bodies {
                    let (p, c, s) = (answer(200, p), answer(201, c), answer(200, s));
                    let (mut d1, mut n1, mut d2, mut n2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    let over = answers(&p, &c, &keep, &Reading::Json, &[], &mut d1)
                        | answers(&p, &s, &keep, &Reading::Json, &[], &mut n1);
                    assert_eq!(live(&p, &c, &s, &keep, &Reading::Json, &[], &mut d2, &mut n2), over);
                    assert_eq!((d1, n1), (d2, n2));
                }
            }
        }
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = format!("\"{}\"", "é".repeat(100));
        let got = diff(&format!("{{\"a\":{long}}}"), r#"{"a":1}"#, &[]);
        let left = got[0].1.as_deref().expect("left");
        assert!(
            left.len() <= reprise_proto::compare::SAMPLE_BYTES + '…'.len_utf8() && left.ends_with('…'),
            "{left}"
        );
    }
}
