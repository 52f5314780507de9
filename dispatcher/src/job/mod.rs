//! A job from start to end: waits for `min_replayers` (or POST /job/start), opens the input,
//! runs the dispatch loop, drains until the outcome of every dispatched record has been
//! merged, then ends the job at every replayer ([`run`]). With `abort_on_fail` its gate
//! stops it at the first failed threshold ([`gate`]).
//!
//! A job owns what it starts: the fetchers' readers, the sinks' writers, the reaper of
//! silent replayers and the gate run in its task tracker, and the job's end waits for them.
//! Its stop token is a child of the shutdown token it was made with, so a shutdown stops it
//! without a task in between.

mod gate;
pub mod parts;
mod run;
pub mod shards;
mod stages;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounting::Accounting;
use crate::config::{JobConfig, Source, Speed};
use crate::control::{Control, ControlError, JobState};
use crate::endpoints::Grouping;
use crate::fetchers::FetchError;
use crate::fetchers::progress::{SourceProgress, SourceStatus};
use crate::fleet::{Fleet, Intake, IntakeError};
use crate::plan::{JobPlan, ReplayerFiles};
use crate::redact::Redactor;
use crate::refusals::Refusals;
use crate::shaping::Shaping;
use crate::shard::Shard;
use crate::sinks::{SinkError, Sinks};
use crate::thresholds::Gate;
use shards::Coordinator;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the job was cancelled before it started")]
    NotStarted,
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The shards could not agree on a start (a shard refused, the coordinator unreachable).
    #[error("{0}")]
    Shards(String),
}

/// How a sharded job's dispatcher takes part in the common start (see [`shards`]).
#[derive(Clone, Debug, Default)]
pub enum Sharing {
    /// Alone: its own start (one dispatcher, or a shard run on its own).
    #[default]
    Alone,
    /// Shard 0: the others join it; a clock further off than this is refused.
    Coordinate(Duration),
    /// Another shard: joins the coordinator through this link.
    Join(Arc<dyn Coordinator>),
}

/// Settings of one run that are not in the job file.
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// Replaces `[job] target` (e.g. the address of a built-in echo target).
    pub target: Option<String>,
    /// Replayers do everything but the HTTP call.
    pub dry_run: bool,
    /// The share of the source this dispatcher reads (`--shard I/N`).
    pub shard: Shard,
    /// Its part in a sharded job's common start.
    pub sharing: Sharing,
    /// What the dispatcher counts across its jobs (its servers count into them).
    pub(crate) counters: Counters,
}

impl JobOptions {
    pub fn new(target: Option<String>, dry_run: bool) -> JobOptions {
        JobOptions {
            target,
            dry_run,
            shard: Shard::WHOLE,
            sharing: Sharing::Alone,
            counters: Counters::default(),
        }
    }
}

/// Counts that outlive a job: callers refused and live pages, counted by the servers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub refusals: Arc<Refusals>,
    pub pages: Arc<Pages>,
}

#[derive(Debug)]
pub struct Job {
    cfg: JobConfig,
    /// `[thresholds]`, parsed.
    gate: Gate,
    /// `[stats]`: how requests group into endpoints.
    grouping: Arc<Grouping>,
    opts: JobOptions,
    accounting: Arc<Accounting>,
    /// The `[[filter]]`, `[[substitute]]` and `[[rewrite]]` rules, tables read.
    shaping: Arc<Shaping>,
    /// Where the recording is read from.
    recording: Source,
    /// The files the replayers need (TLS to the target, a protoset).
    files: ReplayerFiles,
    /// How far the fetcher has read its source.
    source: Arc<SourceProgress>,
    fleet: Fleet,
    /// Live sinks each merged interval of statistics is offered to.
    sinks: Sinks,
    state: watch::Sender<JobState>,
    control: watch::Sender<Control>,
    /// Cancelled when the job may start (enough replayers, or POST /job/start).
    start: CancellationToken,
    /// The process's shutdown: before the start it means "never start".
    shutdown: CancellationToken,
    /// Stops dispatching: POST /job/stop, `abort_on_fail`, or the shutdown (its parent).
    stop: CancellationToken,
    /// Ends the sinks' writers once their queues are flushed.
    sinks_stop: CancellationToken,
    /// POST /shutdown: a dispatcher kept serving after the job (`--serve-forever`) may exit.
    exit: CancellationToken,
    /// Every task the job starts; the job's end waits for them.
    tasks: TaskTracker,
    times: Mutex<Times>,
    /// The threshold that stopped the job (`abort_on_fail`).
    aborted_by: Mutex<Option<String>>,
    /// Recorded time released so far, ns since the first record (job progress).
    progress_ns: AtomicI64,
    /// When the dispatch loop releases next while it waits (see `DispatchContext`).
    next_release_ms: AtomicU64,
    /// Callers the servers turned away (the dispatcher's, shared by its jobs).
    refusals: Arc<Refusals>,
    /// Live pages following the dispatcher (shared by its jobs).
    pages: Arc<Pages>,
    /// The coordinator's view of the other shards (shard 0 of a sharded job).
    board: Option<shards::Board>,
}

/// Live pages (`GET /events`) open now, and those dropped for not reading.
#[derive(Debug, Default)]
pub struct Pages {
    open: AtomicU64,
    dropped: AtomicU64,
}

/// What [`Pages`] counts, for the reports.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PageCounts {
    pub open: u64,
    pub dropped: u64,
}

impl Pages {
    pub fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }
    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }
    /// A page that stopped reading was dropped (it is closed too).
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
    pub fn counts(&self) -> PageCounts {
        PageCounts { open: self.open.load(Relaxed), dropped: self.dropped.load(Relaxed) }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Times {
    started: Option<(Instant, SystemTime)>,
    ended: Option<Instant>,
}

impl Job {
    /// A job waiting for its replayers; `shutdown` stops it (and, before it starts, cancels it).
    /// Starts the sinks at once, so an unusable one is an error before anything runs.
    pub fn new(plan: JobPlan, opts: JobOptions, shutdown: &CancellationToken) -> Result<Arc<Job>, JobError> {
        let JobPlan { config: cfg, source: recording, gate, grouping, shaping, files } = plan;
        let control = Control { speed: cfg.job.pace(), rate: cfg.job.rate, paused: false };
        let tasks = TaskTracker::new();
        let sinks_stop = CancellationToken::new();
        let fields = &cfg.analyzer.fields;
        let (secret_headers, secret_queries) = Shaping::secrets(&cfg);
        let headers: Vec<String> =
            cfg.analyzer.secret_headers.iter().cloned().chain(secret_headers).collect();
        let redactor = Redactor::new(&headers, &[fields.body.clone(), fields.body_base64.clone()])
            .with_queries(&secret_queries);
        let accounting = Arc::new(Accounting::new(redactor, Shaping::rule_names(&cfg)));
        let sinks = Sinks::start(&cfg.reporter, cfg.job.id.as_deref().unwrap_or("job"), &tasks, &sinks_stop)?;
        let window = cfg.compare.as_ref().map_or(Duration::from_secs(60), |c| c.window.0);
        let intake = Arc::new(Intake::with_compare_window(window));
        let fleet = Fleet::new(cfg.proxy.hash, cfg.proxy.credit_window, Arc::clone(&accounting), intake);
        Ok(Arc::new(Job {
            cfg,
            gate,
            grouping,
            accounting,
            shaping,
            recording,
            files,
            source: Arc::default(),
            fleet,
            sinks,
            state: watch::channel(JobState::Waiting).0,
            control: watch::channel(control).0,
            start: CancellationToken::new(),
            shutdown: shutdown.clone(),
            stop: shutdown.child_token(),
            sinks_stop,
            exit: CancellationToken::new(),
            tasks,
            times: Mutex::default(),
            aborted_by: Mutex::default(),
            progress_ns: AtomicI64::new(0),
            next_release_ms: AtomicU64::new(0),
            refusals: Arc::clone(&opts.counters.refusals),
            pages: Arc::clone(&opts.counters.pages),
            board: match opts.sharing {
                Sharing::Coordinate(max_offset) => Some(shards::Board::new(opts.shard, max_offset)),
                _ => None,
            },
            opts,
        }))
    }

    pub fn config(&self) -> &JobConfig {
        &self.cfg
    }
    /// The share of the source this job reads (`--shard`).
    pub fn shard(&self) -> Shard {
        self.opts.shard
    }

    /// The link to the coordinator, when this job is a shard that joins one.
    pub fn coordinator(&self) -> Option<&Arc<dyn Coordinator>> {
        match &self.opts.sharing {
            Sharing::Join(link) => Some(link),
            _ => None,
        }
    }

    /// The other shards, when this job coordinates a sharded job.
    pub fn board(&self) -> Option<&shards::Board> {
        self.board.as_ref()
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }
    pub fn pages(&self) -> &Pages {
        &self.pages
    }
    pub fn source(&self) -> SourceStatus {
        self.source.status()
    }
    pub fn state(&self) -> JobState {
        *self.state.borrow()
    }

    /// The current speed, rate and pause.
    pub fn control(&self) -> Control {
        *self.control.borrow()
    }

    /// Changes the pace (a speed or a qps) and/or rate mid-job; the wheel applies them within
    /// a slot.
    pub fn set_config(&self, speed: Option<Speed>, rate: Option<f64>) -> Result<Control, ControlError> {
        let new = self.control().with(speed, rate)?;
        tracing::info!(job = self.id(), speed = %new.speed, rate = new.rate, "job settings changed");
        self.control.send_modify(|c| {
            c.speed = speed.unwrap_or(c.speed);
            c.rate = rate.unwrap_or(c.rate);
        });
        Ok(self.control())
    }

    /// The stages' settings at this step of their ramp (already checked, as the job file
    /// was); unchanged settings are not sent again.
    fn ramp(&self, pace: Speed, rate: f64) {
        self.control.send_if_modified(|c| {
            let changed = c.speed != pace || c.rate != rate;
            c.speed = pace;
            c.rate = rate;
            changed
        });
    }

    /// Pauses (true) or resumes (false) the release of records.
    pub fn set_paused(&self, paused: bool) -> Control {
        self.control.send_modify(|c| c.paused = paused);
        self.control()
    }

    pub fn is_over(&self) -> bool {
        self.state().is_over()
    }
    pub fn id(&self) -> &str {
        self.cfg.job.id.as_deref().unwrap_or("job")
    }

    /// Seconds from the job's start to its end (or to now).
    pub fn elapsed(&self) -> Duration {
        let t = *self.times.lock().unwrap_or_else(|p| p.into_inner());
        match t.started {
            Some((s, _)) => t.ended.unwrap_or_else(Instant::now).saturating_duration_since(s),
            None => Duration::ZERO,
        }
    }

    /// When the job started, in Unix seconds (0 before it has).
    pub fn started_unix(&self) -> f64 {
        let t = *self.times.lock().unwrap_or_else(|p| p.into_inner());
        t.started.and_then(|(_, wall)| wall.duration_since(UNIX_EPOCH).ok()).map_or(0.0, |d| d.as_secs_f64())
    }

    pub fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    /// The job's statistics as its replayers report them.
    pub fn intake(&self) -> &Intake {
        self.fleet.intake()
    }

    /// Takes one replayer's report (see [`Intake::receive`]); each merged interval goes to
    /// the job's sinks.
    pub fn receive(&self, report: &pb::StatsReport) -> Result<(), IntakeError> {
        self.intake().receive(&self.fleet, report, |interval| self.sinks.publish(interval))
    }

    /// How long until the next record is released, while the dispatch loop waits for it.
    pub fn next_release_in(&self) -> Option<Duration> {
        let at = self.next_release_ms.load(Relaxed).checked_sub(1)?;
        let (start, _) = self.times.lock().unwrap_or_else(|p| p.into_inner()).started?;
        Some((start + Duration::from_millis(at)).saturating_duration_since(Instant::now()))
    }

    /// Recorded time released so far (how far into the recording the job is).
    pub fn progress(&self) -> Duration {
        Duration::from_nanos(self.progress_ns.load(Relaxed).max(0) as u64)
    }

    /// The threshold that stopped the job, if `abort_on_fail` did.
    pub fn aborted_by(&self) -> Option<String> {
        self.aborted_by.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the job because a threshold failed (`abort_on_fail`).
    fn abort(&self, why: String) {
        *self.aborted_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.request_stop();
    }

    /// Starts the job once enough replayers have subscribed.
    pub fn replayer_joined(&self) {
        if self.fleet.len() >= self.cfg.job.min_replayers as usize {
            self.start.cancel();
        }
    }

    /// POST /job/start: start now, whatever the number of replayers.
    pub fn request_start(&self) {
        self.start.cancel();
    }

    /// POST /shutdown: stops the job if it still runs (as POST /job/stop) and lets a
    /// dispatcher serving after the job's end (`--serve-forever`) exit with the job's code.
    pub fn request_exit(&self) {
        self.request_stop();
        self.exit.cancel();
    }

    /// Resolves once [`Job::request_exit`] was called.
    pub async fn exit_requested(&self) {
        self.exit.cancelled().await;
    }

    /// POST /job/stop: stop dispatching; replayers drop what they have not sent.
    pub fn request_stop(&self) {
        self.start.cancel();
        self.stop.cancel();
    }

    fn target(&self) -> String {
        self.opts.target.clone().or_else(|| self.cfg.job.target.clone()).unwrap_or_default()
    }
}
