//! `[[substitute]]`: a header's, a cookie's or a query parameter's value looked up in a
//! table of production value → staging value, whole or the part a pattern's first group
//! captures (`^Bearer (.+)$`). The tables are secrets: nothing here logs or reports a value
//! of them or of the record, not even in an error about the table (which names the line).

use std::collections::HashMap;

use bytes::Bytes;
use regex::bytes::Regex;

use crate::accounting::Accounting;
use crate::config::{Problem, SubstituteOn, SubstituteRule, Unmapped, not_a_regex};
use crate::record::{Record, Text};

#[derive(Debug)]
pub struct Substitute {
    on: SubstituteOn,
    name: String,
    pattern: Option<Regex>,
    table: HashMap<Box<[u8]>, Bytes>,
    unmapped: Unmapped,
    default: Bytes,
}

/// What one value became.
enum Mapped {
    /// The table's value, spliced in.
    Replaced(Vec<u8>),
    /// The table lacks it (or the pattern does not match it); the value the default makes
    /// of it, with `unmapped = "default"`.
    Unmapped(Option<Vec<u8>>),
}

impl Substitute {
    /// The rule with its pattern compiled and its table read; `None` when either cannot
    /// be, each a problem in `found` naming the key and the file or pattern, never a value
    /// of a table.
    pub fn load(rule: &SubstituteRule, index: usize, found: &mut Vec<Problem>) -> Option<Substitute> {
        let key = format!("substitute[{index}]");
        let subject = rule.subject();
        if subject.is_none() {
            found.push(Problem::new(&key, "", "needs exactly one of header, cookie or query"));
        }
        let pattern = rule.pattern.as_ref().and_then(|p| {
            Regex::new(p).map_err(|e| found.push(not_a_regex(&format!("{key}.pattern"), p, &e))).ok()
        });
        let path = rule.table.clone().unwrap_or_default();
        let table = read_table(&path)
            .map_err(|why| found.push(Problem::new(&format!("{key}.table"), format!("{path:?}"), &why)))
            .ok();
        let ((on, name), table) = (subject?, table?);
        if rule.pattern.is_some() && pattern.is_none() {
            return None;
        }
        Some(Substitute {
            on,
            name: name.to_owned(),
            pattern,
            table,
            unmapped: rule.unmapped,
            default: Bytes::from(rule.default.clone().unwrap_or_default()),
        })
    }

    /// Maps this rule's values in `r`, counting each under `rule`; `false` when the record
    /// is to be left out (a value the table lacks, with `unmapped = "drop"`: counted once).
    pub fn apply(&self, r: &mut Record, rule: usize, acc: &Accounting) -> bool {
        let mut drop = false;
        let mut each = |value: &[u8]| -> Option<Vec<u8>> {
            match self.map(value) {
                Mapped::Replaced(v) => {
                    acc.substituted(rule);
                    Some(v)
                }
                Mapped::Unmapped(default) => {
                    match self.unmapped {
                        Unmapped::Drop => drop = true,
                        Unmapped::Keep | Unmapped::Default => acc.unmapped(rule),
                    }
                    default
                }
            }
        };
        match self.on {
            SubstituteOn::Header => {
                for (_, v) in r.headers.iter_mut().filter(|(n, _)| n.is(&self.name)) {
                    if let Some(new) = each(v) {
                        *v = Bytes::from(new);
                    }
                }
            }
            SubstituteOn::Cookie => {
                for (_, v) in r.headers.iter_mut().filter(|(n, _)| n.is("cookie")) {
                    if let Some(new) = map_cookie(v, self.name.as_bytes(), &mut each) {
                        *v = Bytes::from(new);
                    }
                }
            }
            SubstituteOn::Query => {
                if let Some(new) = map_query(&r.path, &self.name, &mut each) {
                    r.path = new;
                }
            }
        }
        if drop {
            acc.unmapped(rule);
        }
        !drop
    }

    fn map(&self, value: &[u8]) -> Mapped {
        let span = match &self.pattern {
            None => Some(0..value.len()),
            Some(re) => re.captures(value).and_then(|c| c.get(1).or_else(|| c.get(0))).map(|m| m.range()),
        };
        let splice = |span: std::ops::Range<usize>, with: &[u8]| {
            let mut out = Vec::with_capacity(value.len() + with.len());
            out.extend_from_slice(&value[..span.start]);
            out.extend_from_slice(with);
            out.extend_from_slice(&value[span.end..]);
            out
        };
        match span {
            Some(span) => match self.table.get(&value[span.clone()]) {
                Some(staging) => Mapped::Replaced(splice(span, staging)),
                None => Mapped::Unmapped(
                    (self.unmapped == Unmapped::Default).then(|| splice(span, &self.default)),
                ),
            },
            None => Mapped::Unmapped((self.unmapped == Unmapped::Default).then(|| self.default.to_vec())),
        }
    }
}

/// The `Cookie` header `header` with the value of each cookie `name` mapped by `f`; `None`
/// when nothing changed. Separators and spaces stay as recorded.
fn map_cookie(header: &[u8], name: &[u8], f: &mut impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(header.len());
    let mut changed = false;
    for (i, seg) in header.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        let lead = seg.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
        let pair = &seg[lead..];
        if let Some(eq) = memchr::memchr(b'=', pair)
            && &pair[..eq] == name
            && let Some(new) = f(&pair[eq + 1..])
        {
            out.extend_from_slice(&seg[..lead + eq + 1]);
            out.extend_from_slice(&new);
            changed = true;
        } else {
            out.extend_from_slice(seg);
        }
    }
    changed.then_some(out)
}

/// The path with the value of each query parameter `name` mapped by `f` (as recorded, not
/// decoded); `None` when nothing changed.
fn map_query(path: &Text, name: &str, f: &mut impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Option<Text> {
    let (base, query) = path.split_once('?')?;
    let mut changed = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => match f(v.as_bytes()) {
                Some(new) => {
                    changed = true;
                    format!("{k}={}", String::from_utf8_lossy(&new))
                }
                None => pair.to_owned(),
            },
            _ => pair.to_owned(),
        })
        .collect();
    changed.then(|| Text::from(format!("{base}?{}", pairs.join("&"))))
}

/// A table of production value → staging value: a `.csv` file of two-field rows (`#`
/// comment lines, no header row, fields trimmed, quoted per RFC 4180 when they hold a
/// comma) or a `.json` object of strings. Errors name lines, never values.
fn read_table(path: &str) -> Result<HashMap<Box<[u8]>, Bytes>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let table = if path.ends_with(".json") { json_table(&data)? } else { csv_table(&data)? };
    if table.is_empty() {
        return Err("holds no values; a table maps at least one production value".into());
    }
    Ok(table)
}

fn csv_table(data: &[u8]) -> Result<HashMap<Box<[u8]>, Bytes>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let mut table: HashMap<Box<[u8]>, Bytes> = HashMap::new();
    let mut lines: HashMap<Box<[u8]>, u64> = HashMap::new();
    for row in reader.byte_records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(String::new(), |p| format!("line {}: ", p.line()));
            format!("{line}not readable as CSV; write one `production,staging` pair per line")
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let (Some(prod), Some(staging), None) = (row.get(0), row.get(1), row.get(2)) else {
            return Err(format!(
                "line {line} has {} fields; write one `production,staging` pair per line (quote a value that holds a comma)",
                row.len()
            ));
        };
        if prod.is_empty() {
            return Err(format!("line {line} has an empty production value"));
        }
        if staging.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("line {line}: the staging value holds CR, LF or NUL, which no header may"));
        }
        if let Some(earlier) = lines.get(prod)
            && table.get(prod).is_some_and(|v| v.as_ref() != staging)
        {
            return Err(format!(
                "line {line} maps the production value of line {earlier} to another staging value"
            ));
        }
        lines.entry(prod.into()).or_insert(line);
        table.insert(prod.into(), Bytes::copy_from_slice(staging));
    }
    Ok(table)
}

fn json_table(data: &[u8]) -> Result<HashMap<Box<[u8]>, Bytes>, String> {
    // serde_json's messages quote the value they choke on: only its place is told.
    let map: HashMap<String, String> = serde_json::from_slice(data).map_err(|e| {
        format!(
            "line {} column {}: not a json object of strings (production value → staging value)",
            e.line(),
            e.column()
        )
    })?;
    if map.values().any(|v| v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)) {
        return Err("a staging value holds CR, LF or NUL, which no header may".into());
    }
    Ok(map.into_iter().map(|(k, v)| (k.into_bytes().into_boxed_slice(), Bytes::from(v))).collect())
}
