//! Cuts a byte stream into units: lines, or GoReplay records ending at the separator line.
//! A unit longer than [`MAX_UNIT`] is skipped whole (counted) and reading goes on after it;
//! memory stays bounded by that limit whatever the file size.
//!
//! Units are written one after another into blocks of [`BLOCK`] bytes and handed out as
//! slices of their block (`Bytes`): one copy out of the reader and one allocation per block,
//! not per unit. A block is freed when the last record parsed from it is.

use std::io::{self, BufRead};

use bytes::{Bytes, BytesMut};

use crate::analyzers::{Framing, GOR_SEPARATOR, Parsed};

/// Largest unit accepted (lines of at least 1 MiB must work).
pub const MAX_UNIT: usize = 16 << 20;

/// Size of the blocks units are read into (a longer unit gets a block of its own size).
pub const BLOCK: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Unit {
    /// A unit is in the buffer.
    Ready,
    /// A unit longer than MAX_UNIT was skipped.
    TooLong,
    Eof,
}

/// Reads one line (without its newline) into `buf`; never holds more than MAX_UNIT bytes.
fn read_line(r: &mut (impl BufRead + ?Sized), buf: &mut impl LineBuf) -> io::Result<Unit> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if too_long {
                Unit::TooLong
            } else if any {
                Unit::Ready
            } else {
                Unit::Eof
            });
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long && buf.len() + take <= MAX_UNIT + 1 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(take);
        if done {
            buf.drop_newline();
            return Ok(if too_long { Unit::TooLong } else { Unit::Ready });
        }
    }
}

/// What a line is read into: the unit's block, or a line of a GoReplay unit.
trait LineBuf {
    fn clear(&mut self);
    fn len(&self) -> usize;
    fn extend_from_slice(&mut self, part: &[u8]);
    /// Drops the trailing newline, if any.
    fn drop_newline(&mut self);
}

impl LineBuf for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn extend_from_slice(&mut self, part: &[u8]) {
        Vec::extend_from_slice(self, part);
    }
    fn drop_newline(&mut self) {
        if self.last() == Some(&b'\n') {
            self.pop();
        }
    }
}

impl LineBuf for BytesMut {
    fn clear(&mut self) {
        BytesMut::clear(self);
    }
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn extend_from_slice(&mut self, part: &[u8]) {
        if self.capacity() - self.len() < part.len() {
            // A new block (what was split off stays with its records).
            self.reserve(part.len().max(BLOCK));
        }
        BytesMut::extend_from_slice(self, part);
    }
    fn drop_newline(&mut self) {
        if self.last() == Some(&b'\n') {
            self.truncate(self.len() - 1);
        }
    }
}

/// Reads the next unit of the given framing into `buf`.
pub fn read_unit(
    r: &mut (impl BufRead + ?Sized),
    framing: Framing,
    buf: &mut BytesMut,
    line: &mut Vec<u8>,
) -> io::Result<Unit> {
    match framing {
        Framing::Lines => read_line(r, buf),
        Framing::Gor => {
            buf.clear();
            let mut too_long = false;
            loop {
                match read_line(r, line)? {
                    Unit::Eof => {
                        return Ok(if too_long {
                            Unit::TooLong
                        } else if buf.is_empty() {
                            Unit::Eof
                        } else {
                            Unit::Ready
                        });
                    }
                    Unit::TooLong => too_long = true,
                    Unit::Ready if line.as_slice() == GOR_SEPARATOR.as_bytes() => {
                        return Ok(if too_long { Unit::TooLong } else { Unit::Ready });
                    }
                    Unit::Ready => {
                        if buf.len() + line.len() + 1 > MAX_UNIT {
                            too_long = true;
                        }
                        if !too_long {
                            LineBuf::extend_from_slice(buf, line);
                            LineBuf::extend_from_slice(buf, b"\n");
                        } else {
                            buf.clear();
                        }
                    }
                }
            }
        }
    }
}

/// How a unit parse ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The input is exhausted.
    End,
    /// `emit` refused a record (the merge is gone) or the job was cancelled.
    Stopped,
}

/// Parses every unit of `reader`, handing each record to `emit` until it returns false.
/// Malformed and skipped units are counted in the job's accounting. `at` counts the units
/// read; units up to its value on entry were read by an earlier attempt (a download retried
/// after a network error) and are passed over, neither emitted nor counted again. On a read
/// error `at` tells where to resume.
pub fn parse_units(
    reader: &mut dyn BufRead,
    source: &str,
    ctx: &super::SourceContext,
    at: &mut u64,
    mut emit: impl FnMut(crate::record::Record) -> bool,
) -> io::Result<ReadEnd> {
    let framing = ctx.analyzer.framing();
    let (mut buf, mut line) = (BytesMut::new(), Vec::new());
    let resume = *at;
    let mut n = 0u64;
    let mut latest = ctx.times.latest();
    loop {
        // A token's check takes a lock, the clock a read: once per 256 units is soon enough.
        if n.is_multiple_of(256) {
            if ctx.cancel.is_cancelled() {
                return Ok(ReadEnd::Stopped);
            }
            latest = ctx.times.latest();
        }
        let unit = read_unit(reader, framing, &mut buf, &mut line)?;
        // The unit leaves the block; the block's free part takes the next one.
        let bytes: Bytes = buf.split().freeze();
        n += 1;
        if n <= resume && unit != Unit::Eof {
            continue;
        }
        *at = n;
        match unit {
            Unit::Eof => return Ok(ReadEnd::End),
            Unit::TooLong => ctx.accounting.malformed("too_long", "unit longer than 16 MiB", b"", source, n),
            Unit::Ready if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Unit::Ready => match ctx.analyzer.parse(&bytes) {
                Parsed::Record(r) => match ctx.times.check(r.ts, latest) {
                    Ok(()) => {
                        ctx.accounting.unit_bytes(bytes.len() as u64);
                        if let Some(r) = ctx.shaping.apply(r, &ctx.accounting)
                            && !emit(r)
                        {
                            return Ok(ReadEnd::Stopped);
                        }
                    }
                    Err(detail) => ctx.accounting.malformed("implausible_time", &detail, &bytes, source, n),
                },
                Parsed::Skipped(reason) => {
                    ctx.accounting.unit_bytes(bytes.len() as u64);
                    ctx.accounting.skipped(reason);
                }
                Parsed::Malformed { reason, detail } => {
                    ctx.accounting.malformed(reason, &detail, &bytes, source, n)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(input: &[u8], framing: Framing) -> Vec<Result<Vec<u8>, Unit>> {
        let mut r = io::BufReader::with_capacity(7, input);
        let (mut buf, mut line, mut out) = (BytesMut::new(), Vec::new(), Vec::new());
        loop {
            match read_unit(&mut r, framing, &mut buf, &mut line).expect("reads") {
                Unit::Ready => out.push(Ok(buf.split().to_vec())),
                Unit::TooLong => out.push(Err(Unit::TooLong)),
                Unit::Eof => return out,
            }
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_with_or_without_a_last_one() {
        let got = units(b"a\nbcdefghij\n\nlast", Framing::Lines);
        assert_eq!(got, vec![Ok(b"a".to_vec()), Ok(b"bcdefghij".to_vec()), Ok(vec![]), Ok(b"last".to_vec())]);
    }

    /// Units are slices of one block, not copies of their own; a block that fills up is
    /// followed by a fresh one and the units already out keep theirs.
    #[test]
    fn units_share_their_block() {
        let line = vec![b'x'; 1000];
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let mut r = io::BufReader::with_capacity(4096, input.as_slice());
        let (mut buf, mut scratch) = (BytesMut::new(), Vec::new());
        let mut units = Vec::new();
        while read_unit(&mut r, Framing::Lines, &mut buf, &mut scratch).expect("reads") == Unit::Ready {
            units.push(buf.split().freeze());
        }
        assert_eq!(units.len(), 100);
        assert!(units.iter().all(|u| u.as_ref() == line.as_slice()));
        let adjacent = units.windows(2).filter(|w| w[1].as_ptr() == w[0].as_ptr().wrapping_add(1000)).count();
        // 65 lines of 1,000 bytes fit in a 64 KiB block: one new block for 100 lines.
        assert_eq!(adjacent, 98, "all but one unit follow the previous one in its block");
    }

    #[test]
    fn a_huge_line_is_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_UNIT + 10];
        input.extend_from_slice(b"\nnext\n");
        let got = units(&input, Framing::Lines);
        assert_eq!(got, vec![Err(Unit::TooLong), Ok(b"next".to_vec())]);
    }

    #[test]
    fn a_one_mib_line_is_kept() {
        let mut input = vec![b'y'; 1 << 20];
        input.push(b'\n');
        let got = units(&input, Framing::Lines);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().map(Vec::len), Ok(1 << 20));
    }

    #[test]
    fn gor_units_end_at_the_separator_line() {
        let sep = GOR_SEPARATOR;
        let input =
            format!("1 a 1 0\nGET / HTTP/1.1\r\n\r\n\n{sep}\n2 b 2 0\nHTTP/1.1 200 OK\r\n\r\n\n{sep}\n");
        let got = units(input.as_bytes(), Framing::Gor);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().expect("unit"), b"1 a 1 0\nGET / HTTP/1.1\r\n\r\n\n");
    }
}
