//! Production traffic made fit for a staging target, applied once per record where sources
//! are read (so every replayer sends the same bytes, and the work spreads over the readers
//! rather than the dispatch loop; a file or object with rules is parsed on a thread of its
//! own and shaped on a second, see `fetchers::units::parse_stream`), in this order:
//!
//! 1. `[[filter]]` rules leave records out, judged on the record as recorded;
//! 2. `[[substitute]]` rules swap production credentials for staging ones through a table
//!    (before rewrites, so their keys are the values as recorded);
//! 3. `[[rewrite]]` rules change paths, the Host, headers, query parameters and json fields.
//!
//! Everything is counted by rule in the accounting: a record left out (`skipped`: filtered,
//! unmapped, rewrite_failed) never becomes input, as a GoReplay response never does.
//!
//! `set_host`: a replayer sends the recorded host only with `preserve_host`, so a job with
//! a Host rewrite runs its replayers with `preserve_host` on ([`Shaping::sends_host`]) and
//! clears the host of every record no rule gave one (unless the job itself preserves hosts):
//! those still go out with the target's.

mod capture;
mod conditions;
mod filter;
pub(crate) mod json;
mod matcher;
mod path;
mod rewrite;
mod substitute;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use crate::accounting::{Accounting, RuleNames};
use crate::config::{JobConfig, OnFailure, Problem, SubstituteOn, Unmapped};
use crate::record::Record;
pub use capture::CaptureFilters;
use filter::Filters;
use rewrite::{Draft, Rewrite};
use substitute::Substitute;

/// A job's shaping rules, compiled (and their tables read) once.
#[derive(Debug, Default)]
pub struct Shaping {
    filters: Filters,
    substitutes: Vec<Substitute>,
    /// By their index in `[[rewrite]]`.
    rewrites: Vec<(usize, Rewrite)>,
    /// Some rewrite sets the Host.
    sets_host: bool,
    /// `[replayer] preserve_host`: records keep their recorded host.
    preserve_host: bool,
}

impl Shaping {
    /// The rules of `cfg` compiled and their tables read: the only place a shaping regex is
    /// compiled (the job file's checks leave them to this step). Every rule that cannot be
    /// used (a regex that does not compile, a table missing or malformed, a path
    /// replacement naming a group its regex lacks) is a problem with its key, all of them
    /// at once.
    pub fn new(cfg: &JobConfig) -> Result<Shaping, Vec<Problem>> {
        let mut found = Vec::new();
        let substitutes = cfg
            .substitute
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| Substitute::load(rule, i, &mut found))
            .collect();
        let rewrites = cfg
            .rewrite
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| Rewrite::new(rule, rule.label(i), i, &mut found).map(|r| (i, r)))
            .collect();
        let filters = Filters::new(&cfg.filter, &mut found);
        if !found.is_empty() {
            return Err(found);
        }
        Ok(Shaping {
            filters,
            substitutes,
            sets_host: cfg.rewrite.iter().any(|r| r.set_host.is_some()),
            rewrites,
            preserve_host: cfg.replayer.preserve_host,
        })
    }

    /// The names the accounting counts the rules under.
    pub fn rule_names(cfg: &JobConfig) -> RuleNames {
        RuleNames {
            filters: cfg.filter.iter().enumerate().map(|(i, f)| f.label(i)).collect(),
            substitutes: cfg
                .substitute
                .iter()
                .enumerate()
                .map(|(i, s)| (s.label(i), s.unmapped == Unmapped::Drop))
                .collect(),
            rewrites: cfg
                .rewrite
                .iter()
                .enumerate()
                .map(|(i, r)| (r.label(i), r.on_failure == OnFailure::Skip))
                .collect(),
        }
    }

    /// Headers and query parameters whose values the substitutes map: secrets, kept out of
    /// the samples of malformed input.
    pub fn secrets(cfg: &JobConfig) -> (Vec<String>, Vec<String>) {
        let (mut headers, mut queries) = (Vec::new(), Vec::new());
        for s in &cfg.substitute {
            match s.subject() {
                Some((SubstituteOn::Header, name)) => headers.push(name.to_owned()),
                Some((SubstituteOn::Query, name)) => queries.push(name.to_owned()),
                // Cookie headers are always secret.
                Some((SubstituteOn::Cookie, _)) | None => {}
            }
        }
        (headers, queries)
    }

    /// Whether any rule is configured (a record may be changed or left out).
    pub fn is_active(&self) -> bool {
        !self.filters.is_empty() || !self.substitutes.is_empty() || !self.rewrites.is_empty()
    }

    /// Replayers must send a record's host rather than the target's: a rewrite sets it.
    pub fn sends_host(&self) -> bool {
        self.sets_host
    }

    /// The record to replay, or `None` when a rule left it out; counts what each rule did.
    pub fn apply(&self, mut record: Record, acc: &Accounting) -> Option<Record> {
        if let Some(rule) = self.filters.denied_by(&record) {
            acc.filtered(rule);
            return None;
        }
        for (i, s) in self.substitutes.iter().enumerate() {
            if !s.apply(&mut record, i, acc) {
                return None;
            }
        }
        if !self.rewrites.is_empty() {
            let host_set = DRAFT.with_borrow_mut(|draft| self.rewrite(&mut record, draft, acc))?;
            if self.sets_host && !self.preserve_host && !host_set {
                record.host = None;
            }
        }
        Some(record)
    }

    /// Runs the rewrites on `record`, its path in `draft`; whether one set the Host, or
    /// `None` when one failed with `on_failure = "skip"`.
    fn rewrite(&self, record: &mut Record, draft: &mut Draft, acc: &Accounting) -> Option<bool> {
        draft.load(&record.path);
        let mut host_set = false;
        for (i, rw) in &self.rewrites {
            let out = rw.apply(record, draft);
            host_set |= out.host;
            if out.changed {
                acc.rewritten(*i);
            }
            if out.failed.is_some() {
                acc.rewrite_failed(*i);
                if rw.skip_on_failure {
                    return None;
                }
            }
        }
        if draft.changed {
            record.path = draft.text();
        }
        Some(host_set)
    }
}

thread_local! {
    /// Each reader thread's buffers for the path of the record being rewritten.
    static DRAFT: RefCell<Draft> = RefCell::new(Draft::default());
}
