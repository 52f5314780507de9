//! The replayer's side of the wire: subscribes (reconnecting with backoff while the
//! dispatcher is absent or gone), runs one [`Executor`] per job with its reporter
//! (`reporter.rs`: statistics every second, acks whenever they pile up), and leaves without
//! losing anything when cancelled mid-job (see `connect_and_serve`).
//!
//! The dispatcher is an [`Upstream`]: over gRPC ([`run`]), or in the same process
//! ([`run_on`], what `reprise run` does: the same messages, without encoding them, HTTP/2
//! or loopback TCP in between).

use std::sync::Arc;
use std::time::Duration;

use reprise_proto::batch::Received;
use reprise_proto::pb;
use reprise_proto::pb::dispatcher_event::Event;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::allow::Allowlist;
use crate::executor::Executor;
use crate::grpc::{Credentials, Grpc, SetupError};
use crate::health::Health;
use crate::reporter::Reporter;
use crate::upstream::{Reports, Upstream, UpstreamError};

/// Batches buffered between the stream and the executor (credits bound them further).
const BATCH_CAPACITY: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ReplayerOptions {
    /// e.g. "http://127.0.0.1:9090"; for a dispatcher in the same process, how logs name it.
    pub dispatcher: String,
    pub id: String,
    /// Do everything but the HTTP call.
    pub dry_run: bool,
    /// Exit after one job instead of waiting for the next.
    pub once: bool,
    /// Targets this replayer may send to (`--allow-target`); empty allows any.
    pub allow: Allowlist,
    /// Its own target (`--target`), checked with [`crate::http::base_url`]: it sends there
    /// instead of the job's. Without one, a job without a target is refused.
    pub target: Option<String>,
    /// What `--http` serves: readiness and this replayer's figures.
    pub health: Arc<Health>,
    /// On cancel (SIGTERM) during a job, how long it may take to send what it holds at its
    /// instants before what is still unsent is cancelled (`--drain-timeout`).
    pub drain_timeout: Duration,
}

/// `--drain-timeout`'s default: long enough for records a credit window ahead of their
/// instant and a slow target's requests in flight; Kubernetes' grace period must cover it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplayerError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("the dispatcher refused this replayer: {0}")]
    Refused(String),
    #[error("this replayer refused the job: {0}")]
    JobRefused(String),
}

/// Runs against the dispatcher at `opts.dispatcher` (gRPC, TLS for an https:// URL) until
/// cancelled (or, with `once`, until one job has ended).
pub async fn run(
    opts: ReplayerOptions,
    creds: &Credentials,
    cancel: CancellationToken,
) -> Result<(), ReplayerError> {
    let upstream = Grpc::new(&opts.dispatcher, creds)?;
    run_on(&upstream, opts, cancel).await
}

/// Runs against `upstream` until cancelled (or, with `once`, until one job has ended).
pub async fn run_on<U: Upstream>(
    upstream: &U,
    opts: ReplayerOptions,
    cancel: CancellationToken,
) -> Result<(), ReplayerError> {
    let mut backoff = BACKOFF_MIN;
    // Runs whose dispatcher went away finish their requests in flight here, without
    // holding up the next subscription; `run` returns once they have.
    let mut abandoned = JoinSet::new();
    let result = loop {
        if cancel.is_cancelled() {
            break Ok(());
        }
        while abandoned.try_join_next().is_some() {}
        match connect_and_serve(upstream, &opts, &cancel, &mut abandoned).await {
            Ended::JobDone if opts.once => break Ok(()),
            Ended::JobDone | Ended::Closed => backoff = BACKOFF_MIN,
            // A refusal that trying again will not change: a wrong build, id or token.
            Ended::Upstream(UpstreamError::Refused(why)) => break Err(ReplayerError::Refused(why)),
            Ended::Upstream(UpstreamError::Unavailable(why)) => {
                tracing::info!(replayer = %opts.id, error = %why, retry_in = ?backoff, "dispatcher not reachable")
            }
            // We refused the job: with --once that is the end; otherwise look again later
            // (the backoff keeps growing), in case the dispatcher's next job is one we take.
            Ended::JobRefused(why) => {
                if opts.once {
                    break Err(ReplayerError::JobRefused(why));
                }
                tracing::warn!(replayer = %opts.id, reason = %why, retry_in = ?backoff, "refused the job");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    };
    while abandoned.join_next().await.is_some() {}
    result
}

/// How one subscription ended.
#[derive(Debug)]
enum Ended {
    /// A job ran to its end (finished, or stopped by the dispatcher).
    JobDone,
    /// The stream closed or broke off, or this replayer left: subscribe again unless
    /// cancelled.
    Closed,
    /// This replayer refused the job: no target, or one outside `--allow-target`.
    JobRefused(String),
    /// The dispatcher did not take the subscription.
    Upstream(UpstreamError),
}

/// One subscription, until a job ends, the stream closes or either side refuses.
///
/// Cancelled (SIGTERM) during a job, the replayer leaves without losing anything: it tells
/// the dispatcher, which hands it no more records and ends its stream with JobEnd
/// "released" once everything dispatched to it is on it; it sends those at their instants,
/// reports them and only then closes the stream. What is still unsent at the drain timeout
/// is cancelled (and counted so).
async fn connect_and_serve<U: Upstream>(
    upstream: &U,
    opts: &ReplayerOptions,
    cancel: &CancellationToken,
    abandoned: &mut JoinSet<()>,
) -> Ended {
    let reg = pb::Registration {
        replayer_id: opts.id.clone(),
        version: reprise_proto::VERSION.to_owned(),
        target: opts.target.as_deref().and_then(|t| crate::http::base_url(t).ok()).unwrap_or_default(),
    };
    let (mut stream, reports) = match upstream.subscribe(reg).await {
        Ok(subscribed) => subscribed,
        Err(e) => return Ended::Upstream(e),
    };
    let _connected = opts.health.connected();
    tracing::info!(replayer = %opts.id, dispatcher = %opts.dispatcher, "subscribed");
    let mut serving = Serving::<U> { opts, reports, abandoned, run: None, leaving: None };
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = cancel.cancelled(), if serving.leaving.is_none() => match serving.leave().await {
                Some(ended) => return ended,
                None => continue,
            },
            () = sleep_until(serving.leaving.unwrap_or_else(Instant::now)), if serving.leaving.is_some() => {
                tracing::warn!(replayer = %opts.id, "drain timeout before the dispatcher released this replayer; cancelling what it holds");
                return serving.stop().await;
            }
        };
        let ended = match msg {
            Some(Ok(ev)) => serving.take(ev.event).await,
            None | Some(Err(_)) => Some(serving.abandon()),
        };
        if let Some(ended) = ended {
            return ended;
        }
    }
}

/// A subscription being served: the run of the job it holds, and whether it is leaving.
struct Serving<'a, U: Upstream> {
    opts: &'a ReplayerOptions,
    reports: U::Reports,
    /// Runs given up on (their stream broke) finish here, off the loop.
    abandoned: &'a mut JoinSet<()>,
    run: Option<Run<U::Reports>>,
    /// Set once leaving: when what it holds must have been sent.
    leaving: Option<Instant>,
}

impl<U: Upstream> Serving<'_, U> {
    /// Asked to leave (a signal): with a job, it tells the dispatcher and drains what it
    /// holds (`None`: go on serving until released); without one, or when the dispatcher
    /// cannot be told, it stops.
    async fn leave(&mut self) -> Option<Ended> {
        let Some(s) = &self.run else { return Some(Ended::Closed) };
        self.opts.health.leaving();
        let deadline = Instant::now() + self.opts.drain_timeout;
        if s.reporter.leave(&s.exec).await {
            tracing::info!(replayer = %self.opts.id, drain_timeout = ?self.opts.drain_timeout, "leaving: sending what this replayer holds");
            self.leaving = Some(deadline);
            return None;
        }
        Some(self.stop().await)
    }

    /// Cancels what the run holds and ends the subscription.
    async fn stop(&mut self) -> Ended {
        if let Some(s) = self.run.take() {
            s.finish(Finish::Stop).await;
        }
        Ended::Closed
    }

    /// The stream broke: the run is given up (the dispatcher counts what it held as lost).
    fn abandon(&mut self) -> Ended {
        if let Some(s) = self.run.take() {
            s.abandon(self.abandoned);
        }
        Ended::Closed
    }

    /// Takes one event from the dispatcher; `Some` when the subscription ends with it.
    async fn take(&mut self, event: Option<Event>) -> Option<Ended> {
        match event {
            Some(Event::Job(cfg)) => {
                if let Some(old) = self.run.take() {
                    old.abandon(self.abandoned);
                }
                if self.leaving.is_some() {
                    return Some(Ended::Closed);
                }
                match accept(cfg, self.opts, &self.reports).await {
                    Ok(s) => self.run = Some(s),
                    Err(why) => return Some(Ended::JobRefused(why)),
                }
            }
            Some(Event::Batch(b)) => match reprise_proto::batch::split(b) {
                Ok(records) => {
                    if let Some(s) = &self.run {
                        let _ = s.batches.send(records).await;
                    }
                }
                // Only a dispatcher of another build could send this (the versions match):
                // like a broken stream, the run ends and the dispatcher counts what it
                // held as lost.
                Err(e) => {
                    tracing::error!(replayer = %self.opts.id, error = %e, "a batch of records could not be read");
                    return Some(self.abandon());
                }
            },
            Some(Event::End(end)) => return Some(self.end(&end.reason).await),
            None => {}
        }
        None
    }

    /// The job ended (or this replayer was released while leaving): the run finishes as
    /// the reason says.
    async fn end(&mut self, reason: &str) -> Ended {
        let how = match (reason, self.leaving) {
            ("stopped", _) => Finish::Stop,
            (_, Some(deadline)) => Finish::Drain(deadline),
            _ => Finish::Complete,
        };
        if let Some(s) = self.run.take() {
            s.finish(how).await;
        }
        if self.leaving.is_some() {
            tracing::info!(replayer = %self.opts.id, reason, "left the job");
            return Ended::Closed;
        }
        tracing::info!(replayer = %self.opts.id, reason, "job ended");
        Ended::JobDone
    }
}

/// Takes a job, or refuses it (the reason as the error) before sending anything, telling the
/// dispatcher why: no target (the job has none and neither has this replayer), a target
/// outside `--allow-target`, or one that cannot be used. The replayer's own target, when it
/// has one, replaces the job's before any of that is checked. A job taken is acknowledged at
/// once: the dispatcher hands records only to replayers that accepted.
async fn accept<R: Reports>(
    mut cfg: pb::JobConfig,
    opts: &ReplayerOptions,
    reports: &R,
) -> Result<Run<R>, String> {
    if let Some(own) = &opts.target {
        cfg.target.clone_from(own);
    }
    let checked = if cfg.target.is_empty() {
        Err(NO_TARGET.to_owned())
    } else {
        let mut baselines = cfg.compare.iter().flat_map(|c| [&c.primary, &c.secondary]);
        opts.allow
            .check(&cfg.target)
            .and_then(|()| {
                baselines.try_for_each(|t| opts.allow.check(t).map_err(|e| format!("[compare] {e}")))
            })
            .and_then(|()| {
                Run::start(cfg.clone(), opts, reports.clone())
                    .map_err(|e| format!("target {}: {e}", cfg.target))
            })
    };
    match checked {
        Ok(run) => {
            run.reporter.ack(&run.exec).await;
            Ok(run)
        }
        Err(why) => {
            opts.health.refused_job();
            tracing::error!(replayer = %opts.id, reason = %why, "refusing the job");
            let refusal = pb::StatsReport {
                replayer_id: opts.id.clone(),
                job_id: cfg.job_id.clone(),
                subscription: cfg.subscription,
                refusal: why.clone(),
                ..Default::default()
            };
            if let Err(e) = reports.report(refusal).await {
                tracing::warn!(replayer = %opts.id, error = %e, "the dispatcher did not take the refusal");
            }
            Err(why)
        }
    }
}

/// Why a job without a target is refused by a replayer without one.
pub const NO_TARGET: &str = "the job has no target and this replayer was given none: start it with \
     --target URL (or REPRISE_TARGET), or set [job] target";

/// How a run ends.
#[derive(Clone, Copy, Debug)]
enum Finish {
    /// Every record received is sent at its instant.
    Complete,
    /// The job was stopped: what is unsent is cancelled, requests in flight are cut.
    Stop,
    /// Leaving: as `Complete` until the deadline, then as `Stop`.
    Drain(Instant),
}

/// One job at this replayer: the executor and its reporter.
struct Run<R: Reports> {
    batches: mpsc::Sender<Vec<Received>>,
    stop: CancellationToken,
    executor: tokio::task::JoinHandle<()>,
    reporting: tokio::task::JoinHandle<()>,
    done: CancellationToken,
    exec: Arc<Executor>,
    reporter: Reporter<R>,
    health: Arc<Health>,
}

impl<R: Reports> Run<R> {
    fn start(cfg: pb::JobConfig, opts: &ReplayerOptions, to: R) -> Result<Self, crate::http::TargetError> {
        let exec = Executor::new(cfg, opts.dry_run)?;
        let (tx, rx) = mpsc::channel(BATCH_CAPACITY);
        let stop = CancellationToken::new();
        let executor = tokio::spawn(Arc::clone(&exec).run(rx, stop.clone()));
        opts.health.job_started(&exec);
        let reporter = Reporter::new(to, opts.id.clone(), Arc::clone(&opts.health));
        let done = CancellationToken::new();
        let reporting = tokio::spawn(reporter.clone().every_second(Arc::clone(&exec), done.clone()));
        Ok(Run {
            batches: tx,
            stop,
            executor,
            reporting,
            done,
            exec,
            reporter,
            health: Arc::clone(&opts.health),
        })
    }

    /// The job ended: let the executor finish (or cancel what is left), then report the rest.
    async fn finish(mut self, how: Finish) {
        if matches!(how, Finish::Stop) {
            self.stop.cancel();
        }
        drop(self.batches);
        let drained = match how {
            Finish::Drain(deadline) => tokio::time::timeout_at(deadline, &mut self.executor).await.is_ok(),
            Finish::Complete | Finish::Stop => false,
        };
        if !drained {
            if matches!(how, Finish::Drain(_)) {
                tracing::warn!(
                    replayer = %self.reporter.id,
                    unsent = self.exec.pending(),
                    "drain timeout: what is still unsent is cancelled"
                );
                self.stop.cancel();
            }
            let _ = (&mut self.executor).await;
        }
        self.done.cancel();
        let _ = self.reporting.await;
        self.reporter.send(&self.exec).await;
        self.health.job_ended(&self.exec);
    }

    /// The dispatcher is gone: nothing more will be acknowledged. What is in flight ends in
    /// `owner`, which waits for the executor and the reporter.
    fn abandon(self, owner: &mut JoinSet<()>) {
        self.stop.cancel();
        self.done.cancel();
        owner.spawn(async move {
            drop(self.batches);
            let _ = self.executor.await;
            let _ = self.reporting.await;
            self.health.job_ended(&self.exec);
        });
    }
}
