//! HPACK (RFC 7541), as the HTTP/2 client in [`crate::h2`] needs it.
//!
//! Written here because the one well-kept Rust HPACK lives inside the `h2` crate and is not
//! public, and the replayer's HTTP/2 no longer goes through `h2` (see that module).
//!
//! The two directions differ:
//! - Requests are encoded by [`Encoder`], which indexes a field (puts it in the server's
//!   dynamic table, so later requests send one byte for it) only once it has been seen
//!   twice: the target's authority, an `accept` or a bearer token that every request
//!   carries are indexed; a trace id or a cookie that each request has its own goes as a
//!   literal and never churns the table. Paths are never indexed. Strings are not Huffman
//!   coded: the recorded bytes go as they are.
//! - Answers are decoded whole, as the server chose to encode them: the static and dynamic
//!   tables, size updates, and Huffman-coded strings, four bits a step through a table built
//!   once from the code (RFC 7541 Appendix B; the code is canonical, so its lengths are all
//!   it takes).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Static indices the encoder uses.
pub const AUTHORITY: usize = 1;
pub const METHOD: usize = 2;
pub const PATH: usize = 4;
const METHOD_GET: usize = 2;
const METHOD_POST: usize = 3;
const SCHEME_HTTP: usize = 6;
const SCHEME_HTTPS: usize = 7;

/// The static entry whose name is `name` (lower case), for the names requests carry.
fn static_name(name: &[u8]) -> usize {
    match name {
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept" => 19,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-encoding" => 26,
        b"content-length" => 28,
        b"content-type" => 31,
        b"cookie" => 32,
        b"expect" => 35,
        b"from" => 37,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"max-forwards" => 47,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"user-agent" => 58,
        b"via" => 60,
        _ => 0,
    }
}

/// The Huffman code's length in bits for each symbol, 0–255 and EOS (RFC 7541 Appendix B).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

/// A header block the client cannot decode: the connection's compression state is lost
/// (a COMPRESSION_ERROR in RFC 9113's terms).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the target sent a header block that does not decode (HPACK)")]
pub struct DecodeError;

// ---- Encoding ----------------------------------------------------------------------------

/// Appends `value` as an HPACK integer with an `n`-bit prefix, the byte's other bits `flags`.
fn push_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Appends a string literal, not Huffman coded.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    push_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends a string literal whose bytes `write` appends (its length known only after).
pub fn push_str_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    if len < 127 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = Vec::with_capacity(4);
    push_int(&mut prefix, 0, 7, len);
    out.splice(at..=at, prefix);
}

/// Fields remembered as seen once (by hash), so the second sighting is indexed.
const SEEN: usize = 1024;
/// The largest table the encoder fills (the protocol's default; a server may allow less).
const ENCODER_TABLE: usize = 4096;

/// One connection's encoder: the fields it put in the server's dynamic table.
pub struct Encoder {
    /// Newest first, as the server's decoder holds them.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// A smaller table size the server asked for, to announce at the next block's start.
    announce: Option<usize>,
    /// Entries ever inserted: the newest is number `inserted - 1`.
    inserted: u64,
    /// A field's hash to its entry's number.
    by_hash: HashMap<u64, u64, foldhash::fast::FixedState>,
    /// Hashes of fields seen once, by `hash % SEEN`.
    seen: Vec<u64>,
    hasher: foldhash::fast::FixedState,
    /// A name in lower case.
    lower: Vec<u8>,
}

struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
    hash: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: VecDeque::new(),
            size: 0,
            max_size: ENCODER_TABLE,
            announce: None,
            inserted: 0,
            by_hash: HashMap::default(),
            seen: vec![0; SEEN],
            hasher: foldhash::fast::FixedState::with_seed(0x7265_7072_6973_6521),
            lower: Vec::new(),
        }
    }
}

impl Encoder {
    /// The server's SETTINGS_HEADER_TABLE_SIZE: a smaller table is used (and announced)
    /// from the next block on; a larger one is not (the default's 4 KiB is plenty for the
    /// fields requests repeat).
    pub fn set_table_size(&mut self, size: usize) {
        let size = size.min(ENCODER_TABLE);
        if size != self.max_size {
            self.max_size = size;
            self.evict(0);
            self.announce = Some(size);
        }
    }

    /// Starts a header block: a table size change the server is owed comes first.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if let Some(size) = self.announce.take() {
            push_int(out, 0x20, 5, size);
        }
    }

    /// Appends `:method`: indexed for GET and POST, else as a field.
    pub fn method(&mut self, out: &mut Vec<u8>, method: &[u8]) {
        match method {
            b"GET" => push_int(out, 0x80, 7, METHOD_GET),
            b"POST" => push_int(out, 0x80, 7, METHOD_POST),
            _ => self.field(out, b":method", method),
        }
    }

    /// Appends `:scheme`, indexed.
    pub fn scheme(&mut self, out: &mut Vec<u8>, https: bool) {
        push_int(out, 0x80, 7, if https { SCHEME_HTTPS } else { SCHEME_HTTP });
    }

    /// Appends a field (its name in any case; HTTP/2 sends it in lower case): indexed if the
    /// table holds it, inserted if it was seen once before, else a literal.
    pub fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        let mut lower = std::mem::take(&mut self.lower);
        lower.clear();
        lower.extend(name.iter().map(u8::to_ascii_lowercase));
        let hash = self.hasher.hash_one((&lower[..], value));
        if let Some(at) = self.position(hash, &lower, value) {
            push_int(out, 0x80, 7, 62 + at);
        } else {
            // Looked up only for a field the table does not hold: most of a request's are.
            let name_index = match lower.as_slice() {
                b":authority" => AUTHORITY,
                b":method" => METHOD,
                other => static_name(other),
            };
            let size = lower.len() + value.len() + 32;
            let slot = (hash % SEEN as u64) as usize;
            let index = self.seen[slot] == hash && size <= self.max_size * 3 / 4;
            self.seen[slot] = hash;
            if index {
                push_int(out, 0x40, 6, name_index);
            } else {
                push_int(out, 0, 4, name_index);
            }
            if name_index == 0 {
                push_str(out, &lower);
            }
            push_str(out, value);
            if index {
                self.insert(Entry { name: lower.as_slice().into(), value: value.into(), hash }, size);
            }
        }
        self.lower = lower;
    }

    /// Where in the dynamic table (0 the newest) the field is.
    fn position(&self, hash: u64, name: &[u8], value: &[u8]) -> Option<usize> {
        let number = *self.by_hash.get(&hash)?;
        let at = (self.inserted - 1 - number) as usize;
        let e = self.table.get(at)?;
        (&*e.name == name && &*e.value == value).then_some(at)
    }

    fn insert(&mut self, entry: Entry, size: usize) {
        self.evict(size);
        self.by_hash.insert(entry.hash, self.inserted);
        self.inserted += 1;
        self.size += size;
        self.table.push_front(entry);
    }

    /// Drops the oldest entries until `room` more bytes fit, as the server's decoder does.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some(e) = self.table.pop_back() else { break };
            self.size -= e.name.len() + e.value.len() + 32;
            let number = self.inserted - 1 - self.table.len() as u64;
            if self.by_hash.get(&e.hash) == Some(&number) {
                self.by_hash.remove(&e.hash);
            }
        }
    }
}

/// Appends a field whose name is static entry `name` and whose value `write` appends.
pub fn push_indexed_name_with(out: &mut Vec<u8>, name: usize, write: impl FnOnce(&mut Vec<u8>)) {
    push_int(out, 0, 4, name);
    push_str_with(out, write);
}

// ---- Decoding ----------------------------------------------------------------------------

/// A field of the decoder's dynamic table: name and value.
type Field = (Box<[u8]>, Box<[u8]>);

/// A connection's decoder: the dynamic table the server's encoder fills.
pub struct Decoder {
    /// Newest first, as indices count.
    table: VecDeque<Field>,
    /// The table's size as RFC 7541 counts it (each entry's bytes and 32).
    size: usize,
    /// The size the server's encoder chose (at most `limit`).
    max_size: usize,
    /// What the client allows (its SETTINGS_HEADER_TABLE_SIZE: the default).
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            limit: 4096,
            name: Vec::new(),
            value: Vec::new(),
        }
    }
}

/// An integer with an `n`-bit prefix from the front of `block`.
fn int(block: &mut &[u8], n: u32) -> Result<usize, DecodeError> {
    let (&first, rest) = block.split_first().ok_or(DecodeError)?;
    *block = rest;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    for shift in (0..35).step_by(7) {
        let (&b, rest) = block.split_first().ok_or(DecodeError)?;
        *block = rest;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError)
}

/// A string literal from the front of `block`, into `out` (cleared first): its bytes as
/// they are, or Huffman-decoded.
fn string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = int(block, 7)?;
    if len > block.len() {
        return Err(DecodeError);
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    out.clear();
    if huffman {
        huffman_decode(s, out)
    } else {
        out.extend_from_slice(s);
        Ok(())
    }
}

impl Decoder {
    /// Decodes a whole header block, calling `field` with each (name, value) in order.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                let (name, value) = entry(&self.table, int(&mut block, 7)?)?;
                field(name, value);
            } else if b & 0xe0 == 0x20 {
                let size = int(&mut block, 5)?;
                if size > self.limit {
                    return Err(DecodeError);
                }
                self.max_size = size;
                self.evict(0);
            } else {
                let indexing = b & 0x40 != 0;
                let index = int(&mut block, if indexing { 6 } else { 4 })?;
                if index == 0 {
                    string(&mut block, &mut self.name)?;
                } else {
                    let (n, _) = entry(&self.table, index)?;
                    self.name.clear();
                    self.name.extend_from_slice(n);
                }
                string(&mut block, &mut self.value)?;
                field(&self.name, &self.value);
                if indexing {
                    self.insert();
                }
            }
        }
        Ok(())
    }

    /// Adds the field just decoded (`name`, `value`) to the dynamic table.
    fn insert(&mut self) {
        let size = self.name.len() + self.value.len() + 32;
        self.evict(size);
        // An entry larger than the whole table empties it and is not kept (RFC 7541 4.4).
        if size <= self.max_size {
            self.size += size;
            self.table.push_front((self.name.as_slice().into(), self.value.as_slice().into()));
        }
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else { break };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// Entry `index` of the static table, then of the dynamic `table`.
fn entry(table: &VecDeque<Field>, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    match index {
        0 => Err(DecodeError),
        1..=61 => Ok(STATIC[index - 1]),
        _ => table.get(index - 62).map(|(n, v)| (&n[..], &v[..])).ok_or(DecodeError),
    }
}

/// One step of the Huffman decoder: from a state (a node of the code's tree), four bits on.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    symbol: u8,
    /// 1: `symbol` was decoded; 2: the bits hit EOS or ran off the code (an error).
    flags: u8,
}

const EMITS: u8 = 1;
const FAILS: u8 = 2;

/// The decoder's table: 256 states by 16 nibbles, and which states may end a string (the
/// root, or a run of fewer than eight 1 bits from it: padding, a prefix of EOS).
struct Huffman {
    steps: Vec<[Step; 16]>,
    ends: [bool; 256],
}

fn huffman() -> &'static Huffman {
    static TABLE: OnceLock<Huffman> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The canonical code: symbols by (length, symbol), each code the last plus one,
        // shifted to its length.
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (CODE_LENGTHS[s], s));
        // The tree: internal nodes (0 the root), children either a node or a leaf (a
        // symbol, 0x100 set).
        let mut nodes: Vec<[u16; 2]> = vec![[0, 0]];
        const LEAF: u16 = 0x8000;
        const EMPTY: u16 = 0;
        let (mut code, mut prev) = (0u32, CODE_LENGTHS[order[0]]);
        for (i, &s) in order.iter().enumerate() {
            let len = CODE_LENGTHS[s];
            if i > 0 {
                code = (code + 1) << (len - prev);
            }
            prev = len;
            let mut at = 0usize;
            for bit in (0..len).rev() {
                let b = ((code >> bit) & 1) as usize;
                if bit == 0 {
                    nodes[at][b] = LEAF | s as u16;
                } else {
                    if nodes[at][b] == EMPTY {
                        nodes.push([0, 0]);
                        nodes[at][b] = (nodes.len() - 1) as u16;
                    }
                    at = usize::from(nodes[at][b]);
                }
            }
        }
        // Node 0 is the root and no child points back to it, so EMPTY (0) never names one.
        let mut ends = [false; 256];
        let (mut at, mut depth) = (0usize, 0);
        while depth < 8 {
            ends[at] = true;
            let one = nodes[at][1];
            if one & LEAF != 0 {
                break;
            }
            at = usize::from(one);
            depth += 1;
        }
        let steps = (0..nodes.len())
            .map(|state| {
                let mut row = [Step::default(); 16];
                for (nibble, step) in row.iter_mut().enumerate() {
                    let mut at = state;
                    for bit in (0..4).rev() {
                        let child = nodes[at][(nibble >> bit) & 1];
                        if child & LEAF == 0 {
                            at = usize::from(child);
                        } else if child & !LEAF == 256 {
                            step.flags = FAILS;
                        } else {
                            step.symbol = (child & 0xff) as u8;
                            step.flags |= EMITS;
                            at = 0;
                        }
                    }
                    step.next = at as u8;
                }
                row
            })
            .collect();
        Huffman { steps, ends }
    })
}

/// Appends the Huffman-decoded `input` to `out`.
fn huffman_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let h = huffman();
    let mut state = 0u8;
    for &byte in input {
        for nibble in [byte >> 4, byte & 0xf] {
            let step = h.steps[usize::from(state)][usize::from(nibble)];
            if step.flags & FAILS != 0 {
                return Err(DecodeError);
            }
            if step.flags & EMITS != 0 {
                out.push(step.symbol);
            }
            state = step.next;
        }
    }
    if h.ends[usize::from(state)] { Ok(()) } else { Err(DecodeError) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut got = Vec::new();
        d.decode(block, |n, v| {
            got.push((String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
        })
        .expect("decodes");
        got
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// RFC 7541 C.4: three requests with Huffman coding, sharing one dynamic table.
    #[test]
    fn the_rfc_examples_decode_with_huffman_and_the_dynamic_table() {
        let mut d = Decoder::default();
        let first = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        assert_eq!(
            first,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf"));
        assert_eq!(second[3..], pairs(&[(":authority", "www.example.com"), ("cache-control", "no-cache")]));
        let third = decode_all(&mut d, &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"));
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.size, 164, "the table's size as RFC 7541 C.4.3 gives it");
    }

    /// RFC 7541 C.6: answers with a 256-byte table, so entries are evicted.
    #[test]
    fn answers_evict_the_oldest_entries_when_the_table_is_full() {
        let mut d = Decoder { max_size: 256, ..Decoder::default() };
        let blocks = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e \
             919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ff c1 c0 bf",
        ];
        let first = decode_all(&mut d, &hex(blocks[0]));
        assert_eq!(first[0], (":status".into(), "302".into()));
        assert_eq!(first[3], ("location".into(), "https://www.example.com".into()));
        let second = decode_all(&mut d, &hex(blocks[1]));
        assert_eq!(second[0], (":status".into(), "307".into()));
        assert_eq!(second[1], ("cache-control".into(), "private".into()));
        assert_eq!(second[3], ("location".into(), "https://www.example.com".into()));
        assert_eq!(d.table.len(), 4, "`:status 302` was evicted");
    }

    /// Requests encoded one after another decode to the same fields with a decoder that
    /// follows the encoder's table: fields seen twice are indexed, one-off ones are not,
    /// and a table the server shrank is announced and kept to.
    #[test]
    fn what_the_encoder_writes_decodes_to_the_same_fields() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let long = "/p/".to_owned() + &"x".repeat(300);
        let mut sizes = Vec::new();
        for i in 0..5 {
            if i == 3 {
                enc.set_table_size(64);
            }
            let mut block = Vec::new();
            enc.start(&mut block);
            enc.method(&mut block, if i == 0 { b"PATCH" } else { b"GET" });
            enc.scheme(&mut block, true);
            enc.field(&mut block, b":authority", b"staging:8443");
            push_indexed_name_with(&mut block, PATH, |out| out.extend_from_slice(long.as_bytes()));
            enc.field(&mut block, b"User-Agent", b"bench/1.0");
            enc.field(&mut block, b"X-Trace-Id", format!("t{i}").as_bytes());
            let got = decode_all(&mut dec, &block);
            let method = if i == 0 { "PATCH" } else { "GET" };
            let trace = format!("t{i}");
            assert_eq!(
                got,
                pairs(&[
                    (":method", method),
                    (":scheme", "https"),
                    (":authority", "staging:8443"),
                    (":path", &long),
                    ("user-agent", "bench/1.0"),
                    ("x-trace-id", &trace),
                ]),
                "request {i}"
            );
            assert_eq!(dec.table.len(), enc.table.len(), "the tables agree after request {i}");
            sizes.push(block.len());
        }
        assert!(sizes[2] < sizes[1] && sizes[1] < sizes[0], "repeated fields shrink: {sizes:?}");
        assert_eq!(enc.table.len(), 1, "a 64-byte table holds one entry");
    }

    #[test]
    fn broken_blocks_are_errors_not_panics() {
        for bad in [
            &[0x80][..],                                 // index 0
            &[0xff, 0xff, 0xff, 0xff],                   // an integer that never ends
            &[0xbe],                                     // past an empty dynamic table
            &[0x00, 0x05, b'a'],                         // a string longer than the block
            &[0x00, 0x81, 0x00, 0x00],                   // Huffman: a name of eight 0 bits is no padding
            &[0x3f, 0xe2, 0x1f],                         // a table size over the limit (4097)
            &[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00], // EOS inside a string
        ] {
            assert_eq!(Decoder::default().decode(bad, |_, _| {}), Err(DecodeError), "{bad:02x?}");
        }
    }
}
