//! reprise-dispatcher: reads a recording, schedules every request on a time wheel and streams
//! it to replayers over gRPC (or, for replayers in the same process, through [`InProcess`]).
//!
//! # Layout
//! Layers, from the bottom; a module imports only from layers below it (docs/design.md,
//! "Layers of the dispatcher"):
//! 1. Leaves: `record` (a parsed request), `accounting` (every record counted),
//!    `refusals` (callers turned away), `redact` (secrets out of printed samples),
//!    `routing` (which replayer gets a record), `thresholds` (the CI gate: parse and judge),
//!    `known` (names read back from report files), `shard` (which records a shard reads).
//! 2. [`config`]: the job file, typed and parsed once at load (thresholds and key patterns
//!    included); `control` (the job's state and live settings).
//! 3. The pipeline's parts: `analyzers` (bytes → records), `fetchers` (sources → ordered
//!    streams, with their merge), `timewheel` (due instants and copies), `endpoints` (which
//!    requests count together in statistics, capped for the whole job), `sinks` (live
//!    results: InfluxDB, raw rows).
//! 4. `fleet`: the replayers, their credits and their merged statistics.
//! 5. `dispatch`: the loop from the merge to the fleet, through a narrow context.
//! 6. `plan`: a job file compiled into what a job runs (its config and compiled shaping);
//!    `job`: runs the whole and owns its tasks.
//! 7. `results`: the report and its renderings (table, JSON, CSV, HTML, Prometheus).
//! 8. `server`: the gRPC service and the admin API around a job.
//!
//! Only what the binary needs is public: the job file, the server, the job and its report,
//! and the fuzz targets' entry points ([`fuzz`]).

// Without a source's feature (the fuzz build), parts only that source uses are unused.
#![cfg_attr(not(all(feature = "kafka", feature = "s3")), allow(dead_code, unused_variables))]

mod accounting;
mod analyzers;
pub mod config;
mod control;
mod dispatch;
mod endpoints;
mod fetchers;
mod fleet;
pub mod fuzz;
mod job;
mod known;
pub mod plan;
mod record;
mod redact;
mod refusals;
mod results;
mod routing;
mod server;
mod shaping;
mod shard;
mod sinks;
mod thresholds;
mod timewheel;

pub use accounting::DropReason;
pub use control::JobState;
pub use job::parts::{MergeError, RunFile};
pub use job::shards::MAX_CLOCK_OFFSET;
pub use job::{Job, JobError, JobOptions, Sharing};
pub use plan::{JobPlan, compile};
pub use results::csv::write as write_csv;
pub use results::diff::{DiffError, Limits as DiffLimits, ReportFile, RunDiff};
pub use results::html::render as render_html;
pub use results::merge::merge as merge_reports;
pub use results::{Report, Snapshot, progress_line};
pub use server::{
    ADMIN_TOKEN_VAR, Access, CoordinatorTls, GrpcCoordinator, InProcess, Keep, REPLAYER_TOKEN_VAR, Running,
    ServeError, Standing, Station, TlsError, Token, TokenError, standing, start,
};
pub use shaping::CaptureFilters;
pub use shard::Shard;
