//! Cuts a byte stream into units: lines, or GoReplay records ending at the separator line.
//! A unit longer than [`MAX_UNIT`] is skipped whole (counted) and reading goes on after it;
//! memory stays bounded by that limit whatever the file size.

use std::io::{self, BufRead};

use crate::analyzers::{Framing, GOR_SEPARATOR, Parsed};

/// Largest unit accepted (lines of at least 1 MiB must work).
pub const MAX_UNIT: usize = 16 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Unit {
    /// A unit is in the buffer.
    Ready,
    /// A unit longer than MAX_UNIT was skipped.
    TooLong,
    Eof,
}

/// Reads one line (without its newline) into `buf`; never holds more than MAX_UNIT bytes.
fn read_line(r: &mut (impl BufRead + ?Sized), buf: &mut Vec<u8>) -> io::Result<Unit> {
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
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
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
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            return Ok(if too_long { Unit::TooLong } else { Unit::Ready });
        }
    }
}

/// Reads the next unit of the given framing into `buf`.
pub fn read_unit(
    r: &mut (impl BufRead + ?Sized),
    framing: Framing,
    buf: &mut Vec<u8>,
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
                            buf.extend_from_slice(line);
                            buf.push(b'\n');
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
    let (mut buf, mut line) = (Vec::new(), Vec::new());
    let resume = *at;
    let mut n = 0u64;
    while !ctx.cancel.is_cancelled() {
        let unit = read_unit(reader, framing, &mut buf, &mut line)?;
        n += 1;
        if n <= resume && unit != Unit::Eof {
            continue;
        }
        *at = n;
        match unit {
            Unit::Eof => return Ok(ReadEnd::End),
            Unit::TooLong => ctx.accounting.malformed("too_long", "unit longer than 16 MiB", b"", source, n),
            Unit::Ready if buf.iter().all(u8::is_ascii_whitespace) => {}
            // The unit is copied once, to its exact size: the record's fields are slices of it.
            Unit::Ready => match ctx.analyzer.parse(&bytes::Bytes::copy_from_slice(&buf)) {
                Parsed::Record(r) => {
                    ctx.accounting.unit_bytes(buf.len() as u64);
                    if !emit(r) {
                        return Ok(ReadEnd::Stopped);
                    }
                }
                Parsed::Skipped(reason) => {
                    ctx.accounting.unit_bytes(buf.len() as u64);
                    ctx.accounting.skipped(reason);
                }
                Parsed::Malformed { reason, detail } => {
                    ctx.accounting.malformed(reason, &detail, &buf, source, n)
                }
            },
        }
    }
    Ok(ReadEnd::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(input: &[u8], framing: Framing) -> Vec<Result<Vec<u8>, Unit>> {
        let mut r = io::BufReader::with_capacity(7, input);
        let (mut buf, mut line, mut out) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match read_unit(&mut r, framing, &mut buf, &mut line).expect("reads") {
                Unit::Ready => out.push(Ok(buf.clone())),
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
