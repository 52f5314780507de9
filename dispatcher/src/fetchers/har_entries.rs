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
            let did = if self.string {
                self.string_byte(b)
            } else if matches!(self.entry, Some(Entry::Nested(_) | Entry::Word)) {
                self.entry_byte(b)
            } else {
                self.outer_byte(b)
            };
            match did {
                Byte::Goes => {}
                Byte::Begins => began = Some(i),
                Byte::EndsBefore => return Step { used: i, began, done: true },
                Byte::EndsWith => return Step { used: i + 1, began, done: true },
            }
        }
        Step { used: chunk.len(), began, done: false }
    }

    /// A byte inside a string: its end (which ends an entry that is a string), an escape,
    /// or part of a key being read.
    fn string_byte(&mut self, b: u8) -> Byte {
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
                return Byte::EndsWith;
            }
            return Byte::Goes;
        }
        if let Some(key) = self.key.as_mut().filter(|k| k.len() < 16) {
            key.push(b);
        }
        Byte::Goes
    }

    /// A byte of an entry that is an object, an array or a bare word, outside its strings.
    fn entry_byte(&mut self, b: u8) -> Byte {
        match (self.entry, b) {
            (Some(Entry::Word), b',' | b']') => self.end(Byte::EndsBefore),
            (Some(Entry::Word), _) if b.is_ascii_whitespace() => self.end(Byte::EndsBefore),
            (Some(Entry::Nested(_)), b'"') => {
                self.string = true;
                Byte::Goes
            }
            (Some(Entry::Nested(depth)), b'{' | b'[') => {
                self.entry = Some(Entry::Nested(depth + 1));
                Byte::Goes
            }
            (Some(Entry::Nested(1)), b'}' | b']') => self.end(Byte::EndsWith),
            (Some(Entry::Nested(depth)), b'}' | b']') => {
                self.entry = Some(Entry::Nested(depth - 1));
                Byte::Goes
            }
            _ => Byte::Goes,
        }
    }

    fn end(&mut self, how: Byte) -> Byte {
        self.entry = None;
        how
    }

    /// A byte between entries: the document's structure around `log.entries`, or the start
    /// of an entry.
    fn outer_byte(&mut self, b: u8) -> Byte {
        let top = self.stack.last().copied();
        let at_entries = top == Some(Frame::Entries);
        match b {
            _ if b.is_ascii_whitespace() => {}
            b'"' if at_entries => {
                self.string = true;
                self.entry = Some(Entry::Str);
                return Byte::Begins;
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
                return Byte::Begins;
            }
            b'{' | b'[' => self.open(top, b),
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
                return Byte::Begins;
            }
            _ => {}
        }
        Byte::Goes
    }

    /// A container opens outside the entries: the document, `log`, `log.entries`, or
    /// another.
    fn open(&mut self, top: Option<Frame>, b: u8) {
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
}

/// What one byte did to the entry under way.
#[derive(Clone, Copy)]
enum Byte {
    Goes,
    /// An entry begins at it.
    Begins,
    /// The entry ended just before it (a bare word, at the byte after it).
    EndsBefore,
    /// The entry ends with it.
    EndsWith,
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
