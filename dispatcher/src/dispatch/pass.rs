//! A pass over the recording: a job replays it once, or, with `loop`, `duration` or
//! stages, again and again, each pass after the last (see `crate::job`). What the dispatch
//! loop carries from pass to pass, and how long a pass was.

use tokio::time::Instant;

/// One pass over the recording (a job without `loop` or `duration` has one): what the
/// dispatch loop needs from the passes before, and what it tells the next.
#[derive(Debug, Default)]
pub struct Pass {
    /// Added to each record's time: the lengths of the passes before.
    pub shift: i64,
    /// The job's duration ends here: a record due at or after it ends the job.
    pub deadline: Option<Instant>,
    /// The job's first record's time (shifted), which progress counts from.
    pub origin: Option<i64>,
    /// Records of the whole job so far, in time order (chooses fractional copies).
    pub index: u64,
    /// This pass's first and last in-range record (recorded time, before the shift).
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Records of this pass handed to the wheel.
    pub records: u64,
    /// The job's duration ended in this pass.
    pub timed_out: bool,
}

impl Pass {
    /// Counts an in-range record handed to the wheel (`recorded`: its time before the
    /// shift); a late one does not move the pass's span.
    pub fn count(&mut self, recorded: i64, late: bool) {
        if !late {
            self.first.get_or_insert(recorded);
            self.last = Some(recorded);
        }
        self.records += 1;
    }

    /// How much later the next pass starts than this one: the pass's span plus its mean
    /// gap between records (so the seam looks like the rest), at least 1 ms; `None` when
    /// the pass had no record.
    pub fn length(&self) -> Option<i64> {
        let (first, last) = (self.first?, self.last?);
        let span = last.saturating_sub(first);
        let gap = if self.records > 1 { span / (self.records as i64 - 1) } else { 0 };
        Some(span.saturating_add(gap).max(1_000_000))
    }

    /// Starts the next pass, `length` after this one.
    pub fn next(&mut self, length: i64) {
        self.shift = self.shift.saturating_add(length);
        self.first = None;
        self.last = None;
        self.records = 0;
    }
}
