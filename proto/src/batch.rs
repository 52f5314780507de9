//! Batches of records on the wire (`RecordBatch.encoded`).
//!
//! The dispatcher writes each record straight from the fields it parsed, into the batch of
//! the replayer it goes to: no `pb::Record` is built per record, and no second pass over
//! nested messages is needed for their lengths. A replayer decodes the records as slices of
//! the message it received (no copy, no allocation per field), and only when it sends it:
//! on arrival only the due offset and the endpoint are read ([`Received`]), so a record
//! waiting for its instant is 48 bytes in the queues, and a dry run never decodes the rest.
//!
//! The bytes are exactly those prost writes for a `pb::Record` (fields in number order,
//! defaults left out), each preceded by its length.

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

fn varint_len(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + encoded_len_varint(v) }
}

fn put_varint(tag: u32, v: u64, out: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
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

    /// Appends the record, length-delimited, to a batch's bytes.
    pub fn write_to(&self, out: &mut BytesMut) {
        let len = self.encoded_len();
        out.reserve(encoded_len_varint(len as u64) + len);
        encode_varint(len as u64, out);
        put_varint(1, self.due_offset_ns as u64, out);
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
        put_varint(7, u64::from(self.endpoint), out);
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

/// The records of a batch, in order, with their due offset and endpoint read; every field of
/// every record is walked (so a batch that does not parse is refused whole), but none other
/// is decoded.
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
        let (mut due_offset_ns, mut endpoint) = (0, 0);
        let mut fields = encoded.as_ref();
        while fields.has_remaining() {
            match decode_key(&mut fields)? {
                (1, WireType::Varint) => due_offset_ns = decode_varint(&mut fields)? as i64,
                (7, WireType::Varint) => endpoint = decode_varint(&mut fields)? as u32,
                (tag, wire_type) => skip_field(wire_type, tag, &mut fields, DecodeContext::default())?,
            }
        }
        records.push(Received { due_offset_ns, endpoint, encoded });
    }
    Ok(records)
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

    /// The bytes are prost's own, so any prost decoder reads them; and they decode back to
    /// the same records, including defaults left out, negative offsets and long fields.
    #[test]
    fn records_are_written_as_prost_writes_them_and_read_back() {
        let records = [
            sample(1_500_000, 7, b"{\"a\":1}"),
            sample(0, 0, b""),
            sample(-3, u32::MAX, &[0u8; 200]),
            pb::Record::default(),
        ];
        let mut out = BytesMut::new();
        for r in &records {
            let before = out.len();
            write(r, &mut out);
            assert_eq!(&out[before..], &r.encode_length_delimited_to_vec()[..], "{r:?}");
        }
        let batch = pb::RecordBatch { encoded: out.freeze(), count: records.len() as u32 };
        let received = split(batch.clone()).expect("splits");
        let heads: Vec<(i64, u32)> = received.iter().map(|r| (r.due_offset_ns, r.endpoint)).collect();
        assert_eq!(heads, [(1_500_000, 7), (0, 0), (-3, u32::MAX), (0, 0)]);
        assert_eq!(decode(batch).expect("decodes"), records);
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
        // A record cut inside (its length says so) is refused on arrival, not when sent.
        let mut inner = whole.to_vec();
        inner[0] -= 3;
        inner.truncate(inner.len() - 3);
        assert!(split(pb::RecordBatch { encoded: inner.into(), count: 1 }).is_err());
        // A count larger than what is there only sizes the vector.
        assert_eq!(decode(pb::RecordBatch { encoded: whole, count: u32::MAX }).map(|r| r.len()), Ok(1));
    }
}
