//! The docs stay true to the code: every relative link and anchor in README.md and docs/
//! resolves, and every key a job file takes appears in the job-file reference
//! (docs/job-file.md). The keys are read from the job file's types themselves: serde's
//! derived code names a struct's fields when it asks for one, so walking `JobConfig` with a
//! deserializer that only listens lists every table and key the file can hold.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reprise_dispatcher::config::JobConfig;
use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .expect("docs/")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).expect("page");
    prose(&text).iter().filter_map(|l| l.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect()
}

/// The targets of a page's markdown links `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) =
                target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let linked = if file.is_empty() { page.clone() } else { page.parent().expect("dir").join(file) };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if let Some(a) = anchor
                && linked.extension().is_some_and(|x| x == "md")
                && !anchors(&linked).contains(a)
            {
                broken.push(format!("{}: {target}: no heading with this anchor", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_short_and_the_design_is_an_architecture() {
    let words = |p: &str| std::fs::read_to_string(p).expect("page").split_whitespace().count();
    assert!(words("README.md") <= 2_000, "README.md has {} words", words("README.md"));
    assert!(words("docs/design.md") <= 3_000, "docs/design.md has {} words", words("docs/design.md"));
}

#[test]
fn every_key_a_job_file_takes_is_in_the_reference() {
    let schema = Schema::of_job_file();
    assert!(schema.keys.contains("job.target") && schema.keys.contains("rewrite.path.from"), "{schema:?}");
    assert!(
        schema.tables.contains("fetcher.kafka") && schema.keys.contains("rewrite.set_headers"),
        "{schema:?}"
    );
    let text = std::fs::read_to_string("docs/job-file.md").expect("docs/job-file.md");
    let documented = documented(&text);
    // A table is documented as a table (`[fetcher.kafka]`) or, written inline, as a key
    // (`[[rewrite]] path`), whose row then names its keys (`{ from = …, to = … }`).
    let inline = |key: &str| {
        let (table, name) = key.rsplit_once('.')?;
        let row = documented.rows.iter().find(|(k, _)| k == table)?;
        row.1.contains(name).then_some(())
    };
    let missing: Vec<String> = schema
        .tables
        .iter()
        .filter(|t| {
            let within = format!("{t}.");
            !documented.tables.iter().chain(&documented.keys).any(|d| d == *t || d.starts_with(&within))
        })
        .map(|t| format!("[{t}]"))
        .chain(schema.keys.iter().filter(|k| !documented.keys.contains(*k) && inline(k).is_none()).cloned())
        .collect();
    assert!(missing.is_empty(), "not in docs/job-file.md's tables: {missing:#?}");
}

/// Tables and keys, as dotted paths: `fetcher.kafka`, `job.target`, `rewrite.path.from`.
#[derive(Debug, Default)]
struct Schema {
    tables: BTreeSet<String>,
    keys: BTreeSet<String>,
}

/// What the reference's tables name.
#[derive(Debug, Default)]
struct Documented {
    tables: BTreeSet<String>,
    keys: BTreeSet<String>,
    /// Each key with the whole row that documents it.
    rows: Vec<(String, String)>,
}

/// A row's first cell gives a table (`[job]`, `[[rewrite]]`) and its keys (the other
/// backquoted words of the cell).
fn documented(text: &str) -> Documented {
    let mut out = Documented::default();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        let words: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
        let mut table = None;
        for w in words {
            let (head, key) = match w.rfind(']') {
                Some(i) => (Some(w[..=i].trim_matches(['[', ']'])), w[i + 1..].trim()),
                None => (None, w.trim()),
            };
            if let Some(t) = head {
                out.tables.insert(t.to_owned());
                table = Some(t.to_owned());
            }
            if let Some(t) = &table
                && !key.is_empty()
            {
                out.keys.insert(format!("{t}.{key}"));
                out.rows.push((format!("{t}.{key}"), line.to_owned()));
            }
        }
    }
    out
}

impl Schema {
    /// Walks `JobConfig` until no walk finds anything new. A walk stops at the first value
    /// it cannot give (a number, a string); that key is then done, and the next walk goes
    /// past it.
    fn of_job_file() -> Schema {
        let state = Walked::default();
        for _ in 0..10_000 {
            let before = (state.schema.borrow().keys.len(), state.done.borrow().len());
            let _ = JobConfig::deserialize(Walk { path: String::new(), state: &state });
            if before == (state.schema.borrow().keys.len(), state.done.borrow().len()) {
                break;
            }
        }
        let mut schema = state.schema.into_inner();
        // A table is a key of the table above it; only leaves are keys.
        let tables = schema.tables.clone();
        schema.keys.retain(|k| !tables.contains(k));
        schema
    }
}

#[derive(Default)]
struct Walked {
    schema: RefCell<Schema>,
    /// Keys walked to their end (or to a value the walk cannot give).
    done: RefCell<BTreeSet<String>>,
}

/// A deserializer that gives structs the fields they ask for and nothing else.
struct Walk<'a> {
    path: String,
    state: &'a Walked,
}

#[derive(Debug)]
struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

impl<'a> Walk<'a> {
    fn at(&self, key: &str) -> Walk<'a> {
        let path = if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) };
        Walk { path, state: self.state }
    }
}

/// A struct's fields not yet walked, each given as a key with a walk as its value.
struct Fields<'a> {
    walk: Walk<'a>,
    fields: Vec<&'static str>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        let Some(field) = self.fields.get(self.next) else { return Ok(None) };
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let walk = self.walk.at(self.fields[self.next]);
        self.next += 1;
        let (path, state) = (walk.path.clone(), walk.state);
        let done_before = state.done.borrow().len();
        let result = seed.deserialize(walk);
        // A stop below was marked where it happened; one here is this key's own.
        if result.is_ok() || state.done.borrow().len() == done_before {
            state.done.borrow_mut().insert(path);
        }
        result
    }
}

/// One element of a list (`[[rewrite]]`), walked at the list's own path.
struct One<'a>(Option<Walk<'a>>);

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(walk) => seed.deserialize(walk).map(Some),
            None => Ok(None),
        }
    }
}

macro_rules! leaves {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop(format!("{}: a value", self.path)))
        })*
    };
}

impl<'de> de::Deserializer<'de> for Walk<'_> {
    type Error = Stop;

    leaves! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_identifier
        deserialize_ignored_any
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        let done = self.state.done.borrow().clone();
        {
            let mut schema = self.state.schema.borrow_mut();
            if !self.path.is_empty() {
                schema.tables.insert(self.path.clone());
            }
            for f in fields {
                schema.keys.insert(self.at(f).path);
            }
        }
        let fields = fields.iter().copied().filter(|f| !done.contains(&self.at(f).path)).collect();
        visitor.visit_map(Fields { walk: self, fields, next: 0 })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_seq(One(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        // A map's keys are the user's (`set_headers`, thresholds by endpoint): the map is a
        // key, or a table at the top.
        let mut schema = self.state.schema.borrow_mut();
        if self.path.contains('.') {
            schema.keys.insert(self.path.clone());
        } else {
            schema.tables.insert(self.path.clone());
        }
        Err(Stop(format!("{}: a map", self.path)))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: a value", self.path)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: a tuple", self.path)))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: a tuple", self.path)))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop(format!("{}: a choice", self.path)))
    }
}
