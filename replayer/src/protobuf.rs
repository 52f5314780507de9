//! gRPC answers as JSON, so response comparison reads them field by field as it reads JSON
//! bodies (the same paths, `ignore` patterns, noise and diff rates).
//!
//! Without a schema a message is read from the protobuf wire format alone: each field is
//! named by its number (`$.1.3[*].2`), a field seen more than once is a list, varints and
//! fixed-width numbers are numbers, and a length-delimited field is read as `protoc
//! --decode_raw` reads it: a message if its bytes are one, else text if they are UTF-8,
//! else base64. With `[compare] protoset` (a descriptor set, as `protoc
//! --descriptor_set_out` or `buf build -o` write it) the method's output type names the
//! fields, through prost-reflect, as proto3's JSON mapping does (with the .proto's own
//! field names, and 64-bit integers as numbers). A body of one message is that message; of several (server streaming),
//! the list of them.
//!
//! The schema-less reader is written here: prost-reflect and prost decode only with a
//! descriptor, and a raw reader of the wire format is some forty lines.

use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

/// Nested messages read at most this deep (a hostile answer cannot recurse without end).
const MAX_DEPTH: usize = 64;

/// How a job's gRPC answers are read: by field number, or by the descriptors of a protoset.
#[derive(Debug, Default)]
pub struct Schemas {
    pool: Option<DescriptorPool>,
}

impl Schemas {
    /// The protoset's descriptors (empty: none, fields by number).
    pub fn new(protoset: &[u8]) -> Result<Schemas, prost_reflect::DescriptorError> {
        if protoset.is_empty() {
            return Ok(Schemas::default());
        }
        Ok(Schemas { pool: Some(DescriptorPool::decode(protoset)?) })
    }

    /// The output message of the gRPC method at `path` (`/package.Service/Method`), if the
    /// protoset has it.
    pub fn output_of(&self, path: &[u8]) -> Option<MessageDescriptor> {
        let path = std::str::from_utf8(path).ok()?;
        let path = path.split('?').next()?;
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let service = self.pool.as_ref()?.get_service_by_name(service)?;
        service.methods().find(|m| m.name() == method).map(|m| m.output())
    }
}

/// A whole gRPC body as JSON, its messages read by `schema` or by field number; `None` when
/// the body is not whole length-prefixed messages, or a message does not decode.
pub fn grpc_body(body: &[u8], schema: Option<&MessageDescriptor>) -> Option<Value> {
    let mut messages = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?) as usize;
        let message = rest.get(5..5usize.checked_add(len)?)?;
        messages.push(match schema {
            Some(desc) => by_schema(message, desc)?,
            None => Value::Object(message_fields(message, 0)?),
        });
        rest = &rest[5 + len..];
    }
    Some(if messages.len() == 1 { messages.pop()? } else { Value::Array(messages) })
}

fn by_schema(message: &[u8], desc: &MessageDescriptor) -> Option<Value> {
    let message = DynamicMessage::decode(desc.clone(), message).ok()?;
    let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false);
    message.serialize_with_options(serde_json::value::Serializer, &options).ok()
}

/// The fields of a message read without its schema; `None` when `bytes` is not one.
fn message_fields(mut bytes: &[u8], depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut fields = Map::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return None;
        }
        let value = match key & 7 {
            0 => Value::from(varint(&mut bytes)?),
            1 => Value::from(u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?)),
            5 => Value::from(u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?)),
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                length_delimited(take(&mut bytes, len)?, depth)
            }
            // Groups (3, 4) are long deprecated; 6 and 7 are no wire type.
            _ => return None,
        };
        match fields.entry(number.to_string()) {
            serde_json::map::Entry::Vacant(v) => {
                v.insert(value);
            }
            serde_json::map::Entry::Occupied(mut o) => match o.get_mut() {
                Value::Array(list) => list.push(value),
                first => {
                    let first = first.take();
                    o.insert(Value::Array(vec![first, value]));
                }
            },
        }
    }
    Some(fields)
}

/// A length-delimited field's value: a message, else text, else base64.
fn length_delimited(bytes: &[u8], depth: usize) -> Value {
    if !bytes.is_empty()
        && let Some(fields) = message_fields(bytes, depth + 1)
    {
        return Value::Object(fields);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn messages_read_without_a_schema_name_fields_by_number() {
        // 1: "item:a" (text), 2: 7, 3: {1: 1}, 3: {1: 2} (repeated), 4: fixed32 5, 5: bytes.
        let m = b"\x0a\x06item:a\x10\x07\x1a\x02\x08\x01\x1a\x02\x08\x02\x25\x05\x00\x00\x00\x2a\x02\xff\xfe";
        let v = grpc_body(&framed(&[m]), None).expect("decodes");
        assert_eq!(
            v,
            serde_json::json!({"1": "item:a", "2": 7, "3": [{"1": 1}, {"1": 2}], "4": 5, "5": "//4="})
        );
        let two = grpc_body(&framed(&[b"\x08\x01", b""]), None).expect("decodes");
        assert_eq!(two, serde_json::json!([{"1": 1}, {}]), "several messages are a list");
        assert_eq!(grpc_body(&framed(&[b"\x08"]), None), None, "a varint cut short");
        assert_eq!(grpc_body(&framed(&[b"\x0b\x01"]), None), None, "a group");
        assert_eq!(grpc_body(&[0, 0, 0, 0, 9, 1], None), None, "a length past the body");
    }

    #[test]
    fn hostile_messages_never_panic_nor_recurse_without_end() {
        let mut deep = Vec::new();
        for _ in 0..200 {
            let mut outer = vec![0x0a];
            let mut len = deep.len();
            loop {
                let b = (len & 0x7f) as u8;
                len >>= 7;
                outer.push(if len > 0 { b | 0x80 } else { b });
                if len == 0 {
                    break;
                }
            }
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        assert!(grpc_body(&framed(&[&deep]), None).is_some(), "too deep is read as bytes, not refused");
        let mut state = 7u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            let _ = grpc_body(&framed(&[&bytes[..(state % 9) as usize]]), None);
        }
    }
}
