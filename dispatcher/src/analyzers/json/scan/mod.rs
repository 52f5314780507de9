//! A JSON reader made for the json analyzer's one pass over a line: it walks the object
//! member by member, reads the values the analyzer picks ([`Val`], strings borrowed from the
//! line where they hold no escapes) and skips the others without building them.
//!
//! Why not serde_json: its visitor machinery was ~35 % of the dispatcher's CPU in bench (a),
//! and it scans strings 8 bytes at a time. Here string ends are found with `memchr` (SIMD),
//! the line is checked as UTF-8 once, up front, with `simdutf8`, and a skipped value is only
//! checked, never built. What it accepts is JSON (RFC 8259) with one leniency: a control
//! character inside a string (a raw tab, say) is taken as it is, where strict JSON asks for
//! it escaped; a recorder that forgot to escape a tab loses nothing. Numbers follow JSON's
//! grammar; an integer beyond 64 bits reads as a float, as in serde_json.

mod strings;

use std::borrow::Cow;
use std::fmt;

/// Objects and arrays nested deeper than this are refused (serde_json's limit too), so no
/// line can exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Where and why a line is not JSON.
#[derive(Debug, PartialEq)]
pub(super) struct SyntaxError {
    /// Byte offset in the line.
    pub(super) at: usize,
    pub(super) what: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.what, self.at + 1)
    }
}

type Result<T> = std::result::Result<T, SyntaxError>;

/// A value as read in the one pass: strings and numbers kept, objects and arrays skipped
/// (only their kind is kept, to say what was wrong).
#[derive(Debug, PartialEq)]
pub(super) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Null,
    Object,
    Array,
}

impl<'a> Val<'a> {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// A whole number from 0 up.
    pub(super) fn as_u64(&self) -> Option<u64> {
        match *self {
            Val::Int(i) => u64::try_from(i).ok(),
            Val::Uint(u) => Some(u),
            _ => None,
        }
    }

    pub(super) fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a malformed-input sample shows it.
    pub(super) fn describe(&self) -> String {
        match self {
            Val::Str(s) => format!("{s:?}"),
            Val::Int(i) => i.to_string(),
            Val::Uint(u) => u.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Null => "null".into(),
            Val::Object => "an object".into(),
            Val::Array => "an array".into(),
        }
    }
}

/// A cursor over one line of JSON text.
pub(super) struct Reader<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `line`, which must be UTF-8 (checked here, once for the whole line).
    pub(super) fn new(line: &'a [u8]) -> Result<Reader<'a>> {
        match simdutf8::compat::from_utf8(line) {
            Ok(s) => Ok(Reader { s, at: 0 }),
            Err(e) => Err(SyntaxError { at: e.valid_up_to(), what: "not UTF-8" }),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.s.as_bytes()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T> {
        Err(SyntaxError { at: self.at, what })
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Result<u8> {
        let b = self.bytes();
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(self.at) {
            self.at += 1;
        }
        match b.get(self.at) {
            Some(&c) => Ok(c),
            None => self.fail("unexpected end of line"),
        }
    }

    /// The first byte of the next value (`{`, `[`, `"`, a digit…), not consumed.
    pub(super) fn value_kind(&mut self) -> Result<u8> {
        self.peek()
    }

    /// Where the reader stands (for [`Reader::since`]).
    pub(super) fn offset(&self) -> usize {
        self.at
    }

    /// The text read since `start` (an [`offset`](Reader::offset)).
    pub(super) fn since(&self, start: usize) -> &'a str {
        self.s.get(start..self.at).unwrap_or_default().trim_start()
    }

    /// Only whitespace is left.
    pub(super) fn end(&mut self) -> Result<()> {
        match self.peek() {
            Err(_) => Ok(()),
            Ok(_) => self.fail("characters after the object"),
        }
    }

    /// Enters an object: consumes its `{`. Then [`Reader::member`] reads its keys.
    pub(super) fn object(&mut self) -> Result<()> {
        if self.peek()? != b'{' {
            return self.fail("expected an object");
        }
        self.at += 1;
        Ok(())
    }

    /// The key of the next member of an object, its `:` consumed (the caller then reads or
    /// skips the value), or `None` after the object's `}`. `n` is the members read so far.
    pub(super) fn member(&mut self, n: usize) -> Result<Option<Cow<'a, str>>> {
        if !self.next_key(n)? {
            return Ok(None);
        }
        let key = self.string()?;
        self.colon()?;
        Ok(Some(key))
    }

    /// Moves to the opening quote of the next member's key (past the `,` before it), or past
    /// the object's `}` (`false`).
    fn next_key(&mut self, n: usize) -> Result<bool> {
        match self.peek()? {
            b'}' => {
                self.at += 1;
                return Ok(false);
            }
            b',' if n > 0 => {
                self.at += 1;
                self.peek()?;
            }
            _ if n > 0 => return self.fail("expected `,` or `}`"),
            _ => {}
        }
        if self.bytes()[self.at] != b'"' {
            return self.fail("expected a key");
        }
        Ok(true)
    }

    fn colon(&mut self) -> Result<()> {
        if self.peek()? != b':' {
            return self.fail("expected `:`");
        }
        self.at += 1;
        Ok(())
    }

    /// Enters an array: consumes its `[`. Then [`Reader::element`] says whether a value follows.
    pub(super) fn array(&mut self) -> Result<()> {
        if self.peek()? != b'[' {
            return self.fail("expected an array");
        }
        self.at += 1;
        Ok(())
    }

    /// Whether another element follows (its `,` consumed; the caller reads it), or `false`
    /// after the array's `]`. `n` is the elements read so far.
    pub(super) fn element(&mut self, n: usize) -> Result<bool> {
        match self.peek()? {
            b']' => {
                self.at += 1;
                Ok(false)
            }
            b',' if n > 0 => {
                self.at += 1;
                Ok(true)
            }
            _ if n > 0 => self.fail("expected `,` or `]`"),
            _ => Ok(true),
        }
    }

    /// Reads one value; objects and arrays are checked and skipped.
    pub(super) fn value(&mut self) -> Result<Val<'a>> {
        Ok(match self.peek()? {
            b'"' => Val::Str(self.string()?),
            b'{' => {
                self.skip(0)?;
                Val::Object
            }
            b'[' => {
                self.skip(0)?;
                Val::Array
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => self.literal()?,
        })
    }

    /// Checks one value and moves past it without building it.
    pub(super) fn skip(&mut self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return self.fail("nested too deep");
        }
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => {
                self.object()?;
                let mut n = 0;
                while self.member_skipping_key(n)? {
                    self.skip(depth + 1)?;
                    n += 1;
                }
                Ok(())
            }
            b'[' => {
                self.array()?;
                let mut n = 0;
                while self.element(n)? {
                    self.skip(depth + 1)?;
                    n += 1;
                }
                Ok(())
            }
            b'-' | b'0'..=b'9' => self.number_end().map(drop),
            _ => self.literal().map(drop),
        }
    }

    /// [`Reader::member`] for a skipped object: the key is checked, not built.
    fn member_skipping_key(&mut self, n: usize) -> Result<bool> {
        if !self.next_key(n)? {
            return Ok(false);
        }
        self.skip_string()?;
        self.colon()?;
        Ok(true)
    }

    fn literal(&mut self) -> Result<Val<'a>> {
        let rest = &self.bytes()[self.at..];
        let (val, len) = if rest.starts_with(b"true") {
            (Val::Bool(true), 4)
        } else if rest.starts_with(b"false") {
            (Val::Bool(false), 5)
        } else if rest.starts_with(b"null") {
            (Val::Null, 4)
        } else {
            return self.fail("expected a value");
        };
        self.at += len;
        Ok(val)
    }

    /// Moves past a number, checked against JSON's grammar; says whether it is an integer.
    fn number_end(&mut self) -> Result<bool> {
        let b = self.bytes();
        let digits = |at: &mut usize| {
            let start = *at;
            while b.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > start
        };
        let mut at = self.at;
        if b[at] == b'-' {
            at += 1;
        }
        match b.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return self.fail("invalid number"),
        }
        let mut integer = true;
        if b.get(at) == Some(&b'.') {
            at += 1;
            integer = false;
            if !digits(&mut at) {
                self.at = at;
                return self.fail("invalid number");
            }
        }
        if let Some(b'e' | b'E') = b.get(at) {
            at += 1;
            integer = false;
            if let Some(b'+' | b'-') = b.get(at) {
                at += 1;
            }
            if !digits(&mut at) {
                self.at = at;
                return self.fail("invalid number");
            }
        }
        self.at = at;
        Ok(integer)
    }

    fn number(&mut self) -> Result<Val<'a>> {
        let start = self.at;
        let integer = self.number_end()?;
        let text = &self.s[start..self.at];
        if integer {
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Val::Uint(u));
            }
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Val::Int(i));
            }
        }
        // invariant: `text` follows JSON's number grammar, which f64's parser accepts.
        Ok(Val::Float(text.parse::<f64>().unwrap_or(f64::NAN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn value(text: &str) -> Result<Val<'_>> {
        let mut r = Reader::new(text.as_bytes())?;
        let v = r.value()?;
        r.end().map(|()| v)
    }

    /// Why `text` is not JSON.
    pub(super) fn fault(text: &str) -> &'static str {
        value(text).expect_err(text).what
    }

    #[test]
    fn numbers_follow_json_grammar() {
        assert_eq!(value("0"), Ok(Val::Uint(0)));
        assert_eq!(value("-12"), Ok(Val::Int(-12)));
        assert_eq!(value("18446744073709551615"), Ok(Val::Uint(u64::MAX)));
        assert_eq!(value("18446744073709551616"), Ok(Val::Float(18446744073709551616.0)));
        assert_eq!(value("-1.5e3"), Ok(Val::Float(-1500.0)));
        assert_eq!(value("2E-2"), Ok(Val::Float(0.02)));
        for bad in ["01", "1.", ".5", "-", "1e", "1e+", "+1", "0x10", "1.e3", "--1"] {
            assert!(value(bad).is_err(), "{bad} is not a JSON number");
        }
    }

    #[test]
    fn objects_and_arrays_are_checked_and_skipped() {
        assert_eq!(value(r#" { "a" : [1, {"b":null}, "x\"]"], "c":{} } "#), Ok(Val::Object));
        assert_eq!(value("[]"), Ok(Val::Array));
        assert_eq!(value("[true,false,null]"), Ok(Val::Array));
        for bad in
            ["{", "{\"a\"}", "{\"a\":1,}", "[1,]", "[1 2]", "{1:2}", "{\"a\":1 \"b\":2}", "[nul]", "{}x"]
        {
            assert!(value(bad).is_err(), "{bad} is not JSON");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert_eq!(fault(&deep), "nested too deep");
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(value(&fine), Ok(Val::Array));
    }

    #[test]
    fn members_are_read_in_order() {
        let mut r = Reader::new(br#"{"a":1, "b" : "x" ,"c":[2]}"#).expect("utf-8");
        r.object().expect("object");
        let mut seen = Vec::new();
        while let Some(k) = r.member(seen.len()).expect("member") {
            let start = r.offset();
            r.skip(0).expect("value");
            seen.push(format!("{k}={}", r.since(start)));
        }
        r.end().expect("end");
        assert_eq!(seen, ["a=1", "b=\"x\"", "c=[2]"]);
    }

    /// What serde_json accepts, this reader accepts, and the other way round, over random
    /// mutations of a line (control characters in strings and numbers past f64 aside).
    #[test]
    fn it_agrees_with_serde_json_on_what_is_json() {
        let seed = br#"{"ts":1.5e3,"a":[true,false,null,{"b":"c\u00e9\n"}],"n":-0,"s":"x\"y"}"#;
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..30_000 {
            let mut line = seed.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = next() % (line.len() + 1);
                match next() % 3 {
                    0 if at < line.len() => {
                        let alphabet = b"{}[],:\"\\0123456789.eE+-tfnul x";
                        line[at] = alphabet[next() % alphabet.len()];
                    }
                    1 if at < line.len() => drop(line.remove(at)),
                    _ => {
                        let alphabet = b"{}[],:\"\\09.e-";
                        line.insert(at, alphabet[next() % alphabet.len()]);
                    }
                }
            }
            if line.iter().any(|&b| b < 0x20) {
                continue;
            }
            let ours = Reader::new(&line).and_then(|mut r| r.skip(0).and_then(|()| r.end())).is_ok();
            let theirs = serde_json::from_slice::<serde::de::IgnoredAny>(&line);
            if theirs.as_ref().is_err_and(|e| e.to_string().contains("out of range")) {
                continue;
            }
            assert_eq!(ours, theirs.is_ok(), "{}", String::from_utf8_lossy(&line));
            if ours { valid += 1 } else { invalid += 1 }
        }
        assert!(valid > 1000 && invalid > 1000, "both kinds met: {valid} valid, {invalid} invalid");
    }
}
