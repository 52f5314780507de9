//! Cuts a HAR file into its entries as it streams past: the elements of `log.entries`, each
//! one unit, so a recording of any size is read in the memory of one entry (a HAR is one
//! JSON document; parsing it whole would hold the whole file). The bytes are followed
//! only as far as needed for that: strings (so brackets inside them do not count), the
//! nesting, and the keys of the top two objects (`log`, then `entries`). Whether an entry
//! is a good one is the analyzer's to say ([`crate::analyzers::Har`]).
//!
//! Written by hand because serde_json reads a document whole or a stream of whole
//! documents, not the elements of an array inside one.

use std::io::{self, BufRead};

use bytes::BytesMut;

/// What [`Entries::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// An entry is in the buffer (or the part of one a file that ends inside it holds).
    Entry,
    /// An entry longer than the limit was skipped.
    TooLong,
    /// The file ended.
    End,
}

/// Grow the buffer by at least this much (the entries of a block share it).
const BLOCK: usize = 64 << 10;

/// Where the scan is in the document.
#[derive(Debug, Default)]
pub struct Entries {
    /// Containers open outside an entry: what each is.
    stack: Vec<Frame>,
    /// Inside a string, and just after a backslash in one.
    string: bool,
    escaped: bool,
    /// In one of the top two objects, before a key.
    expect_key: bool,
    /// The key being read (top two objects only), the last one read, and what the one
    /// before the last `:` named (the value that follows it).
    key: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    named: Option<Name>,
    /// The entry being cut.
    entry: Option<Entry>,
    /// The entry under way is past the limit: skipped to its end.
    too_long: bool,
    /// `log.entries` was found (a file without it is no HAR).
    pub found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// The document's object.
    Root,
    /// `log`.
    Log,
    /// `log.entries`.
    Entries,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Log,
    Entries,
    Other,
}

/// An entry under way: an object or array (its nesting), a string, or a bare word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Nested(usize),
    Str,
    Word,
}

/// What a scan of a chunk found.
struct Step {
    /// Bytes of the chunk scanned (the rest is for the next call).
    used: usize,
    /// Where in the chunk the entry under way began, if it began in it.
    began: Option<usize>,
    /// An entry ended at `used`.
    done: bool,
}

impl Entries {
    /// Reads the next entry into `buf` (cleared first); one longer than `max` is skipped.
    pub fn next(
        &mut self,
        r: &mut (impl BufRead + ?Sized),
        buf: &mut BytesMut,
        max: usize,
    ) -> io::Result<Cut> {
        buf.clear();
        loop {
            let chunk = r.fill_buf()?;
            if chunk.is_empty() {
                // A document cut off inside an entry: what was read of it is handed on, for
                // the analyzer to refuse.
                let cut = self.entry.take().is_some();
                return Ok(match (cut, std::mem::take(&mut self.too_long)) {
                    (true, true) => Cut::TooLong,
                    (true, false) => Cut::Entry,
                    (false, _) => Cut::End,
                });
            }
            let within = self.entry.is_some();
            let step = self.scan(chunk);
            if let Some(from) = if within { Some(0) } else { step.began }
                && !self.too_long
            {
                let part = &chunk[from..step.used];
                if buf.len() + part.len() > max {
                    self.too_long = true;
                    buf.clear();
                } else {
                    if buf.capacity() - buf.len() < part.len() {
                        // A new block (what was split off stays with its records).
                        buf.reserve(part.len().max(BLOCK));
                    }
                    buf.extend_from_slice(part);
                }
            }
            r.consume(step.used);
            if step.done {
                return Ok(if std::mem::take(&mut self.too_long) { Cut::TooLong } else { Cut::Entry });
            }
        }
    }

    /// Follows `chunk` up to the end of an entry, or to its own end.
    fn scan(&mut self, chunk: &[u8]) -> Step {
        let mut began = None;
        for (i, &b) in chunk.iter().enumerate() {
            let done = |used| Step { used, began, done: true };
            if self.string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.string = false;
                    if let Some(key) = self.key.take() {
                        self.last_key = Some(key);
                    }
                    if self.entry == Some(Entry::Str) {
                        self.entry = None;
                        return done(i + 1);
                    }
                    continue;
                }
                if let Some(key) = self.key.as_mut().filter(|k| k.len() < 16) {
                    key.push(b);
                }
                continue;
            }
            match self.entry {
                Some(Entry::Word) if matches!(b, b',' | b']') || b.is_ascii_whitespace() => {
                    self.entry = None;
                    return done(i);
                }
                Some(Entry::Word) => continue,
                Some(Entry::Nested(depth)) => {
                    match b {
                        b'"' => self.string = true,
                        b'{' | b'[' => self.entry = Some(Entry::Nested(depth + 1)),
                        b'}' | b']' if depth == 1 => {
                            self.entry = None;
                            return done(i + 1);
                        }
                        b'}' | b']' => self.entry = Some(Entry::Nested(depth - 1)),
                        _ => {}
                    }
                    continue;
                }
                Some(Entry::Str) | None => {}
            }
            let top = self.stack.last().copied();
            let at_entries = top == Some(Frame::Entries);
            match b {
                _ if b.is_ascii_whitespace() => {}
                b'"' if at_entries => {
                    self.string = true;
                    self.entry = Some(Entry::Str);
                    began = Some(i);
                }
                b'"' => {
                    self.string = true;
                    if self.expect_key && matches!(top, Some(Frame::Root | Frame::Log)) {
                        self.key = Some(Vec::new());
                    }
                    self.expect_key = false;
                }
                b'{' | b'[' if at_entries => {
                    self.entry = Some(Entry::Nested(1));
                    began = Some(i);
                }
                b'{' | b'[' => {
                    let frame = match (top, self.named, b) {
                        (None, _, b'{') => Frame::Root,
                        (Some(Frame::Root), Some(Name::Log), b'{') => Frame::Log,
                        (Some(Frame::Log), Some(Name::Entries), b'[') => {
                            self.found = true;
                            Frame::Entries
                        }
                        _ => Frame::Other,
                    };
                    self.stack.push(frame);
                    self.expect_key = b == b'{';
                    self.named = None;
                }
                b'}' | b']' => {
                    self.stack.pop();
                    self.expect_key = false;
                }
                b':' => {
                    self.named = Some(match self.last_key.take().as_deref() {
                        Some(b"log") => Name::Log,
                        Some(b"entries") => Name::Entries,
                        _ => Name::Other,
                    });
                }
                b',' => {
                    self.named = None;
                    self.expect_key = true;
                }
                _ if at_entries => {
                    self.entry = Some(Entry::Word);
                    began = Some(i);
                }
                _ => {}
            }
        }
        Step { used: chunk.len(), began, done: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The units of `doc` read through a reader that hands out `piece` bytes at a time.
    fn cut(doc: &str, piece: usize) -> (Vec<String>, bool) {
        let mut r = std::io::BufReader::with_capacity(piece, doc.as_bytes());
        let mut entries = Entries::default();
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        loop {
            match entries.next(&mut r, &mut buf, 1 << 20).expect("reads") {
                Cut::End => return (out, entries.found),
                Cut::TooLong => out.push("<too long>".into()),
                Cut::Entry => out.push(String::from_utf8(buf.to_vec()).expect("utf-8")),
            }
        }
    }

    #[test]
    fn entries_are_cut_whole_however_the_file_is_read() {
        let doc = r#"{"log": {"version": "1.2", "creator": {"name": "x [{", "entries": "no"},
            "pages": [{"entries": [1]}],
            "entries" : [ {"a": "}]\"{", "b": [1, {"c": 2}]}, 7, "s,]", {} ,[true] ],
            "comment": "entries"}, "entries": [{"not": "this"}]}"#;
        let want = [r#"{"a": "}]\"{", "b": [1, {"c": 2}]}"#, "7", r#""s,]""#, "{}", "[true]"];
        for piece in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(cut(doc, piece), (want.iter().map(|s| s.to_string()).collect(), true), "{piece}");
        }
    }

    #[test]
    fn a_file_without_log_entries_has_none_and_a_cut_one_hands_on_its_last_part() {
        assert_eq!(cut(r#"{"entries": [{"a": 1}], "log": {}}"#, 5), (vec![], false));
        assert_eq!(cut("[1, 2]", 5), (vec![], false));
        assert_eq!(cut("", 5), (vec![], false));
        let (units, found) = cut(r#"{"log": {"entries": [{"a": 1}, {"b": "#, 3);
        assert!(found);
        assert_eq!(units, vec![r#"{"a": 1}"#.to_string(), r#"{"b": "#.to_string()]);
    }
}
