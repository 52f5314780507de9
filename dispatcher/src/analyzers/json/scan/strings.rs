//! Strings: read at their opening quote, borrowed from the line unless they hold escapes,
//! their ends found with `memchr`; `\u` escapes with surrogate pairs combined.

use std::borrow::Cow;

use memchr::memchr2;

use super::{Reader, Result};

impl<'a> Reader<'a> {
    /// Reads a string at its opening quote: borrowed from the line unless it holds escapes.
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>> {
        self.at += 1;
        let start = self.at;
        let mut owned: Option<String> = None;
        loop {
            let Some(found) = memchr2(b'"', b'\\', &self.bytes()[self.at..]) else {
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
            let Some(found) = memchr2(b'"', b'\\', &self.bytes()[self.at..]) else {
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
