//! Running a job: start, dispatch, drain, end — and waiting for every task the job started.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Job, JobError, Sharing};
use crate::analyzers::{Analyzer, Plausible};
use crate::config::{HttpMode, Speed};
use crate::control::JobState;
use crate::dispatch::Pass;
use crate::dispatch::{self, DispatchContext};
use crate::endpoints::EndpointTable;
use crate::fetchers::{self, SourceContext, merge};
use crate::timewheel::TimeWheel;

/// Time given to replayers to receive the configuration before the first instant.
const START_DELAY: Duration = Duration::from_millis(300);
/// How long the job's end waits for sinks to deliver what is queued.
const SINK_FLUSH: Duration = Duration::from_secs(3);
/// How long the job's end waits for its tasks (readers, writers) to finish; one still
/// running then (a download that ignores cancellation) is named in a warning.
const TASKS_GRACE: Duration = Duration::from_secs(10);
/// How often silent replayers are looked for.
const REAP_EVERY: Duration = Duration::from_millis(250);

impl Job {
    /// Runs the job to its end; a shutdown (the token it was made with) stops it like
    /// POST /job/stop, or, before it started, cancels it.
    pub async fn run(self: &Arc<Self>) -> Result<(), JobError> {
        tokio::select! {
            () = self.start.cancelled() => {}
            () = self.shutdown.cancelled() => return Err(JobError::NotStarted),
        }
        let result = self.run_started().await;
        self.finish().await;
        result
    }

    async fn run_started(self: &Arc<Self>) -> Result<(), JobError> {
        let ctx = SourceContext {
            accounting: Arc::clone(&self.accounting),
            progress: Arc::clone(&self.source),
            cancel: self.stop.child_token(),
            analyzer: Analyzer::for_job(&self.cfg),
            times: Plausible::new(&self.cfg.analyzer),
            shaping: Arc::clone(&self.shaping),
            tasks: self.tasks.clone(),
            shard: self.opts.shard,
        };
        let mut input = self.open_input(&ctx).await?;
        let (at, origin) = match self.agree_start(input.first_ts()).await {
            Ok(agreed) => agreed,
            Err(e) => {
                self.request_stop();
                self.state.send_replace(JobState::Stopped);
                return Err(e);
            }
        };
        let start = self.begin(at);
        let watchers = self.watch(start);
        let stopped = self.replay(&ctx, &mut input, start, origin).await;
        ctx.cancel.cancel();
        drop(input);
        self.state.send_replace(JobState::Draining);
        self.drain(stopped).await;
        watchers.cancel();
        self.fleet.close_books();
        if let Some(board) = &self.board {
            board.wait_ended(&self.stop, self.cfg.proxy.drain_timeout.0).await;
        }
        self.sinks.flush(SINK_FLUSH).await;
        self.times.lock().unwrap_or_else(|p| p.into_inner()).ended = Some(Instant::now());
        self.state.send_replace(if stopped { JobState::Stopped } else { JobState::Finished });
        tracing::info!(job = self.id(), stopped, "job ended");
        Ok(())
    }

    /// The start a sharded job's shards agree on (see [`super::shards`]): the instant, by
    /// this machine's clock, and the recorded time it stands for; none for a job alone. A
    /// shard told to stop by its coordinator, or losing it, stops.
    async fn agree_start(
        self: &Arc<Self>,
        first: Option<i64>,
    ) -> Result<(Option<SystemTime>, Option<i64>), JobError> {
        let begin = self.cfg.job.begin.map(|b| b.0);
        if let Some(board) = &self.board {
            let (at, origin) = board.agree(first, begin, &self.stop).await.map_err(JobError::Shards)?;
            let job = Arc::clone(self);
            self.tasks.spawn(async move {
                job.stop.cancelled().await;
                if let Some(board) = &job.board {
                    board.stop_all("the coordinator's job was stopped");
                }
            });
            return Ok((Some(at), origin));
        }
        let Sharing::Join(link) = &self.opts.sharing else { return Ok((None, None)) };
        let shard = self.opts.shard;
        let join = pb::ShardJoin {
            job_id: self.id().to_owned(),
            index: shard.index(),
            count: shard.count(),
            version: reprise_proto::VERSION.to_owned(),
            first_ns: first,
            clock_offset_us: 0,
            rtt_us: 0,
        };
        let joined = tokio::select! {
            joined = link.join(join) => joined.map_err(JobError::Shards)?,
            () = self.stop.cancelled() => return Err(JobError::Shards("stopped while waiting for the coordinator".into())),
        };
        let job = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::select! {
                why = joined.stop => {
                    tracing::warn!(job = job.id(), %why, "the coordinator stops this shard");
                    *job.aborted_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    job.request_stop();
                }
                () = job.stop.cancelled() => {}
            }
        });
        // The coordinator's clock is `offset` ahead of this one's.
        let start_ns = joined.start.start_unix_ns - joined.offset_us * 1000;
        let at = UNIX_EPOCH + Duration::from_nanos(start_ns.max(0) as u64);
        Ok((Some(at), Some(joined.start.origin_ns)))
    }

    /// Starts the job at the fleet: its first instant (a moment away, so replayers have the
    /// configuration before it, unless it runs at speed "max"; `at` for a sharded job's common
    /// start), sent to every replayer.
    fn begin(&self, at: Option<SystemTime>) -> Instant {
        let delay = match at {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None if self.cfg.job.speed == Speed::Max => Duration::ZERO,
            None => START_DELAY,
        };
        let start = Instant::now() + delay;
        let wall = SystemTime::now() + delay;
        let start_unix_ns = wall.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default();
        self.times.lock().unwrap_or_else(|p| p.into_inner()).started = Some((start, wall));
        self.fleet.start(self.wire_config(start_unix_ns));
        self.state.send_replace(JobState::Running);
        tracing::info!(job = self.id(), replayers = self.fleet.len(), "job started");
        start
    }

    /// The tasks that watch while records go out and while the job drains (the reaper, the
    /// gate with `abort_on_fail`, the stages' ramp); cancel the token to end them.
    fn watch(self: &Arc<Self>, start: Instant) -> CancellationToken {
        let watchers = CancellationToken::new();
        self.tasks.spawn(reap(Arc::clone(self), watchers.clone()));
        if self.gate.abort_on_fail {
            self.tasks.spawn(super::gate::watch(Arc::clone(self), watchers.clone()));
        }
        if !self.cfg.job.stages.is_empty() {
            self.tasks.spawn(super::stages::drive(Arc::clone(self), start, watchers.clone()));
        }
        watchers
    }

    /// Replays the recording from `input`, pass after pass when the job loops (each pass
    /// reading the source again into `input`); whether the job was stopped.
    /// `origin` is the recorded time due at `start` (a sharded job's; else `[job] begin`, or
    /// the first record).
    async fn replay(
        &self,
        ctx: &SourceContext,
        input: &mut merge::Merger,
        start: Instant,
        origin: Option<i64>,
    ) -> bool {
        let mut wheel = TimeWheel::new(
            self.cfg.job.pace(),
            start,
            origin.or(self.cfg.job.begin.map(|b| b.0)),
            self.cfg.job.rate,
            self.cfg.job.seed,
        )
        .with_max_gap(self.cfg.job.max_gap.map(|g| g.0));
        let mut endpoints =
            EndpointTable::new(Arc::clone(&self.grouping), Arc::clone(self.intake().endpoint_names()));
        let deadline = self.cfg.job.length().map(|d| start + d);
        let mut pass = Pass { deadline, ..Pass::default() };
        loop {
            let ctx_d = self.dispatch_context();
            let stopped =
                dispatch::run(&ctx_d, input, &mut wheel, &mut endpoints, &self.stop, &mut pass).await;
            if self.cfg.job.loops() {
                self.accounting.pass_done();
            }
            if stopped || pass.timed_out || !self.cfg.job.loops() {
                return stopped;
            }
            let Some(length) = pass.length() else {
                tracing::warn!(
                    job = self.id(),
                    "a pass over the recording had no record to replay: no more passes"
                );
                return false;
            };
            let first = pass.first;
            pass.next(length);
            // A next pass that would start at or past the job's duration is not read at all.
            if let (Some(deadline), Some(first)) = (pass.deadline, first)
                && wheel.due(first.saturating_add(pass.shift), Instant::now()) >= deadline
            {
                return false;
            }
            *input = match self.open_input(ctx).await {
                Ok(input) => input,
                Err(e) => {
                    // The source could be read once and no more (deleted, unreachable): the
                    // job ends with what it replayed, and says why.
                    tracing::error!(job = self.id(), error = %e, "the recording could not be read again: no more passes");
                    return false;
                }
            };
            tracing::info!(
                job = self.id(),
                pass = self.accounting.counts().passes.len() + 1,
                "the recording replays again"
            );
        }
    }

    /// Ends the sinks' writers and waits for every task the job started.
    async fn finish(&self) {
        self.stop.cancel();
        self.sinks_stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(TASKS_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                job = self.id(),
                tasks = self.tasks.len(),
                "tasks still running after the job's end"
            );
        }
    }

    fn dispatch_context(&self) -> DispatchContext<'_> {
        DispatchContext {
            fleet: &self.fleet,
            accounting: &self.accounting,
            control: self.control.subscribe(),
            late: self.cfg.job.late,
            state: &self.state,
            progress: &self.progress_ns,
            source: &self.source,
            next_release: &self.next_release_ms,
            send_timeout: self.cfg.proxy.heartbeat_timeout.0,
            ordered: self.cfg.proxy.ordered,
        }
    }

    fn wire_config(&self, start_unix_ns: i64) -> pb::JobConfig {
        let r = &self.cfg.replayer;
        pb::JobConfig {
            job_id: self.id().to_owned(),
            target: self.target(),
            concurrency: r.concurrency,
            timeout_ms: r.timeout.0.as_millis() as u64,
            preserve_host: r.preserve_host || self.shaping.sends_host(),
            insecure_tls: r.insecure_tls,
            start_unix_ns,
            credit_window: self.cfg.proxy.credit_window,
            dry_run: self.opts.dry_run,
            subscription: 0,
            raw_results: self.sinks.wants_rows(),
            ordered: self.cfg.proxy.ordered,
            order_timeout_ms: self.cfg.proxy.order_timeout.0.as_millis() as u64,
            compare: self.cfg.compare.as_ref().map(|c| pb::CompareSettings {
                primary: c.primary.clone().unwrap_or_default(),
                secondary: c.secondary.clone().unwrap_or_default(),
                headers: c.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                ignore: c.ignore_patterns(),
                max_body: c.max_body.0,
                recorded: c.baseline == crate::config::Baseline::Recorded,
                protoset: self.files.protoset.clone(),
            }),
            http: match r.http {
                HttpMode::Auto => pb::HttpVersion::HttpAuto,
                HttpMode::Http11 => pb::HttpVersion::Http11,
                HttpMode::Http2 => pb::HttpVersion::Http2,
            } as i32,
            max_streams: r.max_streams,
            target_ca: self.files.ca.clone(),
            client_cert: self.files.client_cert.clone(),
            client_key: self.files.client_key.clone(),
        }
    }

    /// Starts the fetcher and waits for the first record: a broker or object store may take
    /// a while to answer, and the clock must not start before (records due meanwhile would
    /// go out in a burst).
    async fn open_input(&self, ctx: &SourceContext) -> Result<merge::Merger, JobError> {
        let range = self.cfg.job.range();
        let streams = fetchers::build(&self.recording, range, ctx).await?;
        let opts = merge::MergeOptions { window_ns: range.window_ns, begin: range.begin, end: range.end };
        let mut input = merge::Merger::new(streams, opts, Arc::clone(&self.accounting));
        tokio::select! {
            () = input.prime() => {}
            () = self.stop.cancelled() => {}
        }
        Ok(input)
    }

    /// Waits until the outcome of everything dispatched is merged (or its replayer has left).
    /// Replayers learn at once that no more records come, so they report their last
    /// outcomes as soon as they are done instead of at their next heartbeat.
    async fn drain(&self, stopped: bool) {
        self.fleet.end(if stopped { "stopped" } else { "finished" }).await;
        let deadline = stopped.then(|| Instant::now() + self.cfg.proxy.drain_timeout.0);
        loop {
            let changed = self.fleet.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.fleet.unaccounted() == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
    }
}

/// Removes replayers silent for longer than the heartbeat timeout, until `stop`.
async fn reap(job: Arc<Job>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => job.fleet.reap(job.cfg.proxy.heartbeat_timeout.0),
            () = stop.cancelled() => return,
        }
    }
}
