//! A job from start to end: waits for `min_replayers` (or POST /job/start), starts the
//! fetchers, the merge and the dispatch loop, drains until the outcome of every dispatched
//! record has been merged, then ends the job at every replayer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accounting::Accounting;
use crate::analyzers::Analyzer;
use crate::config::{JobConfig, LatePolicy, Speed};
use crate::fetchers::progress::{SourceProgress, SourceStatus};
use crate::fetchers::{self, FetchError, SourceContext, merge};
use crate::fleet::Fleet;
use crate::reporters::Sinks;
use crate::timewheel::TimeWheel;

/// Time given to replayers to receive the configuration before the first instant.
const START_DELAY: Duration = Duration::from_millis(300);
/// How long a stopped job waits for replayers to report what they cancelled.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `min_replayers` or POST /job/start.
    Waiting,
    Running,
    /// POST /job/pause: nothing more is released until POST /job/resume.
    Paused,
    /// Input done; waiting for the replayers' last acks.
    Draining,
    Finished,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the job was cancelled before it started")]
    NotStarted,
    #[error("reporter: {0}; check [reporter.raw] dir")]
    Sink(#[from] std::io::Error),
}

/// What can change while a job runs (POST /job/config, /job/pause, /job/resume).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Control {
    #[serde(serialize_with = "speed_json")]
    pub speed: Speed,
    pub rate: f64,
    pub paused: bool,
}

fn speed_json<S: serde::Serializer>(speed: &Speed, s: S) -> Result<S::Ok, S::Error> {
    match speed {
        Speed::Max => s.serialize_str("max"),
        Speed::Factor(f) => s.serialize_f64(*f),
    }
}

/// Settings of one run that are not in the job file.
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    /// Replaces `[job] target` (e.g. the address of a built-in echo target).
    pub target: Option<String>,
    /// Replayers do everything but the HTTP call.
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct Job {
    cfg: JobConfig,
    opts: JobOptions,
    accounting: Arc<Accounting>,
    /// How far the fetcher has read its source.
    source: Arc<SourceProgress>,
    fleet: Fleet,
    state: watch::Sender<JobState>,
    control: watch::Sender<Control>,
    start: CancellationToken,
    stop: CancellationToken,
    times: Mutex<Times>,
    /// The threshold that stopped the job (`abort_on_fail`).
    aborted_by: Mutex<Option<String>>,
    sinks_stop: CancellationToken,
    /// Recorded time released so far, ns since the first record (job progress).
    progress_ns: std::sync::atomic::AtomicI64,
}

/// How long the job's end waits for sinks to deliver what is queued.
const SINK_FLUSH: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Clone, Copy)]
struct Times {
    started: Option<(Instant, SystemTime)>,
    ended: Option<Instant>,
}

impl Job {
    pub fn new(cfg: JobConfig, opts: JobOptions) -> Result<Arc<Job>, JobError> {
        let control = Control { speed: cfg.job.speed, rate: cfg.job.rate, paused: false };
        let sinks_stop = CancellationToken::new();
        let accounting = Arc::new(Accounting::default());
        let sinks = Sinks::start(&cfg.reporter, cfg.job.id.as_deref().unwrap_or("job"), &sinks_stop)?;
        let fleet = Fleet::new(cfg.proxy.hash, cfg.proxy.credit_window, Arc::clone(&accounting), sinks);
        Ok(Arc::new(Job {
            cfg,
            opts,
            accounting,
            source: Arc::default(),
            fleet,
            state: watch::channel(JobState::Waiting).0,
            control: watch::channel(control).0,
            start: CancellationToken::new(),
            stop: CancellationToken::new(),
            times: Mutex::default(),
            aborted_by: Mutex::default(),
            sinks_stop,
            progress_ns: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    pub fn config(&self) -> &JobConfig {
        &self.cfg
    }
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }
    pub fn source(&self) -> SourceStatus {
        self.source.status()
    }
    pub fn heartbeat_timeout(&self) -> Duration {
        self.cfg.proxy.heartbeat_timeout.0
    }
    pub fn late_policy(&self) -> LatePolicy {
        self.cfg.job.late
    }
    pub fn state(&self) -> JobState {
        *self.state.borrow()
    }
    pub fn subscribe_state(&self) -> watch::Receiver<JobState> {
        self.state.subscribe()
    }
    pub(crate) fn set_state(&self, state: JobState) {
        self.state.send_replace(state);
    }

    /// The current speed, rate and pause.
    pub fn control(&self) -> Control {
        *self.control.borrow()
    }

    pub(crate) fn subscribe_control(&self) -> watch::Receiver<Control> {
        self.control.subscribe()
    }

    /// Changes speed and/or rate mid-job; the wheel applies them within a slot.
    pub fn set_config(&self, speed: Option<Speed>, rate: Option<f64>) -> Result<Control, String> {
        if let Some(Speed::Factor(f)) = speed
            && !(f.is_finite() && f > 0.0)
        {
            return Err(format!("speed = {f}: must be a number > 0 or \"max\""));
        }
        if let Some(r) = rate
            && !(r.is_finite() && r > 0.0 && r <= 1000.0)
        {
            return Err(format!("rate = {r}: must be a number > 0 and ≤ 1000"));
        }
        self.control.send_modify(|c| {
            c.speed = speed.unwrap_or(c.speed);
            c.rate = rate.unwrap_or(c.rate);
        });
        Ok(self.control())
    }

    /// Pauses (true) or resumes (false) the release of records.
    pub fn set_paused(&self, paused: bool) -> Control {
        self.control.send_modify(|c| c.paused = paused);
        self.control()
    }

    pub fn is_over(&self) -> bool {
        matches!(self.state(), JobState::Finished | JobState::Stopped)
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
        self.fleet.sinks()
    }

    /// Recorded time released so far (how far into the recording the job is).
    pub fn progress(&self) -> Duration {
        Duration::from_nanos(self.progress_ns.load(std::sync::atomic::Ordering::Relaxed).max(0) as u64)
    }

    pub(crate) fn set_progress(&self, recorded_ns: i64) {
        self.progress_ns.store(recorded_ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// The threshold that stopped the job, if `abort_on_fail` did.
    pub fn aborted_by(&self) -> Option<String> {
        self.aborted_by.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the job because a threshold failed (`abort_on_fail`).
    pub(crate) fn abort(&self, why: String) {
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

    /// POST /job/stop: stop dispatching; replayers drop what they have not sent.
    pub fn request_stop(&self) {
        self.start.cancel();
        self.stop.cancel();
    }

    fn target(&self) -> String {
        self.opts.target.clone().or_else(|| self.cfg.job.target.clone()).unwrap_or_default()
    }

    fn wire_config(&self, start_unix_ns: i64) -> pb::JobConfig {
        let r = &self.cfg.replayer;
        pb::JobConfig {
            job_id: self.id().to_owned(),
            target: self.target(),
            concurrency: r.concurrency,
            timeout_ms: r.timeout.0.as_millis() as u64,
            preserve_host: r.preserve_host,
            insecure_tls: r.insecure_tls,
            start_unix_ns,
            credit_window: self.cfg.proxy.credit_window,
            dry_run: self.opts.dry_run,
            max_endpoints: self.cfg.stats.max_endpoints,
            session: 0,
            endpoint_rules: self
                .cfg
                .stats
                .endpoints
                .iter()
                .map(|r| pb::EndpointRule { pattern: r.pattern.clone(), name: r.name.clone() })
                .collect(),
            raw_results: self.fleet.sinks().wants_raw(),
        }
    }

    /// Runs the job to its end; `cancel` (shutdown) stops it like POST /job/stop.
    pub async fn run(self: &Arc<Self>, cancel: CancellationToken) -> Result<(), JobError> {
        tokio::select! {
            () = self.start.cancelled() => {}
            () = cancel.cancelled() => return Err(JobError::NotStarted),
        }
        let stop = self.stop.clone();
        let _stop_on_cancel = {
            let stop = stop.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                stop.cancel();
            })
        };
        let ctx = SourceContext {
            accounting: Arc::clone(&self.accounting),
            progress: Arc::clone(&self.source),
            cancel: stop.child_token(),
            analyzer: Analyzer::build(&self.cfg.analyzer),
        };
        let mut input = self.open_input(&ctx, &stop).await?;
        let delay = if self.cfg.job.speed == Speed::Max { Duration::ZERO } else { START_DELAY };
        let start = Instant::now() + delay;
        let wall = SystemTime::now() + delay;
        let start_unix_ns = wall.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default();
        self.times.lock().unwrap_or_else(|p| p.into_inner()).started = Some((start, wall));
        self.fleet.start(self.wire_config(start_unix_ns));
        self.state.send_replace(JobState::Running);
        tracing::info!(job = self.id(), replayers = self.fleet.len(), "job started");

        let reaper = self.spawn_reaper();
        let gate = crate::thresholds::spawn_abort_watch(self);
        let wheel = TimeWheel::new(
            self.cfg.job.speed,
            start,
            self.cfg.job.begin.map(|b| b.0),
            self.cfg.job.rate,
            self.cfg.job.seed,
        );
        let stopped = crate::dispatch::run(self, &mut input, wheel, &stop).await;
        ctx.cancel.cancel();
        drop(input);
        self.state.send_replace(JobState::Draining);
        self.drain(stopped).await;
        reaper.abort();
        if let Some(g) = gate {
            g.abort();
        }
        self.fleet.close_books();
        self.fleet.sinks().flush(SINK_FLUSH).await;
        self.sinks_stop.cancel();
        self.times.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(Instant::now());
        self.state.send_replace(if stopped { JobState::Stopped } else { JobState::Finished });
        tracing::info!(job = self.id(), stopped, "job ended");
        Ok(())
    }

    /// Starts the fetcher and waits for the first record: a broker or object store may take
    /// a while to answer, and the clock must not start before (records due meanwhile would
    /// go out in a burst).
    async fn open_input(
        &self,
        ctx: &SourceContext,
        stop: &CancellationToken,
    ) -> Result<merge::Merger, JobError> {
        let streams = fetchers::build(&self.cfg, ctx).await?;
        let opts = merge::MergeOptions {
            window_ns: self.cfg.job.reorder_window.0.as_nanos() as i64,
            begin: self.cfg.job.begin.map(|b| b.0),
            end: self.cfg.job.end.map(|e| e.0),
        };
        let mut input = merge::Merger::new(streams, opts, Arc::clone(&self.accounting));
        tokio::select! {
            () = input.prime() => {}
            () = stop.cancelled() => {}
        }
        Ok(input)
    }

    fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let job = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                job.fleet.reap(job.heartbeat_timeout());
            }
        })
    }

    /// Waits until the outcome of everything dispatched is merged (or its replayer has left).
    /// Replayers learn at once that no more records come, so they report their last
    /// outcomes as soon as they are done instead of at their next heartbeat.
    async fn drain(&self, stopped: bool) {
        self.fleet.end(if stopped { "stopped" } else { "finished" }).await;
        let deadline = stopped.then(|| Instant::now() + STOP_GRACE);
        loop {
            let changed = self.fleet.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.fleet.unaccounted() == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
    }
}
