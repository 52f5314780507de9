//! Production traffic made fit for a staging target, applied once per record in the
//! dispatcher's reader threads (so every replayer sends the same bytes, and the work spreads
//! over the readers rather than the dispatch loop): `[[filter]]` rules leave records out.
//!
//! A record left out is counted under its rule's name (`filtered` in the accounting's
//! `skipped`); it never becomes input, as a GoReplay response never does.

mod filter;
mod matcher;

use crate::config::JobConfig;
use crate::record::Record;
use filter::Filters;

/// What shaping made of a record.
#[derive(Debug)]
pub enum Shaped {
    /// Replay it.
    Keep(Record),
    /// Left out by the filter at this index of `[[filter]]`.
    Filtered(usize),
}

/// A job's shaping rules, compiled once.
#[derive(Debug, Default)]
pub struct Shaping {
    filters: Filters,
}

impl Shaping {
    pub fn new(cfg: &JobConfig) -> Shaping {
        Shaping { filters: Filters::new(&cfg.filter) }
    }

    pub fn apply(&self, record: Record) -> Shaped {
        match self.filters.denied_by(&record) {
            Some(rule) => Shaped::Filtered(rule),
            None => Shaped::Keep(record),
        }
    }
}
