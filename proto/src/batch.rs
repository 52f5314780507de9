//! Batches of records on the wire (`RecordBatch.encoded`).
//!
//! The dispatcher writes each record straight from the fields it parsed, into the batch of
//! the replayer it goes to: no `pb::Record` is built per record, and no second pass over
//! nested messages is needed for their lengths. A replayer decodes the records as slices of
//! the message it received (no copy, no allocation per field), and only when it sends it:
//! on arrival only the due offset, the endpoint and the order key are read ([`Received`]), so
//! a record waiting for its instant is 56 bytes in the queues, and a dry run never decodes
//! the rest.
//!
//! Each record is a `pb::Record` as prost reads it, preceded by its length, with one
//! difference in form from what prost writes: the due offset and the endpoint come first and
//! are always there (even when 0), then the order key when the record has one (ordered jobs),
//! so a replayer reads them from the record's first bytes without walking the rest. A record
//! in any other field order is read too, by walking it.

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
    /// The record's order key in an ordered job (a hash of its key); 0 for none, left out.
    pub order_key: u64,
    /// The recorded answer, an encoded `pb::Expected` ([`crate::expected`]); empty for
    /// none, left out.
    pub expected: &'a [u8],
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
            + if self.order_key == 0 { 0 } else { varint_len(self.order_key) }
            + bytes_len(self.expected)
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
        if self.order_key != 0 {
            put_varint(8, self.order_key, out);
        }
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
        put_bytes(9, self.expected, out);
        debug_assert!(out.is_empty(), "encoded_len counts what write_to writes");
    }
}

/// A batch that cannot be read (only a dispatcher of another build could send one).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("a record's length runs past the end of its batch")]
    Truncated,
    #[error("field {0} of a record (or of one of its headers) has the wrong wire type")]
    WireType(u32),
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// A record as a replayer holds it until its instant: when and under which endpoint, and
/// the rest as it came (a slice of the batch).
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub due_offset_ns: i64,
    pub endpoint: u32,
    /// Its order key in an ordered job; 0 for none.
    pub order_key: u64,
    encoded: Bytes,
}

impl Received {
    /// The whole record as a message; its byte fields are slices of the batch.
    pub fn decode(&self) -> Result<pb::Record, BatchError> {
        Ok(pb::Record::decode(self.encoded.clone())?)
    }

    /// Prefetches the record's first bytes: a replayer calls it on a record it will send
    /// soon, so the cache miss on a batch that arrived milliseconds ago is over by then.
    pub fn prefetch(&self) {
        if let Some(first) = self.encoded.first() {
            crate::hint::prefetch(first);
        }
    }

    /// The record read in place, as a replayer sends it: no message is built, no field is
    /// counted as one more owner of the batch, the headers are not collected (the view walks
    /// them again where they lie). Decoding into a `pb::Record` (a vector of headers
    /// allocated, a reference count taken and dropped per field) took 1,790 instructions per
    /// request of bench (b); the view 680. Refuses what [`Received::decode`] refuses.
    pub fn view(&self) -> Result<RecordView<'_>, BatchError> {
        let whole = &self.encoded[..];
        let mut view = RecordView {
            whole: &self.encoded,
            headers: 0..0,
            method: &[],
            path: &[],
            body: &[],
            host: &[],
            expected: None,
        };
        let mut rest = whole;
        loop {
            let at = whole.len() - rest.len();
            let Some((tag, wire_type, v)) = next_field(&mut rest)? else { break };
            match (tag, wire_type) {
                (2, WireType::LengthDelimited) => view.method = v,
                (3, WireType::LengthDelimited) => view.path = v,
                (4, WireType::LengthDelimited) => {
                    header(v)?;
                    if view.headers.is_empty() {
                        view.headers.start = at;
                    }
                    view.headers.end = whole.len() - rest.len();
                }
                (5, WireType::LengthDelimited) => view.body = v,
                (6, WireType::LengthDelimited) => view.host = v,
                (9, WireType::LengthDelimited) => {
                    let end = whole.len() - rest.len();
                    view.expected = Some(view.expected.map_or(at..end, |seen| seen.start..end));
                }
                (1 | 7 | 8, WireType::Varint) => {}
                // A known field in another wire type is refused, as prost refuses it.
                (1..=9, _) => return Err(BatchError::WireType(tag)),
                _ => {}
            }
        }
        Ok(view)
    }
}

/// A record's fields as slices of its batch (see [`Received::view`]).
#[derive(Clone, Debug)]
pub struct RecordView<'a> {
    /// The whole record.
    whole: &'a Bytes,
    /// Where in it the headers are, from the first one's key to the last one's end (walked
    /// again for them; as the dispatcher writes records, nothing else lies between).
    headers: std::ops::Range<usize>,
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub body: &'a [u8],
    pub host: &'a [u8],
    /// Where the recorded answer is (from its first occurrence's key to its last one's
    /// end); `None` when the record carries none.
    expected: Option<std::ops::Range<usize>>,
}

impl<'a> RecordView<'a> {
    /// Name and value of each header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let mut rest = &self.whole[self.headers.clone()];
        // The walk cannot fail: `view` walked the same bytes (and each header) without error.
        std::iter::from_fn(move || {
            loop {
                if let (4, WireType::LengthDelimited, v) = next_field(&mut rest).ok()?? {
                    return header(v).ok();
                }
            }
        })
    }

    /// The recorded answer the record carries (the recorded baseline), decoded as prost
    /// decodes it (occurrences past the first merged into it); `None` when it carries none.
    pub fn expected(&self) -> Result<Option<pb::Expected>, BatchError> {
        let Some(range) = self.expected.clone() else { return Ok(None) };
        let mut rest = &self.whole[range];
        let mut expected = pb::Expected::default();
        while let Some((tag, wire_type, v)) = next_field(&mut rest)? {
            if (tag, wire_type) == (9, WireType::LengthDelimited) {
                expected.merge(v)?;
            }
        }
        Ok(Some(expected))
    }

    /// `part` (a field of this record) as shared bytes of the batch, without a copy.
    pub fn share(&self, part: &[u8]) -> Bytes {
        if part.is_empty() { Bytes::new() } else { self.whole.slice_ref(part) }
    }
}

/// A field's tag, wire type and, if it is length-delimited, content.
type Field<'a> = (u32, WireType, &'a [u8]);

/// Reads the next field off `rest`: its tag, its wire type, and its content if it is
/// length-delimited (empty otherwise). None at the end. Keys, lengths and varints of one byte
/// (nearly all of a record's) are read here; longer ones, and other wire types, by prost.
#[inline(always)]
fn next_field<'a>(rest: &mut &'a [u8]) -> Result<Option<Field<'a>>, BatchError> {
    let (tag, wire_type) = match rest.first() {
        None => return Ok(None),
        Some(&key @ 0x08..=0x7f) if matches!(key & 7, 0 | 2) => {
            *rest = &rest[1..];
            (u32::from(key >> 3), if key & 7 == 0 { WireType::Varint } else { WireType::LengthDelimited })
        }
        Some(_) => decode_key(rest)?,
    };
    let content = match wire_type {
        WireType::LengthDelimited => {
            let len = small_varint(rest)?;
            if len > rest.len() as u64 {
                return Err(BatchError::Truncated);
            }
            let (content, after) = rest.split_at(len as usize);
            *rest = after;
            content
        }
        WireType::Varint => {
            small_varint(rest)?;
            &[]
        }
        _ => {
            skip_field(wire_type, tag, rest, DecodeContext::default())?;
            &[]
        }
    };
    Ok(Some((tag, wire_type, content)))
}

/// A varint off `rest`: one byte here, longer ones by prost.
#[inline]
fn small_varint(rest: &mut &[u8]) -> Result<u64, BatchError> {
    match rest.first() {
        Some(&b) if b < 0x80 => {
            *rest = &rest[1..];
            Ok(u64::from(b))
        }
        _ => Ok(decode_varint(rest)?),
    }
}

/// A header's name and value (fields 1 and 2 of a `pb::Header`).
#[inline]
fn header(mut rest: &[u8]) -> Result<(&[u8], &[u8]), BatchError> {
    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
    while let Some((tag, wire_type, v)) = next_field(&mut rest)? {
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => name = v,
            (2, WireType::LengthDelimited) => value = v,
            (1 | 2, _) => return Err(BatchError::WireType(tag)),
            _ => {}
        }
    }
    Ok((name, value))
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
        let (due_offset_ns, endpoint, order_key) = head(&encoded)?;
        records.push(Received { due_offset_ns, endpoint, order_key, encoded });
    }
    Ok(records)
}

/// The due offset, endpoint and order key of one record: from its first fields as
/// [`RecordRef::write_to`] puts them (the order key only when it is not 0), else by walking
/// every field.
fn head(record: &[u8]) -> Result<(i64, u32, u64), BatchError> {
    let mut first = record;
    if let (Ok((1, WireType::Varint)), Ok(due)) = (decode_key(&mut first), decode_varint(&mut first))
        && let (Ok((7, WireType::Varint)), Ok(endpoint)) = (decode_key(&mut first), decode_varint(&mut first))
    {
        // A order key, if any, comes next (as the due offset and endpoint, one written in
        // this order is trusted not to repeat later: only this writer puts them first).
        let mut third = first;
        let order_key = match (decode_key(&mut third), decode_varint(&mut third)) {
            (Ok((8, WireType::Varint)), Ok(order_key)) => order_key,
            _ => 0,
        };
        return Ok((due as i64, endpoint as u32, order_key));
    }
    walk(record)
}

/// The head's fields read by walking the whole record (the last of a repeated one counts).
fn walk(mut record: &[u8]) -> Result<(i64, u32, u64), BatchError> {
    let (mut due, mut endpoint, mut order_key) = (0, 0, 0);
    while record.has_remaining() {
        match decode_key(&mut record)? {
            (1, WireType::Varint) => due = decode_varint(&mut record)? as i64,
            (7, WireType::Varint) => endpoint = decode_varint(&mut record)? as u32,
            (8, WireType::Varint) => order_key = decode_varint(&mut record)?,
            (tag, wire_type) => skip_field(wire_type, tag, &mut record, DecodeContext::default())?,
        }
    }
    Ok((due, endpoint, order_key))
}

/// The records of a batch, in order, decoded whole.
pub fn decode(batch: pb::RecordBatch) -> Result<Vec<pb::Record>, BatchError> {
    split(batch)?.iter().map(Received::decode).collect()
}

// What a record costs in a replayer's queues until its instant (see the module's docs).
const _: () = assert!(std::mem::size_of::<Received>() == 56);

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn sample(due: i64, endpoint: u32, body: &'static [u8]) -> pb::Record {
        sample_of(due, endpoint, 0, body)
    }

    fn sample_of(due: i64, endpoint: u32, order_key: u64, body: &'static [u8]) -> pb::Record {
        pb::Record {
            order_key,
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
            expected: None,
        }
    }

    /// A record carrying a recorded answer.
    fn answered(due: i64) -> pb::Record {
        let headers = [("Content-Type", "application/json")];
        let expected = crate::expected::expected(201, &headers, b"{\"id\":7}", &["content-type".into()], 64);
        pb::Record { expected: Some(expected), ..sample_of(due, 7, 0, b"{\"a\":1}") }
    }

    fn write(r: &pb::Record, out: &mut BytesMut) {
        let headers: Vec<(Bytes, Bytes)> =
            r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
        let expected = r.expected.as_ref().map(Message::encode_to_vec).unwrap_or_default();
        RecordRef {
            due_offset_ns: r.due_offset_ns,
            endpoint: r.endpoint,
            method: &r.method,
            path: &r.path,
            headers: &headers,
            body: &r.body,
            host: &r.host,
            order_key: r.order_key,
            expected: &expected,
        }
        .write_to(out);
    }

    /// What is written decodes back to the same records (defaults, negative offsets, long
    /// fields and order keys included), with the due offset, endpoint and order key first;
    /// records as prost itself writes them (endpoint and order key last, zeros left out) split
    /// the same way.
    #[test]
    fn records_are_read_back_and_their_heads_come_first() {
        let records = [
            sample(1_500_000, 7, b"{\"a\":1}"),
            sample(0, 0, b""),
            sample(-3, u32::MAX, &[0u8; 200]),
            pb::Record::default(),
            sample_of(5, 2, u64::MAX, b"x"),
            sample_of(0, 0, 1, b""),
            answered(9),
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
            decode_varint(&mut mine).expect("endpoint");
            if r.order_key != 0 {
                assert_eq!(decode_key(&mut mine).expect("key"), (8, WireType::Varint), "then the order_key");
            }
            r.encode_length_delimited(&mut by_prost).expect("prost writes");
        }
        let heads = [
            (1_500_000, 7, 0),
            (0, 0, 0),
            (-3, u32::MAX, 0),
            (0, 0, 0),
            (5, 2, u64::MAX),
            (0, 0, 1),
            (9, 7, 0),
        ];
        for encoded in [out.freeze(), Bytes::from(by_prost)] {
            let batch = pb::RecordBatch { encoded, count: records.len() as u32 };
            let received = split(batch.clone()).expect("splits");
            let got: Vec<(i64, u32, u64)> =
                received.iter().map(|r| (r.due_offset_ns, r.endpoint, r.order_key)).collect();
            assert_eq!(got, heads);
            for (r, got) in received.iter().zip(&records) {
                assert_eq!(as_view(r).as_ref(), Ok(got), "the view reads what prost reads");
            }
            assert_eq!(decode(batch).expect("decodes"), records);
        }
    }

    /// A record read through its view, as a message (for comparing with prost's reading).
    fn as_view(r: &Received) -> Result<pb::Record, BatchError> {
        let v = r.view()?;
        Ok(pb::Record {
            due_offset_ns: r.due_offset_ns,
            endpoint: r.endpoint,
            order_key: r.order_key,
            method: v.share(v.method),
            path: v.share(v.path),
            headers: v
                .headers()
                .map(|(n, v)| pb::Header { name: n.to_vec().into(), value: v.to_vec().into() })
                .collect(),
            body: v.share(v.body),
            host: v.share(v.host),
            expected: v.expected()?,
        })
    }

    /// Whatever the bytes of a record, its view accepts exactly what prost accepts and reads
    /// the same fields (every byte of a record set to ten values in turn, and records with
    /// fields prost knows in other wire types, unknown fields and repeated fields).
    #[test]
    fn the_view_accepts_and_reads_what_prost_does() {
        let mut out = BytesMut::new();
        write(&pb::Record { order_key: 99, ..answered(1_500_000) }, &mut out);
        let mut framed = &out[..];
        decode_varint(&mut framed).expect("its length");
        let whole = framed.to_vec(); // without its length
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for at in 0..whole.len() {
            for b in [0u8, 1, 2, 5, 0x0a, 0x12, 0x22, 0x7f, 0x80, 0xff] {
                let mut bytes = whole.clone();
                bytes[at] = b;
                cases.push(bytes);
            }
        }
        // Method as a varint; a header's name as a varint; unknown fields of each wire type;
        // the path twice (the last one counts); a fixed64 due offset; the endpoint as bytes.
        cases.push(vec![0x08, 0x00, 0x38, 0x01, 0x10, 0x05]);
        cases.push(vec![0x22, 0x02, 0x08, 0x01]);
        cases.push(vec![0x40, 0x01, 0x5a, 0x01, b'x', 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0x55, 0, 0, 0, 0]);
        cases.push(vec![0x1a, 0x01, b'a', 0x1a, 0x01, b'b']);
        cases.push(vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0]);
        cases.push(vec![0x08, 0x00, 0x3a, 0x01, b'x']);
        cases.push(vec![0x22, 0x03, 0x18, 0x01, 0x00]);
        // The recorded answer twice (prost merges the two), and as a varint.
        cases.push(vec![0x4a, 0x02, 0x08, 0x07, 0x4a, 0x02, 0x20, 0x05]);
        cases.push(vec![0x48, 0x01]);
        let (mut accepted, mut refused) = (0, 0);
        for bytes in cases {
            let mut framed = Vec::new();
            encode_varint(bytes.len() as u64, &mut framed);
            framed.extend_from_slice(&bytes);
            let Ok(received) = split(pb::RecordBatch { encoded: framed.into(), count: 1 }) else { continue };
            let by_prost = received[0].decode().ok();
            let by_view = as_view(&received[0]).ok();
            assert_eq!(by_view, by_prost, "record bytes {bytes:02x?}");
            if by_prost.is_some() { accepted += 1 } else { refused += 1 }
        }
        assert!(
            accepted > 100 && refused > 100,
            "both kinds are tried: {accepted} accepted, {refused} refused"
        );
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
        assert!(received[0].view().is_err());
        // A count larger than what is there only sizes the vector.
        assert_eq!(decode(pb::RecordBatch { encoded: whole, count: u32::MAX }).map(|r| r.len()), Ok(1));
    }
}
