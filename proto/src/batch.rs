//! Batches of records on the wire (`RecordBatch.encoded`).
//!
//! The dispatcher writes each record straight from the fields it parsed, into the batch of
//! the replayer it goes to: no `pb::Record` is built per record, and no second pass over
//! nested messages is needed for their lengths. A replayer decodes the records as slices of
//! the message it received (no copy, no allocation per field), and only when it sends it:
//! on arrival only the due offset and the endpoint are read ([`Received`]), so a record
//! waiting for its instant is 48 bytes in the queues, and a dry run never decodes the rest.
//!
//! Each record is a `pb::Record` as prost reads it, preceded by its length, with one
//! difference in form from what prost writes: the due offset and the endpoint come first and
//! are always there (even when 0), so a replayer reads them from the record's first bytes
//! without walking the rest. A record in any other field order is read too, by walking it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
    skip_field,
};

use crate::pb;

/// One record's fields, borrowed from wherever the writer holds them.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a, N, V> {
    pub due_offset_ns: i64,
    pub endpoint: u32,
    pub method: &'a [u8],
    pub path: &'a [u8],
    /// Name and value of each header, in order.
    pub headers: &'a [(N, V)],
    pub body: &'a [u8],
    pub host: &'a [u8],
}

/// Length of a `bytes` field (key, length, content); 0 for an empty one, which is left out.
fn bytes_len(v: &[u8]) -> usize {
    if v.is_empty() { 0 } else { 1 + encoded_len_varint(v.len() as u64) + v.len() }
}

fn put_bytes(tag: u32, v: &[u8], out: &mut impl BufMut) {
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(v.len() as u64, out);
        out.put_slice(v);
    }
}

/// Length of a varint field written even when 0 (tags below 16: one byte of key).
fn varint_len(v: u64) -> usize {
    1 + encoded_len_varint(v)
}

fn put_varint(tag: u32, v: u64, out: &mut impl BufMut) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> RecordRef<'_, N, V> {
    fn header_len(name: &[u8], value: &[u8]) -> usize {
        bytes_len(name) + bytes_len(value)
    }

    /// Length of the record's message (without its own length prefix).
    fn encoded_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| {
                let len = Self::header_len(n.as_ref(), v.as_ref());
                1 + encoded_len_varint(len as u64) + len
            })
            .sum();
        varint_len(self.due_offset_ns as u64)
            + bytes_len(self.method)
            + bytes_len(self.path)
            + headers
            + bytes_len(self.body)
            + bytes_len(self.host)
            + varint_len(u64::from(self.endpoint))
    }

    /// Appends the record, length-delimited, to a batch's bytes. The batch grows once by the
    /// record's length and the fields are written into that slice: writing through `BytesMut`
    /// checked its capacity at every byte of every key and length (17 % of the dispatcher's
    /// CPU in bench (a), against the zeroing this costs).
    pub fn write_to(&self, batch: &mut BytesMut) {
        let len = self.encoded_len();
        let start = batch.len();
        batch.resize(start + encoded_len_varint(len as u64) + len, 0);
        let out = &mut &mut batch[start..];
        encode_varint(len as u64, out);
        put_varint(1, self.due_offset_ns as u64, out);
        put_varint(7, u64::from(self.endpoint), out);
        put_bytes(2, self.method, out);
        put_bytes(3, self.path, out);
        for (n, v) in self.headers {
            let (n, v) = (n.as_ref(), v.as_ref());
            encode_key(4, WireType::LengthDelimited, out);
            encode_varint(Self::header_len(n, v) as u64, out);
            put_bytes(1, n, out);
            put_bytes(2, v, out);
        }
        put_bytes(5, self.body, out);
        put_bytes(6, self.host, out);
        debug_assert!(out.is_empty(), "encoded_len counts what write_to writes");
    }
}

/// A batch that cannot be read (only a dispatcher of another build could send one).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("a record's length runs past the end of its batch")]
    Truncated,
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// A record as a replayer holds it until its instant: when and under which endpoint, and
/// the rest as it came (a slice of the batch).
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub due_offset_ns: i64,
    pub endpoint: u32,
    encoded: Bytes,
}

impl Received {
    /// The whole record; its byte fields are slices of the batch.
    pub fn decode(&self) -> Result<pb::Record, BatchError> {
        Ok(pb::Record::decode(self.encoded.clone())?)
    }
}

/// The records of a batch, in order, with their due offset and endpoint read from each
/// record's head (the rest is not looked at: a record that does not decode is found when it
/// is sent). Only the batch's framing is checked here.
pub fn split(batch: pb::RecordBatch) -> Result<Vec<Received>, BatchError> {
    // The count only sizes the vector; what `encoded` holds decides.
    let mut records = Vec::with_capacity((batch.count as usize).min(batch.encoded.len()));
    let mut rest = batch.encoded;
    while rest.has_remaining() {
        let len = decode_varint(&mut rest)?;
        if len > rest.len() as u64 {
            return Err(BatchError::Truncated);
        }
        let encoded = rest.split_to(len as usize);
        let (due_offset_ns, endpoint) = head(&encoded)?;
        records.push(Received { due_offset_ns, endpoint, encoded });
    }
    Ok(records)
}

/// The due offset and endpoint of one record: from its first two fields as
/// [`RecordRef::write_to`] puts them, else by walking every field.
fn head(mut record: &[u8]) -> Result<(i64, u32), BatchError> {
    let mut first = record;
    if let (Ok((1, WireType::Varint)), Ok(due)) = (decode_key(&mut first), decode_varint(&mut first))
        && let (Ok((7, WireType::Varint)), Ok(endpoint)) = (decode_key(&mut first), decode_varint(&mut first))
    {
        return Ok((due as i64, endpoint as u32));
    }
    let (mut due, mut endpoint) = (0, 0);
    while record.has_remaining() {
        match decode_key(&mut record)? {
            (1, WireType::Varint) => due = decode_varint(&mut record)? as i64,
            (7, WireType::Varint) => endpoint = decode_varint(&mut record)? as u32,
            (tag, wire_type) => skip_field(wire_type, tag, &mut record, DecodeContext::default())?,
        }
    }
    Ok((due, endpoint))
}

/// The records of a batch, in order, decoded whole.
pub fn decode(batch: pb::RecordBatch) -> Result<Vec<pb::Record>, BatchError> {
    split(batch)?.iter().map(Received::decode).collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn sample(due: i64, endpoint: u32, body: &'static [u8]) -> pb::Record {
        pb::Record {
            due_offset_ns: due,
            method: Bytes::from_static(b"POST"),
            path: Bytes::from_static("/users/4711/caf\u{e9}?x=1".as_bytes()),
            headers: vec![
                pb::Header { name: "Accept".into(), value: "*/*".into() },
                pb::Header { name: "X-Empty".into(), value: Bytes::new() },
                pb::Header { name: "Cookie".into(), value: Bytes::from(vec![b'c'; 300]) },
            ],
            body: Bytes::from_static(body),
            host: Bytes::from_static(b"prod.example:8080"),
            endpoint,
        }
    }

    fn write(r: &pb::Record, out: &mut BytesMut) {
        let headers: Vec<(Bytes, Bytes)> =
            r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
        RecordRef {
            due_offset_ns: r.due_offset_ns,
            endpoint: r.endpoint,
            method: &r.method,
            path: &r.path,
            headers: &headers,
            body: &r.body,
            host: &r.host,
        }
        .write_to(out);
    }

    /// What is written decodes back to the same records (defaults, negative offsets and long
    /// fields included), with the due offset and endpoint first; records as prost itself
    /// writes them (endpoint last, zeros left out) split the same way.
    #[test]
    fn records_are_read_back_and_their_heads_come_first() {
        let records = [
            sample(1_500_000, 7, b"{\"a\":1}"),
            sample(0, 0, b""),
            sample(-3, u32::MAX, &[0u8; 200]),
            pb::Record::default(),
        ];
        let mut out = BytesMut::new();
        let mut by_prost = Vec::new();
        for r in &records {
            let before = out.len();
            write(r, &mut out);
            let mut mine = &out[before..];
            let len = decode_varint(&mut mine).expect("length");
            assert_eq!(len as usize, mine.len());
            assert_eq!(decode_key(&mut mine).expect("key"), (1, WireType::Varint), "due offset first");
            decode_varint(&mut mine).expect("due");
            assert_eq!(decode_key(&mut mine).expect("key"), (7, WireType::Varint), "then the endpoint");
            r.encode_length_delimited(&mut by_prost).expect("prost writes");
        }
        let heads = [(1_500_000, 7), (0, 0), (-3, u32::MAX), (0, 0)];
        for encoded in [out.freeze(), Bytes::from(by_prost)] {
            let batch = pb::RecordBatch { encoded, count: records.len() as u32 };
            let received = split(batch.clone()).expect("splits");
            let got: Vec<(i64, u32)> = received.iter().map(|r| (r.due_offset_ns, r.endpoint)).collect();
            assert_eq!(got, heads);
            assert_eq!(decode(batch).expect("decodes"), records);
        }
    }

    #[test]
    fn a_cut_batch_is_an_error_not_a_panic() {
        let mut out = BytesMut::new();
        write(&sample(1, 1, b"body"), &mut out);
        let whole = out.freeze();
        for cut in 1..whole.len() {
            let batch = pb::RecordBatch { encoded: whole.slice(..cut), count: 1 };
            assert!(split(batch).is_err(), "cut at {cut}");
        }
        // A record cut inside (its own length agrees) is found when it is decoded.
        let mut inner = whole.to_vec();
        inner[0] -= 3;
        inner.truncate(inner.len() - 3);
        let received = split(pb::RecordBatch { encoded: inner.into(), count: 1 }).expect("framing holds");
        assert_eq!((received[0].due_offset_ns, received[0].endpoint), (1, 1));
        assert!(received[0].decode().is_err());
        // A count larger than what is there only sizes the vector.
        assert_eq!(decode(pb::RecordBatch { encoded: whole, count: u32::MAX }).map(|r| r.len()), Ok(1));
    }
}
