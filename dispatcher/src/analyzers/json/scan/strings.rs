//! Strings: read at their opening quote, borrowed from the line unless they hold escapes,
//! their ends found by [`quote_or_backslash`]; `\u` escapes with surrogate pairs combined.

use std::borrow::Cow;

use memchr::memchr2;

use super::{Reader, Result};

/// Bytes scanned a word at a time before a string is handed to `memchr`.
const SHORT: usize = 32;

/// Where the first `"` or `\` of `b` is. Most strings of a recording are short (keys,
/// methods, header values): they are scanned 8 bytes at a time in place, since `memchr`'s
/// SIMD search costs more to set up than a key's whole scan (callgrind: ~57 instructions a
/// call with `memchr2`, ~43 with this). Past [`SHORT`] bytes, `memchr` takes over.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // A byte of `x` is zero where the high bit of this is set, and the lowest set bit is
    // exact: a borrow only reaches bytes above a zero byte.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut at = 0;
    while at < SHORT {
        let Some(word) = b.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            return b[at..].iter().position(|&c| c == b'"' || c == b'\\').map(|i| at + i);
        };
        let w = u64::from_le_bytes(word);
        let found = zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr2(b'"', b'\\', &b[at..]).map(|i| at + i)
}

impl<'a> Reader<'a> {
    /// Reads a string at its opening quote: borrowed from the line unless it holds escapes.
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>> {
        self.at += 1;
        let start = self.at;
        let mut owned: Option<String> = None;
        loop {
            let Some(found) = quote_or_backslash(&self.bytes()[self.at..]) else {
                self.at = self.s.len();
                return self.fail("unterminated string");
            };
            // Quotes and backslashes are ASCII, so these are character boundaries.
            let stop = self.at + found;
            let piece = &self.s[self.at..stop];
            self.at = stop + 1;
            if self.bytes()[stop] == b'"' {
                return Ok(match owned {
                    None => Cow::Borrowed(&self.s[start..stop]),
                    Some(mut o) => {
                        o.push_str(piece);
                        Cow::Owned(o)
                    }
                });
            }
            let o = owned.get_or_insert_with(|| String::with_capacity(stop - start + 16));
            o.push_str(piece);
            let c = self.escape()?;
            o.push(c);
        }
    }

    /// The character an escape stands for, read after its backslash.
    fn escape(&mut self) -> Result<char> {
        let Some(&e) = self.bytes().get(self.at) else { return self.fail("unterminated string") };
        self.at += 1;
        Ok(match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if !self.bytes()[self.at..].starts_with(b"\\u") {
                            return self.fail("lone surrogate in \\u escape");
                        }
                        self.at += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return self.fail("lone surrogate in \\u escape");
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return self.fail("lone surrogate in \\u escape"),
                    c => c,
                };
                // invariant: surrogates were combined or refused above.
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            _ => {
                self.at -= 1;
                return self.fail("invalid escape");
            }
        })
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.s.get(self.at..self.at + 4).filter(|d| d.bytes().all(|c| c.is_ascii_hexdigit()));
        let Some(code) = digits.and_then(|d| u32::from_str_radix(d, 16).ok()) else {
            return self.fail("invalid \\u escape");
        };
        self.at += 4;
        Ok(code)
    }

    /// Moves past a string at its opening quote, checking its escapes, building nothing.
    pub(super) fn skip_string(&mut self) -> Result<()> {
        self.at += 1;
        loop {
            let Some(found) = quote_or_backslash(&self.bytes()[self.at..]) else {
                self.at = self.s.len();
                return self.fail("unterminated string");
            };
            let stop = self.at + found;
            self.at = stop + 1;
            if self.bytes()[stop] == b'"' {
                return Ok(());
            }
            self.escape()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::tests::{fault, value};
    use super::super::{Reader, SyntaxError, Val};

    #[test]
    fn the_first_quote_or_backslash_is_found_at_every_length_and_place() {
        // Fillers next to the two bytes and with the high bit set, where a word-at-a-time
        // scan could go wrong (a borrow, a byte that is `"` + 0x80).
        let fillers = [b'a', b'!', b'#', b'[', b']', 0x00, 0x80, 0xa2, 0xdc, 0xff];
        for len in 0..80 {
            for (k, &fill) in fillers.iter().enumerate() {
                let base: Vec<u8> = (0..len)
                    .map(|i| if i % 3 == 0 { fillers[(k + i) % fillers.len()] } else { fill })
                    .collect();
                assert_eq!(super::quote_or_backslash(&base), None, "{base:?}");
                for at in 0..len {
                    for (target, later) in [(b'"', b'\\'), (b'\\', b'"')] {
                        let mut b = base.clone();
                        b[at] = target;
                        if at + 1 < len {
                            b[len - 1] = later;
                        }
                        let want = b.iter().position(|&c| c == b'"' || c == b'\\');
                        assert_eq!(super::quote_or_backslash(&b), want, "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        assert!(matches!(value(r#""plain é""#), Ok(Val::Str(Cow::Borrowed("plain é")))));
        let Ok(Val::Str(Cow::Owned(s))) = value(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude48""#) else {
            panic!("an owned string")
        };
        assert_eq!(s, "a\"b\\c/d\u{8}\u{c}\n\r\té🙈");
        assert_eq!(value("\"tab\there\""), Ok(Val::Str("tab\there".into())), "lenient on control characters");
    }

    #[test]
    fn bad_strings_say_where() {
        assert_eq!(fault(r#""abc"#), "unterminated string");
        assert_eq!(value(r#""a\q""#), Err(SyntaxError { at: 3, what: "invalid escape" }));
        assert_eq!(fault(r#""\u12g4""#), "invalid \\u escape");
        assert_eq!(fault(r#""\ud83d""#), "lone surrogate in \\u escape");
        assert_eq!(fault(r#""\ude48""#), "lone surrogate in \\u escape");
        assert_eq!(fault(r#""\ud83d\u0041""#), "lone surrogate in \\u escape");
        assert_eq!(value("\"\\"), Err(SyntaxError { at: 2, what: "unterminated string" }));
        assert_eq!(Reader::new(b"\"a\xff\"").err(), Some(SyntaxError { at: 2, what: "not UTF-8" }));
    }
}
