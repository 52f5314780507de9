//! One snapshot of a job's results, taken once: the fleet's merged statistics, members and
//! books under the statistics lock ([`crate::fleet::Fleet::snapshot`]), then the job's own
//! state, settings, clock, source progress, sinks and refusals. Every rendering reads a
//! snapshot and nothing else: the [`super::Report`] (terminal table, JSON, HTML), the CSV
//! files and the `/metrics` page. A scrape is so one consistent instant, and a new format is
//! one file that renders a snapshot (or the report made of one).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::JobConfig;
use crate::control::{Control, JobState};
use crate::fetchers::progress::SourceStatus;
use crate::fleet::FleetSnapshot;
use crate::job::shards::ShardStatus;
use crate::job::{Job, PageCounts};
use crate::shard::Shard;
use crate::sinks::SinkCounts;
use crate::thresholds::Gate;

/// A job's results at one instant.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// The job's configuration, which says what the results hold (the gate, `[compare]`,
    /// `ordered`).
    pub config: &'a JobConfig,
    /// `[thresholds]`, parsed.
    pub gate: &'a Gate,
    pub job: String,
    pub fleet: FleetSnapshot,
    pub state: JobState,
    pub settings: Control,
    /// When the job started, Unix seconds (0 before it has).
    pub started_unix: f64,
    pub elapsed: Duration,
    /// Recorded time replayed so far.
    pub progress: Duration,
    pub source: SourceStatus,
    pub sinks: Vec<SinkCounts>,
    pub refused: BTreeMap<&'static str, u64>,
    pub aborted_by: Option<String>,
    /// Live pages open and dropped.
    pub pages: PageCounts,
    /// The share of the source this dispatcher read (`--shard`).
    pub shard: Shard,
    /// The other shards, as the coordinator of a sharded job sees them.
    pub shards: Vec<ShardStatus>,
}

impl<'a> Snapshot<'a> {
    /// Takes the snapshot; the per-second history is copied only when `history` asks. The
    /// coordinator of a sharded job adds its shards' latest results: its snapshot is the
    /// whole job's.
    pub fn of(job: &'a Job, history: bool) -> Snapshot<'a> {
        let mut snap = Snapshot::of_own(job, history);
        if let Some(board) = job.board() {
            for (label, part, lost) in board.parts() {
                super::merge::absorb(&mut snap, &part, lost, &label);
            }
            if !history {
                snap.fleet.history.clear();
            }
            // The whole job's, no longer one shard's share.
            snap.shard = Shard::WHOLE;
        }
        snap
    }

    fn of_own(job: &'a Job, history: bool) -> Snapshot<'a> {
        let fleet = job.fleet().snapshot(history);
        Snapshot {
            config: job.config(),
            gate: job.gate(),
            job: job.id().to_owned(),
            fleet,
            state: job.state(),
            settings: job.control(),
            started_unix: job.started_unix(),
            elapsed: job.elapsed(),
            progress: job.progress(),
            source: job.source(),
            sinks: job.sinks().counts(),
            refused: job.refusals().snapshot(),
            aborted_by: job.aborted_by(),
            pages: job.pages().counts(),
            shard: job.shard(),
            shards: job.board().map(|b| b.statuses()).unwrap_or_default(),
        }
    }
}
