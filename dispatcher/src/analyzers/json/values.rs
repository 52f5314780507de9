//! How the json analyzer reads one JSON value: a picked field as a typed value ([`Val`]),
//! a string borrowed from the line where it holds no escapes ([`Str`]), the headers object
//! ([`Headers`]). Values of the wrong kind are read to their end and reported as such, so a
//! bad field is that field's fault and parsing goes on.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::is_header_name;

/// A field's value as read in the one pass: strings and numbers kept, objects and arrays
/// skipped (only their kind is kept, to say what was wrong).
#[derive(Debug, PartialEq)]
pub(super) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Null,
    Object,
    Array,
}

impl<'a> Val<'a> {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub(super) fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a malformed-input sample shows it.
    pub(super) fn describe(&self) -> String {
        match self {
            Val::Str(s) => format!("{s:?}"),
            Val::Int(i) => i.to_string(),
            Val::Uint(u) => u.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Null => "null".into(),
            Val::Object => "an object".into(),
            Val::Array => "an array".into(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Val<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
                Ok(Val::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
                Ok(Val::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
                Ok(Val::Uint(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
                Ok(Val::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
                Ok(Val::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Val::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Val::Array)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, borrowed from the input when it has no escapes.
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Headers: an object of strings, or of arrays of strings for repeated headers; order kept.
/// Names and values are borrowed from the line where they hold no escapes.
pub(super) struct Headers<'a>(pub(super) Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> de::Deserialize<'de> for Headers<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of header names to a string or an array of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Str(name)) = map.next_key::<Str<'de>>()? {
                    if !is_header_name(&name) {
                        return Err(de::Error::custom(format!("`{name}` is not a header name")));
                    }
                    map.next_value_seed(Values { name, out: &mut out })?;
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One header's value or values, each added to the list under the header's name.
struct Values<'a, 'de> {
    name: Cow<'de, str>,
    out: &'a mut Vec<(Cow<'de, str>, Cow<'de, str>)>,
}

impl<'de> DeserializeSeed<'de> for Values<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Values<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.out.push((self.name, Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push((self.name, Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Str(v)) = seq.next_element::<Str<'de>>()? {
            self.out.push((self.name.clone(), v));
        }
        Ok(())
    }
}
