//! A json body's field set or removed by JSON pointer (RFC 6901), the rest of the body kept
//! as recorded: only the objects and arrays on the pointer's way are written anew (compact,
//! their members in their order); every other value keeps its bytes, so numbers a float
//! would round (`1.10`, 20-digit ids) and strings' escapes stay as they were.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// What to do at a pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set to this json text (or add the field; at an array's length or `-`, append).
    Set(String),
    Remove,
}

/// Why an edit could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The body is not json (not UTF-8, not parsable).
    NotJson,
    /// A field or element on the way to the one to set is missing, or is not an object or
    /// array.
    NoParent,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotJson => "body is not json",
            Failure::NoParent => "the json pointer's parent is missing",
        }
    }
}

/// A pointer's tokens, unescaped (`~1` is `/`, `~0` is `~`); `""` (the whole body) has none.
pub fn tokens(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

/// `doc` with `op` applied at `tokens`; `Ok(None)` when that changes nothing (a field to
/// remove is not there).
pub fn edit(doc: &[u8], tokens: &[String], op: &Op) -> Result<Option<String>, Failure> {
    if let ([], Op::Set(v)) = (tokens, op) {
        return Ok(Some(v.clone()));
    }
    let doc = std::str::from_utf8(doc).map_err(|_| Failure::NotJson)?;
    let node: Node = serde_json::from_str(doc).map_err(|_| Failure::NotJson)?;
    edit_node(node, tokens, op)
}

/// `doc` with every op applied in turn: the document's top level is parsed once for all of
/// them (each op then parses only the member on its way). The new document when an op
/// changed it, and the first failure; `Err` only when `doc` is not json.
pub fn edit_all(doc: &[u8], ops: &[(Vec<String>, Op)]) -> Result<(Option<String>, Option<Failure>), Failure> {
    if ops.iter().any(|(tokens, _)| tokens.is_empty()) {
        // A whole new body, then edits of it: one at a time.
        let (mut out, mut failed): (Option<String>, Option<Failure>) = (None, None);
        for (tokens, op) in ops {
            let current = out.as_deref().map_or(doc, str::as_bytes);
            match edit(current, tokens, op) {
                Ok(Some(new)) => out = Some(new),
                Ok(None) => {}
                Err(Failure::NotJson) if out.is_none() => return Err(Failure::NotJson),
                Err(f) => {
                    failed.get_or_insert(f);
                }
            }
        }
        return Ok((out, failed));
    }
    let text = simdutf8::basic::from_utf8(doc).map_err(|_| Failure::NotJson)?;
    let mut node: Node = serde_json::from_str(text).map_err(|_| Failure::NotJson)?;
    let (mut changed, mut failed) = (false, None);
    for (tokens, op) in ops {
        match apply(&mut node, tokens, op) {
            Ok(c) => changed |= c,
            Err(f) => {
                failed.get_or_insert(f);
            }
        }
    }
    let out = match (changed, &node) {
        (true, Node::Object(members)) => Some(write_object(members)),
        (true, Node::Array(items)) => Some(write_array(items)),
        _ => None,
    };
    Ok((out, failed))
}

/// Applies `op` at `tokens` (at least one) inside `node`; whether that changed it.
fn apply(node: &mut Node<'_>, tokens: &[String], op: &Op) -> Result<bool, Failure> {
    let Some((first, rest)) = tokens.split_first() else { return Ok(false) };
    let missing = || if matches!(op, Op::Remove) { Ok(false) } else { Err(Failure::NoParent) };
    match node {
        Node::Object(members) => {
            let found = members.iter().rposition(|(k, _)| k == first);
            match (found, rest.is_empty(), op) {
                (Some(i), true, Op::Set(v)) => members[i].1 = Cow::Owned(v.clone()),
                (Some(_), true, Op::Remove) => members.retain(|(k, _)| k != first),
                (None, true, Op::Set(v)) => members.push((Cow::Owned(first.clone()), Cow::Owned(v.clone()))),
                (Some(i), false, _) => match edit(members[i].1.as_bytes(), rest, op)? {
                    Some(v) => members[i].1 = Cow::Owned(v),
                    None => return Ok(false),
                },
                (None, _, _) => return missing(),
            }
            Ok(true)
        }
        Node::Array(items) => {
            let Some(i) = index(first, items.len()) else { return missing() };
            match (rest.is_empty(), op) {
                (true, Op::Set(v)) if i == items.len() => items.push(Cow::Owned(v.clone())),
                (true, Op::Set(v)) => items[i] = Cow::Owned(v.clone()),
                (_, _) if i == items.len() => return missing(),
                (true, Op::Remove) => {
                    items.remove(i);
                }
                (false, _) => match edit(items[i].as_bytes(), rest, op)? {
                    Some(v) => items[i] = Cow::Owned(v),
                    None => return Ok(false),
                },
            }
            Ok(true)
        }
        Node::Scalar => missing(),
    }
}

/// An array index token: `-` (the end), or a number without leading zeros up to `len`.
fn index(token: &str, len: usize) -> Option<usize> {
    let i = if token == "-" {
        len
    } else if token == "0" || !token.starts_with('0') {
        token.parse::<usize>().ok()?
    } else {
        return None;
    };
    (i <= len).then_some(i)
}

fn edit_node(mut node: Node<'_>, tokens: &[String], op: &Op) -> Result<Option<String>, Failure> {
    if tokens.is_empty() {
        // Validation refuses removing the whole body.
        return Ok(match op {
            Op::Set(v) => Some(v.clone()),
            Op::Remove => None,
        });
    }
    Ok(match (apply(&mut node, tokens, op)?, &node) {
        (true, Node::Object(members)) => Some(write_object(members)),
        (true, Node::Array(items)) => Some(write_array(items)),
        _ => None,
    })
}

fn write_object(members: &[(Cow<'_, str>, Cow<'_, str>)]) -> String {
    // `"k":v,` for each, less the last comma, and the braces: the exact size when no name
    // held an escape, so the body's shared bytes need no allocation of their own.
    let mut out =
        String::with_capacity(members.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 1);
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match k {
            // Borrowed from the document: it held no escape, so it is written as it was.
            Cow::Borrowed(k) => {
                out.push('"');
                out.push_str(k);
                out.push('"');
            }
            // invariant: serializing a string cannot fail.
            Cow::Owned(k) => out.push_str(&serde_json::to_string(k).unwrap_or_default()),
        }
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

fn write_array(items: &[Cow<'_, str>]) -> String {
    let mut out = String::with_capacity(items.iter().map(|v| v.len() + 1).sum::<usize>() + 1);
    out.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v);
    }
    out.push(']');
    out
}

/// One level of a json document: an object's members or an array's elements as the text
/// they were written as, or a scalar.
enum Node<'a> {
    Object(Vec<(Cow<'a, str>, Cow<'a, str>)>),
    Array(Vec<Cow<'a, str>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// An object's member name: borrowed from the document unless it held an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            members.push((k, Cow::Borrowed(v.get())));
        }
        Ok(Node::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            items.push(Cow::Borrowed(v.get()));
        }
        Ok(Node::Array(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(doc: &str, pointer: &str, op: Op) -> Result<Option<String>, Failure> {
        edit(doc.as_bytes(), &tokens(pointer), &op)
    }

    fn set(v: &str) -> Op {
        Op::Set(v.into())
    }

    #[test]
    fn fields_are_set_and_removed_and_the_rest_keeps_its_bytes() {
        let doc = r#"{ "id": 12345678901234567890123, "price": 1.10, "user": {"email": "a@b", "name": "\u00e9"}, "tags": ["x", "y"] }"#;
        assert_eq!(
            run(doc, "/user/email", set(r#""qa@example.com""#)),
            Ok(Some(
                r#"{"id":12345678901234567890123,"price":1.10,"user":{"email":"qa@example.com","name":"\u00e9"},"tags":["x", "y"]}"#
                    .into()
            ))
        );
        assert_eq!(
            run(doc, "/user/email", Op::Remove),
            Ok(Some(
                r#"{"id":12345678901234567890123,"price":1.10,"user":{"name":"\u00e9"},"tags":["x", "y"]}"#
                    .into()
            ))
        );
        assert_eq!(
            run(r#"{"a":1}"#, "/b", set("true")),
            Ok(Some(r#"{"a":1,"b":true}"#.into())),
            "added last"
        );
        assert_eq!(run(r#"{"a":[1,2]}"#, "/a/1", set("9")), Ok(Some(r#"{"a":[1,9]}"#.into())));
        assert_eq!(run(r#"{"a":[1,2]}"#, "/a/-", set("3")), Ok(Some(r#"{"a":[1,2,3]}"#.into())));
        assert_eq!(run(r#"{"a":[1,2]}"#, "/a/2", set("3")), Ok(Some(r#"{"a":[1,2,3]}"#.into())));
        assert_eq!(run(r#"{"a":[1,2]}"#, "/a/0", Op::Remove), Ok(Some(r#"{"a":[2]}"#.into())));
        assert_eq!(run(r#"{"a/b":1,"c~":2}"#, "/a~1b", Op::Remove), Ok(Some(r#"{"c~":2}"#.into())));
        assert_eq!(run(r#"{"c~":2}"#, "/c~0", set("3")), Ok(Some(r#"{"c~":3}"#.into())));
        assert_eq!(
            run(r#"{"a":1,"a":2}"#, "/a", set("3")),
            Ok(Some(r#"{"a":1,"a":3}"#.into())),
            "the last of a repeat"
        );
        assert_eq!(run("[1]", "", set(r#"{"new":1}"#)), Ok(Some(r#"{"new":1}"#.into())), "the whole body");
        assert_eq!(
            run(r#"{"k\"q":1}"#, "/x", set("2")),
            Ok(Some(r#"{"k\"q":1,"x":2}"#.into())),
            "an escaped name"
        );
    }

    #[test]
    fn several_edits_share_one_parse_and_report_their_first_failure() {
        let ops = [
            (tokens("/card"), Op::Remove),
            (tokens("/user/email"), set(r#""qa""#)),
            (tokens("/missing/x"), set("1")),
            (tokens("/n"), set("2")),
        ];
        let doc = br#"{"user": {"email": "a", "id": 7}, "card": {"number": "4111"}, "n": 1}"#;
        assert_eq!(
            edit_all(doc, &ops),
            Ok((Some(r#"{"user":{"email":"qa","id":7},"n":2}"#.into()), Some(Failure::NoParent)))
        );
        assert_eq!(edit_all(b"<xml/>", &ops), Err(Failure::NotJson));
        assert_eq!(edit_all(br#"{"a":1}"#, &[(tokens("/b"), Op::Remove)]), Ok((None, None)), "nothing to do");
        let root = [(tokens(""), set(r#"{"a":1}"#)), (tokens("/b"), set("2"))];
        assert_eq!(
            edit_all(b"not json", &root),
            Ok((Some(r#"{"a":1,"b":2}"#.into()), None)),
            "a new body, then edited"
        );
    }

    #[test]
    fn what_cannot_be_done_says_why_and_a_missing_field_is_nothing_to_remove() {
        assert_eq!(run("not json", "/a", set("1")), Err(Failure::NotJson));
        assert_eq!(run("{\"a\":1} trailing", "/a", set("1")), Err(Failure::NotJson));
        assert_eq!(edit(&[0xff, b'{'], &tokens("/a"), &set("1")), Err(Failure::NotJson));
        assert_eq!(run(r#"{"a":1}"#, "/x/y", set("1")), Err(Failure::NoParent));
        assert_eq!(run(r#"{"a":1}"#, "/a/y", set("1")), Err(Failure::NoParent), "a scalar has no fields");
        assert_eq!(run(r#"{"a":[1]}"#, "/a/5", set("1")), Err(Failure::NoParent));
        assert_eq!(run(r#"{"a":[1]}"#, "/a/01", set("1")), Err(Failure::NoParent), "no leading zeros");
        assert_eq!(run(r#"{"a":1}"#, "/x/y", Op::Remove), Ok(None));
        assert_eq!(run(r#"{"a":1}"#, "/b", Op::Remove), Ok(None));
        assert_eq!(run(r#"{"a":[1]}"#, "/a/1", Op::Remove), Ok(None));
        assert_eq!(run("5", "/a", Op::Remove), Ok(None));
    }
}
