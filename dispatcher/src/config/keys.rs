//! Object key patterns with time fields, e.g. `logs/{yyyy}/{MM}/{dd}/{HH}/*.jsonl.gz`
//! (`[fetcher.s3] prefix` + `key`), parsed once while the job file is loaded; the S3 fetcher
//! lists and matches with the parsed pattern.
//!
//! A pattern is a glob (`*` and `?` within a path segment, `**` across segments, `[abc]`)
//! with time fields {yyyy} {MM} {dd} {HH} {mm} in UTC. The fields give each object the period
//! it holds (an hour for the pattern above), so the S3 fetcher lists only the prefixes that
//! can hold `[begin, end]`, skips objects outside it without fetching them, and opens the
//! rest in time order.

use chrono::{DateTime, Datelike, Duration as Span, Months, NaiveDate, TimeZone, Timelike, Utc};
use regex::Regex;

use super::Range;

/// Listing prefixes enumerated at most; past this the pattern's literal prefix is listed.
const MAX_PREFIXES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
}

const FIELDS: [(&str, Field); 5] = [
    ("yyyy", Field::Year),
    ("MM", Field::Month),
    ("dd", Field::Day),
    ("HH", Field::Hour),
    ("mm", Field::Minute),
];

#[derive(Clone, Debug)]
enum Token {
    Lit(String),
    Field(Field),
    Glob,
}

/// A parsed key pattern.
#[derive(Clone, Debug)]
pub struct KeyPattern {
    /// As written (prefix and key).
    text: String,
    regex: Regex,
    /// Time fields in the order they appear (one capture group each).
    fields: Vec<Field>,
    tokens: Vec<Token>,
}

/// The time an object's key says it holds: `[start, start + len)` in Unix ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub len: i64,
}

/// Why a key pattern does not parse: what is wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyPatternError(String);

impl KeyPattern {
    /// Parses a pattern; `Err` says what is wrong and how to write it.
    pub fn parse(pattern: &str) -> Result<Self, KeyPatternError> {
        Self::parse_text(pattern).map_err(KeyPatternError)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn parse_text(pattern: &str) -> Result<Self, String> {
        let (mut re, mut fields, mut tokens) = (String::from("^"), Vec::new(), Vec::new());
        let mut chars = pattern.chars().peekable();
        let mut lit = String::new();
        while let Some(c) = chars.next() {
            let glob = match c {
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let Some(&(_, f)) = FIELDS.iter().find(|(n, _)| *n == name) else {
                        return Err(format!(
                            "unknown time field {{{name}}}; use {{yyyy}} {{MM}} {{dd}} {{HH}} {{mm}}"
                        ));
                    };
                    if fields.contains(&f) {
                        return Err(format!("time field {{{name}}} appears twice"));
                    }
                    flush_lit(&mut lit, &mut tokens);
                    tokens.push(Token::Field(f));
                    fields.push(f);
                    re.push_str(if f == Field::Year { r"(\d{4})" } else { r"(\d{2})" });
                    continue;
                }
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    ".*".to_owned()
                }
                '*' => "[^/]*".to_owned(),
                '?' => "[^/]".to_owned(),
                '[' => {
                    let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                    let class = class.strip_prefix('!').map_or(class.clone(), |rest| format!("^{rest}"));
                    format!("[{}]", class.replace('\\', "\\\\"))
                }
                c => {
                    lit.push(c);
                    re.push_str(&regex::escape(&c.to_string()));
                    continue;
                }
            };
            flush_lit(&mut lit, &mut tokens);
            tokens.push(Token::Glob);
            re.push_str(&glob);
        }
        flush_lit(&mut lit, &mut tokens);
        re.push('$');
        let mut sorted = fields.clone();
        sorted.sort();
        if sorted.iter().enumerate().any(|(i, f)| *f != FIELDS[i].1) {
            return Err("time fields must include every coarser one: {HH} needs {yyyy}, {MM} and {dd}".into());
        }
        let regex = Regex::new(&re).map_err(|e| format!("is not a valid key pattern: {e}"))?;
        Ok(Self { text: pattern.to_owned(), regex, fields, tokens })
    }

    pub fn has_time(&self) -> bool {
        !self.fields.is_empty()
    }

    /// `None` when the key does not match; `Some(None)` when it matches and the pattern has
    /// no time fields (or the key's date does not exist).
    pub fn period(&self, key: &str) -> Option<Option<Period>> {
        let caps = self.regex.captures(key)?;
        let mut v = [1970, 1, 1, 0, 0];
        for (i, f) in self.fields.iter().enumerate() {
            v[*f as usize] = caps.get(i + 1)?.as_str().parse().ok()?;
        }
        let finest = self.fields.iter().max();
        let start = NaiveDate::from_ymd_opt(v[0] as i32, v[1], v[2])
            .and_then(|d| d.and_hms_opt(v[3], v[4], 0))
            .map(|t| Utc.from_utc_datetime(&t));
        Some(
            finest
                .zip(start)
                .map(|(f, start)| Period { start: ns(start), len: ns(advance(start, *f)) - ns(start) }),
        )
    }

    /// Prefixes to list. With time fields before the first wildcard and a bounded range,
    /// one prefix per period that can hold the range; else the literal start of the pattern.
    pub fn prefixes(&self, range: Range) -> Vec<String> {
        let head: Vec<&Token> = self.tokens.iter().take_while(|t| !matches!(t, Token::Glob)).collect();
        let literal: String =
            head.iter().map_while(|t| if let Token::Lit(s) = t { Some(s.as_str()) } else { None }).collect();
        let finest = head.iter().filter_map(|t| if let Token::Field(f) = t { Some(*f) } else { None }).max();
        let (Some(finest), Some(begin), Some(end)) = (finest, range.begin, range.end) else {
            return vec![literal];
        };
        let mut at = truncate(DateTime::from_timestamp_nanos(begin.saturating_sub(range.window_ns)), finest);
        let last = DateTime::from_timestamp_nanos(end.saturating_add(range.window_ns));
        let mut out: Vec<String> = Vec::new();
        while at <= last {
            if out.len() == MAX_PREFIXES {
                return vec![literal];
            }
            out.push(head.iter().map(|t| render(t, at)).collect());
            at = advance(at, finest);
        }
        out.dedup();
        out
    }
}

fn flush_lit(lit: &mut String, tokens: &mut Vec<Token>) {
    if !lit.is_empty() {
        tokens.push(Token::Lit(std::mem::take(lit)));
    }
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn render(t: &Token, at: DateTime<Utc>) -> String {
    match t {
        Token::Lit(s) => s.clone(),
        Token::Field(Field::Year) => format!("{:04}", at.year()),
        Token::Field(Field::Month) => format!("{:02}", at.month()),
        Token::Field(Field::Day) => format!("{:02}", at.day()),
        Token::Field(Field::Hour) => format!("{:02}", at.hour()),
        Token::Field(Field::Minute) => format!("{:02}", at.minute()),
        Token::Glob => String::new(),
    }
}

fn truncate(t: DateTime<Utc>, f: Field) -> DateTime<Utc> {
    let (y, mo, d, h, mi) = (t.year(), t.month(), t.day(), t.hour(), t.minute());
    let parts = match f {
        Field::Year => (y, 1, 1, 0, 0),
        Field::Month => (y, mo, 1, 0, 0),
        Field::Day => (y, mo, d, 0, 0),
        Field::Hour => (y, mo, d, h, 0),
        Field::Minute => (y, mo, d, h, mi),
    };
    Utc.with_ymd_and_hms(parts.0, parts.1, parts.2, parts.3, parts.4, 0).single().unwrap_or(t)
}

fn advance(t: DateTime<Utc>, f: Field) -> DateTime<Utc> {
    let next = match f {
        Field::Year => t.checked_add_months(Months::new(12)),
        Field::Month => t.checked_add_months(Months::new(1)),
        Field::Day => t.checked_add_signed(Span::days(1)),
        Field::Hour => t.checked_add_signed(Span::hours(1)),
        Field::Minute => t.checked_add_signed(Span::minutes(1)),
    };
    next.unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn at(s: &str) -> i64 {
        crate::config::values::parse_rfc3339_ns(s).expect("time")
    }

    #[test]
    fn keys_match_the_glob_and_carry_their_period() {
        let p = KeyPattern::parse("logs/{yyyy}/{MM}/{dd}/{HH}/*.jsonl*").expect("pattern");
        let got = p.period("logs/2026/11/21/13/host-a.jsonl.gz").expect("match").expect("period");
        assert_eq!(got, Period { start: at("2026-11-21T13:00:00Z"), len: HOUR });
        assert!(p.period("logs/2026/11/21/13/sub/host-a.jsonl").is_none(), "* stays in its segment");
        assert!(p.period("other/2026/11/21/13/a.jsonl").is_none());
        let month = KeyPattern::parse("{yyyy}-{MM}/**").expect("pattern");
        let feb = month.period("2024-02/x/y.log").expect("match").expect("period");
        assert_eq!(feb.len, 29 * 24 * HOUR, "a month is as long as that month");
    }

    #[test]
    fn prefixes_cover_the_range_and_nothing_more() {
        let p = KeyPattern::parse("logs/{yyyy}/{MM}/{dd}/{HH}/*.gz").expect("pattern");
        let range = Range {
            begin: Some(at("2026-11-21T13:30:00Z")),
            end: Some(at("2026-11-21T15:10:00Z")),
            window_ns: 1_000_000_000,
        };
        assert_eq!(p.prefixes(range), ["logs/2026/11/21/13/", "logs/2026/11/21/14/", "logs/2026/11/21/15/"]);
        assert_eq!(p.prefixes(Range::default()), ["logs/"], "no range: the literal start");
    }

    #[test]
    fn bad_patterns_say_how_to_write_them() {
        assert!(KeyPattern::parse("{yy}/*").expect_err("field").to_string().contains("unknown time field"));
        assert!(KeyPattern::parse("{HH}/*").expect_err("coarser").to_string().contains("coarser"));
        assert!(KeyPattern::parse("{yyyy}/{yyyy}").expect_err("twice").to_string().contains("twice"));
    }
}
