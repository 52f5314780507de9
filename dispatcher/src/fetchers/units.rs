//! Cuts a byte stream into units: lines, or GoReplay records ending at the separator line.
//! A unit longer than [`MAX_UNIT`] is skipped whole (counted) and reading goes on after it;
//! memory stays bounded by that limit whatever the file size.

use std::io::{self, BufRead};

use crate::analyzers::{Framing, GOR_SEPARATOR};

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
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Unit> {
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
    r: &mut impl BufRead,
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
