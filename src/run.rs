//! The commands that run jobs: `run` (dispatcher and replayers in one process), `dispatcher`
//! (the daemon) and `validate`.
//!
//! In `run` the replayers call the dispatcher's service in place ([`Local`]): the same
//! subscription, events, acks and reports as a fleet over gRPC, but a batch reaches its
//! replayer as the bytes the dispatch loop wrote, not encoded into HTTP/2 frames, carried by
//! loopback TCP and decoded again (see docs/design.md, "In-process replayers").

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use reprise_dispatcher::JobPlan;
use reprise_dispatcher::config::{ListenAddr, Needs};
use reprise_dispatcher::{
    ADMIN_TOKEN_VAR, Access, CoordinatorTls, DropReason, GrpcCoordinator, InProcess, Job, JobError,
    JobOptions, JobState, REPLAYER_TOKEN_VAR, Report, Shard, Sharing, Snapshot, Token, progress_line,
};
use reprise_proto::Events;
use reprise_proto::pb;
use reprise_replayer::{Reports, Upstream, UpstreamError};
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::{EXIT_CANNOT_RUN, EXIT_CONFIG, EXIT_STOPPED, EXIT_THRESHOLDS};

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Compiles a job file for a command that `needs` more of it; its warnings (Havok keys
/// reprise does not use, a job without a target) are printed once each.
fn load(path: &Path, needs: Needs) -> Result<JobPlan, ExitCode> {
    let (plan, warnings) = reprise_dispatcher::compile(path, needs).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    for w in &warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(plan)
}

fn config_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn cannot_run(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_CANNOT_RUN)
}

pub fn validate(path: &Path) -> ExitCode {
    match load(path, Needs::default()) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Resolves "builtin:echo" to a local echo target; leaves other targets as they are.
async fn resolve_target(target: &str, cancel: &CancellationToken) -> Result<String, ExitCode> {
    if target != "builtin:echo" {
        return Ok(target.to_owned());
    }
    let addr = crate::echo::start(
        ([127, 0, 0, 1], 0).into(),
        cancel.child_token(),
        None,
        crate::echo::Answers::Echo,
    )
    .await
    .map_err(|e| cannot_run(format!("cannot start the built-in echo target: {e}")))?;
    Ok(format!("http://{addr}"))
}

/// Checks that the target accepts TCP connections before replaying against it.
async fn probe(target: &str) -> Result<(), String> {
    let uri: hyper::Uri = target.parse().map_err(|_| format!("job.target = {target:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("target {target} is unreachable ({e}); start it, or fix job.target")),
        Err(_) => Err(format!("target {target} did not accept a connection within 3s; fix job.target")),
    }
}

/// Where the report goes besides the terminal (flags shared by `run` and `dispatcher`).
#[derive(Debug, Default, clap::Args)]
pub struct Outputs {
    /// Write the report as JSON to this file.
    #[arg(long = "report-json", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write Locust-style CSV files PREFIX_stats.csv and PREFIX_stats_history.csv.
    #[arg(long = "report-csv", value_name = "PREFIX")]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML report with charts to this file.
    #[arg(long = "report-html", value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// What `run` changes of the job: the target, a dry run, a shard.
pub struct JobFlags {
    pub dry_run: bool,
    pub target: Option<String>,
    pub shard: ShardArgs,
}

/// Which share of the recording a dispatcher reads (see the dispatcher's `shard` module).
#[derive(clap::Args, Clone, Debug)]
pub struct ShardArgs {
    /// Read only this share of the recording: shard INDEX of COUNT (`0/3`, `1/3`, `2/3`).
    /// Each record is read by exactly one shard; `reprise merge` makes one report of the
    /// shards' JSON reports.
    #[arg(long, env = "REPRISE_SHARD", value_name = "INDEX/COUNT")]
    pub shard: Option<Shard>,
    /// This many shards, the index taken from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    #[arg(long, value_name = "COUNT", conflicts_with = "shard")]
    pub shards: Option<u32>,
    #[arg(long, env = "JOB_COMPLETION_INDEX", hide = true)]
    pub completion_index: Option<u32>,
}

impl ShardArgs {
    /// The shard the flags name; the whole source without any.
    pub fn shard(&self) -> Result<Shard, String> {
        match (self.shard, self.shards, self.completion_index) {
            (Some(s), _, _) => Ok(s),
            (None, Some(n), Some(i)) => {
                Shard::new(i, n).map_err(|e| format!("--shards {n} with JOB_COMPLETION_INDEX={i}: {e}"))
            }
            (None, Some(n), None) => Err(format!(
                "--shards {n} takes this shard's index from JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job), which is not set; give --shard INDEX/{n} instead"
            )),
            (None, None, _) => Ok(Shard::WHOLE),
        }
    }
}

/// Where `run`'s replayers run, beside the dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Each replayer on a thread of its own, and the process's runtime, the dispatcher's
    /// (reading, parsing, dispatching), at a lower priority ([`lower_priority`]). A
    /// replayer's connections are driven by one task anyway (one core at most); on a thread
    /// of its own it is never queued behind the dispatch loop, and a target on the same
    /// machine wakes two replayer threads, not one, so the kernel spreads them as it does
    /// two load-generator processes. The dispatcher works ahead of the instants (a batch
    /// reaches a replayer a lead ahead; at speed "max" as far as credits allow): its work
    /// can wait for a free core, a request's instant cannot.
    OwnThreads,
    /// Replayers as tasks on the process's runtime (`--threads N` workers), beside the
    /// dispatcher: with one thread, every connection on one core, as wrk's `-t1`.
    Shared,
}

/// How much less CPU the dispatcher's threads get than the replayers' when both want it
/// (nice 10: about a tenth of a core beside a busy replayer thread).
const DISPATCHER_NICE: i32 = 10;

/// Lowers the calling thread's priority (Linux, where nice is per thread; elsewhere it
/// would be the whole process's, replayers included, so nothing is done). Each thread of
/// the dispatcher's runtime calls it as it starts; the replayers' threads are spawned by
/// the main thread, whose priority they inherit.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, DISPATCHER_NICE) {
        tracing::debug!(error = %e, "cannot lower the dispatcher's priority");
    }
}

pub async fn local(
    path: &Path,
    replayers: Option<u32>,
    outputs: &Outputs,
    flags: JobFlags,
    layout: Layout,
    cancel: CancellationToken,
) -> ExitCode {
    let JobFlags { dry_run, target, shard } = flags;
    let shard = match shard.shard() {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let mut plan = match load(path, Needs { target: target.is_none() }) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let replayers = replayers.unwrap_or(plan.config.job.replayers).max(1);
    // invariant: without --target, load refused a job file without [job] target.
    let Some(target) = target.or_else(|| plan.config.job.target.clone()) else {
        unreachable!("checked by load")
    };
    let target = match resolve_target(&target, &cancel).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    if !dry_run && let Err(e) = probe(&target).await {
        return cannot_run(e);
    }
    plan.config.job.min_replayers = replayers;
    let loopback = ([127, 0, 0, 1], 0).into();
    let mut opts = JobOptions::new(Some(target), dry_run);
    opts.shard = shard;
    // Loopback only, and its replayers in this process: no token or TLS to ask for.
    let access = Access::default();
    // Its replayers are in this process: no gRPC port to open.
    let mut running = match reprise_dispatcher::start(plan, opts, None, loopback, access, &cancel).await {
        Ok(r) => r,
        Err(e) => return cannot_run(e),
    };
    eprintln!("reprise: replaying {} — live page at http://{}/", path.display(), running.http);
    let stop_replayers = CancellationToken::new();
    let mut fleet = JoinSet::new();
    for i in 1..=replayers {
        let id = format!("local-{i}");
        let opts = reprise_replayer::ReplayerOptions {
            dispatcher: "in-process".to_owned(),
            health: reprise_replayer::Health::new(&id, "in-process"),
            id,
            dry_run,
            once: true,
            allow: reprise_replayer::Allowlist::default(),
            target: None,
            drain_timeout: reprise_replayer::DRAIN_TIMEOUT,
        };
        let stop = stop_replayers.clone();
        let dispatcher = Local(running.in_process());
        let replayer = async move {
            if let Err(e) = reprise_replayer::run_on(&dispatcher, opts, stop).await {
                eprintln!("error: replayer: {e}");
            }
        };
        if let Err(e) = start_replayer(&mut fleet, i, layout, replayer) {
            // The job cannot have all its replayers: it is stopped as by a signal (exit 4).
            eprintln!("error: cannot start replayer local-{i}: {e}");
            cancel.cancel();
        }
    }
    let result = tokio::select! {
        r = &mut running.done => r,
        () = progress(&running.job) => unreachable!("progress prints until the job ends"),
    };
    let code = finish(&running.job, outputs, result);
    stop_replayers.cancel();
    while fleet.join_next().await.is_some() {}
    running.shutdown().await;
    code
}

/// Starts replayer `i` as `layout` says; `fleet` ends when it has.
fn start_replayer(
    fleet: &mut JoinSet<()>,
    i: u32,
    layout: Layout,
    replayer: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match layout {
        Layout::Shared => {
            fleet.spawn(replayer);
        }
        Layout::OwnThreads => {
            // Its own runtime: its tasks (connections, reports, the timekeeping thread's
            // pool) stay on its thread, spawned here by the main thread at its priority.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .thread_name(format!("replayer-{i}"))
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("replayer-{i}"))
                .spawn(move || runtime.block_on(replayer))?;
            fleet.spawn_blocking(move || {
                if thread.join().is_err() {
                    eprintln!("error: replayer local-{i} panicked");
                }
            });
        }
    }
    Ok(())
}

/// The dispatcher of this process, as its replayers see it.
#[derive(Clone)]
struct Local(InProcess);

impl Upstream for Local {
    type Reports = Local;

    async fn subscribe(
        &self,
        reg: pb::Registration,
    ) -> Result<(Events<UpstreamError>, Local), UpstreamError> {
        let events = self.0.subscribe(reg)?.map(|e| e.map_err(UpstreamError::from));
        Ok((Box::pin(events), self.clone()))
    }
}

impl Reports for Local {
    async fn report(&self, report: pb::StatsReport) -> Result<(), UpstreamError> {
        Ok(self.0.report(report).await?)
    }
}

/// Prints the report, writes its files and maps the job's result to an exit code.
fn finish(
    job: &Job,
    outputs: &Outputs,
    result: Result<Result<(), JobError>, tokio::task::JoinError>,
) -> ExitCode {
    let code = match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => cannot_run(e),
        Err(e) => cannot_run(format!("the job task failed: {e}")),
    };
    // One snapshot for every file written: the table, JSON, HTML and CSV agree.
    let snapshot = Snapshot::of(job, true);
    let report = Report::from_snapshot(&snapshot);
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let no_replayer = report.totals.counts.dropped.get(&DropReason::NoReplayer).copied().unwrap_or(0);
    let code = if no_replayer > 0 {
        // Every replayer was gone while records fell due: the job did not run as recorded.
        cannot_run(format!(
            "{no_replayer} records found no replayer (all replayers were lost); see the report"
        ))
    } else if let Some(lost) = report.shards.iter().find(|s| s.state == "lost") {
        cannot_run(format!(
            "shard {} was lost before its end; the report covers what the others replayed",
            lost.shard
        ))
    } else if code == ExitCode::SUCCESS && !report.thresholds_passed && report.shard.is_none() {
        let mut failed: Vec<String> =
            report.thresholds.iter().filter(|v| !v.pass).map(|v| v.to_string()).collect();
        if let Some(why) = &report.aborted_by {
            failed.push(format!("stopped early by: {why}"));
        }
        eprintln!("error: thresholds failed:\n  {}", failed.join("\n  "));
        ExitCode::from(EXIT_THRESHOLDS)
    } else if code == ExitCode::SUCCESS && report.state == JobState::Stopped {
        eprintln!("reprise: the job was stopped before its end; the report covers what ran");
        ExitCode::from(EXIT_STOPPED)
    } else {
        code
    };
    print!("{}", report.table());
    let _ = std::io::stdout().flush();
    if let Err(e) = write_report(&report, outputs.json.as_deref(), outputs.html.as_deref()) {
        return cannot_run(e);
    }
    if let Some(prefix) = &outputs.csv
        && let Err(e) = reprise_dispatcher::write_csv(&snapshot, &report, prefix)
    {
        return cannot_run(format!("cannot write CSV files {}_*.csv: {e}", prefix.display()));
    }
    code
}

/// Writes the report as JSON to `json` and as a page to `html`, where given; the error
/// names the file.
pub fn write_report(report: &Report, json: Option<&Path>, html: Option<&Path>) -> Result<(), String> {
    if let Some(path) = json {
        serde_json::to_vec_pretty(report)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(path, text).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(path, reprise_dispatcher::render_html(report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One line a second on stderr: sent/scheduled, rate, errors, in flight. Never returns.
async fn progress(job: &Job) -> ! {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let line = progress_line(job);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

/// What `reprise dispatcher` is given besides its job (`--config`) or its job queue.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// gRPC listen address (default: service.grpc in the job file).
    #[arg(long)]
    pub grpc: Option<String>,
    /// Admin HTTP listen address (default: service.http in the job file).
    #[arg(long)]
    pub http: Option<String>,
    /// Keep serving after the job has ended.
    #[arg(long)]
    pub serve_forever: bool,
    /// Serve beyond loopback without REPRISE_REPLAYER_TOKEN or REPRISE_ADMIN_TOKEN, on
    /// purpose: anyone who reaches the ports can then receive the recorded requests or
    /// steer the job.
    #[arg(long)]
    pub insecure: bool,
    /// The job's target instead of `[job] target`; a replayer's own --target still wins.
    #[arg(long, env = "REPRISE_TARGET", value_name = "URL", value_parser = crate::job_target)]
    pub target: Option<String>,
    #[command(flatten)]
    pub outputs: Outputs,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// For shards 1 and up (`--shard I/N`): shard 0's gRPC address. The shards start
    /// together at the instant shard 0 announces once all have joined.
    #[arg(long, env = "REPRISE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// The CA certificate (PEM) an https:// coordinator's certificate chains to
    /// (default: the web's roots).
    #[arg(long, env = "REPRISE_COORDINATOR_CA", value_name = "PEM", requires = "coordinator")]
    pub coordinator_ca: Option<PathBuf>,
    /// This shard's client certificate (PEM) for a coordinator whose `[tls] client_ca`
    /// asks callers for one, as it asks replayers.
    #[arg(long, env = "REPRISE_COORDINATOR_CERT", value_name = "PEM", requires_all = ["coordinator", "coordinator_key"])]
    pub coordinator_cert: Option<PathBuf>,
    /// The key of --coordinator-cert (PEM).
    #[arg(long, env = "REPRISE_COORDINATOR_KEY", value_name = "PEM", requires = "coordinator_cert")]
    pub coordinator_key: Option<PathBuf>,
    /// Shard 0 refuses to start the job when a shard's clock is further off its own.
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub max_clock_offset: std::time::Duration,
}

/// A secret from the environment: `None` when unset; an error when set but unusable.
pub fn env_secret(var: &'static str) -> Result<Option<String>, ExitCode> {
    match std::env::var(var) {
        Ok(v) => Token::new(var, &v).map(|_| Some(v)).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("error: {var} is not valid text; use e.g. the output of `openssl rand -hex 32`");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// The tokens callers of a dispatcher daemon must present, from the environment.
fn access(insecure: bool) -> Result<Access, ExitCode> {
    let token = |var: &'static str| -> Result<Option<Token>, ExitCode> {
        Ok(env_secret(var)?.and_then(|v| Token::new(var, &v).ok()))
    };
    Ok(Access { replayer_token: token(REPLAYER_TOKEN_VAR)?, admin_token: token(ADMIN_TOKEN_VAR)?, insecure })
}

/// Serves a replayer's `/healthz`, `/readyz` and `/metrics` on `addr` (`--http`), until the
/// caller shuts the server down.
pub async fn serve_health(
    addr: &str,
    health: &std::sync::Arc<reprise_replayer::Health>,
) -> Result<reprise_replayer::HealthServer, ExitCode> {
    let addr = addr.parse::<ListenAddr>().map_err(|e| {
        eprintln!("error: --http: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    reprise_replayer::serve_health(addr.0, std::sync::Arc::clone(health))
        .await
        .map_err(|e| cannot_run(format!("--http: cannot listen on {}: {e}", addr.0)))
}

fn addr(flag: Option<String>, default: ListenAddr, name: &str) -> Result<std::net::SocketAddr, ExitCode> {
    match flag {
        None => Ok(default.0),
        Some(s) => s.parse::<ListenAddr>().map(|a| a.0).map_err(|e| {
            eprintln!("error: --{name}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// What a dispatcher daemon serves with: its ports (the flags over `[service]`), the
/// target of its jobs resolved, and the tokens callers must present.
struct Serving {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    target: Option<String>,
    access: Access,
}

async fn serving(
    args: &DaemonArgs,
    service: &reprise_dispatcher::config::ServiceConfig,
    target: Option<String>,
    cancel: &CancellationToken,
) -> Result<Serving, ExitCode> {
    let grpc = addr(args.grpc.clone(), service.grpc, "grpc")?;
    let http = addr(args.http.clone(), service.http, "http")?;
    let target = match target {
        Some(t) => Some(resolve_target(&t, cancel).await?),
        None => None,
    };
    Ok(Serving { grpc, http, target, access: access(args.insecure)? })
}

pub async fn dispatcher(path: &Path, args: DaemonArgs, cancel: CancellationToken) -> ExitCode {
    let plan = match load(path, Needs::default()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Without a target (Havok's files have none), each replayer sends to its own --target.
    let target = args.target.clone().or_else(|| plan.config.job.target.clone());
    let Serving { grpc, http, target, access } =
        match serving(&args, &plan.config.service, target, &cancel).await {
            Ok(s) => s,
            Err(code) => return code,
        };
    let mut opts = JobOptions::new(target, false);
    (opts.shard, opts.sharing) = match sharing(&args) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let mut running = match reprise_dispatcher::start(plan, opts, Some(grpc), http, access, &cancel).await {
        Ok(r) => r,
        Err(e) => return cannot_run(e),
    };
    // invariant: a gRPC address was given, so it was bound.
    let grpc = running.grpc.unwrap_or(grpc);
    println!("listening grpc={grpc} http={}", running.http);
    let _ = std::io::stdout().flush();
    let result = (&mut running.done).await;
    if args.serve_forever {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = running.job.exit_requested() => {}
        }
    }
    let code = finish(&running.job, &args.outputs, result);
    running.shutdown().await;
    code
}

/// The shard a dispatcher is and its part in the common start: shard 0 of several
/// coordinates, the others join `--coordinator`.
fn sharing(args: &DaemonArgs) -> Result<(Shard, Sharing), String> {
    let shard = args.shard.shard()?;
    let sharing = match (shard.is_whole(), shard.index(), &args.coordinator) {
        (true, _, None) => Sharing::Alone,
        (true, _, Some(_)) => return Err("--coordinator is for a shard (--shard I/N with I > 0)".into()),
        // Shard 0 is the coordinator; it may be given --coordinator too, as the pods of a
        // Kubernetes Indexed Job all are.
        (false, 0, _) => Sharing::Coordinate(args.max_clock_offset),
        (false, _, None) => {
            return Err(format!(
                "shard {shard} needs --coordinator URL (REPRISE_COORDINATOR): shard 0's gRPC address, e.g. http://shard-0:9090"
            ));
        }
        (false, _, Some(url)) => {
            let token = std::env::var(REPLAYER_TOKEN_VAR).ok();
            let tls = CoordinatorTls {
                ca: args.coordinator_ca.as_deref(),
                identity: args.coordinator_cert.as_deref().zip(args.coordinator_key.as_deref()),
            };
            Sharing::Join(std::sync::Arc::new(GrpcCoordinator::new(url, token.as_deref(), tls)?))
        }
    };
    Ok((shard, sharing))
}

/// `reprise dispatcher` without `--config`: takes jobs (POST /jobs) and runs them one after
/// another until SIGTERM or POST /shutdown. Its ports are `--grpc` and `--http`, else those
/// of `--service FILE`'s `[service]` (default `:9090` and `:8080`), with its TLS.
pub async fn standing(
    args: DaemonArgs,
    keep: reprise_dispatcher::Keep,
    service: Option<&Path>,
    cancel: CancellationToken,
) -> ExitCode {
    if args.serve_forever
        || args.outputs.json.is_some()
        || args.outputs.html.is_some()
        || args.outputs.csv.is_some()
    {
        eprintln!(
            "error: --serve-forever and --report-* go with --config; a dispatcher taking jobs serves until stopped and keeps each job's reports in --jobs-dir"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let service = match service.map(reprise_dispatcher::config::ServiceConfig::read) {
        None => reprise_dispatcher::config::ServiceConfig::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("error: --service: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Serving { grpc, http, target, access } =
        match serving(&args, &service, args.target.clone(), &cancel).await {
            Ok(s) => s,
            Err(code) => return code,
        };
    let mut standing =
        match reprise_dispatcher::standing(keep, target, &service, (grpc, http), access, &cancel).await {
            Ok(s) => s,
            Err(e) => return cannot_run(e),
        };
    println!("listening grpc={} http={}", standing.grpc, standing.http);
    let _ = std::io::stdout().flush();
    tokio::select! {
        () = cancel.cancelled() => {}
        () = standing.station.exit_requested() => cancel.cancel(),
    }
    let _ = (&mut standing.done).await;
    standing.shutdown().await;
    ExitCode::SUCCESS
}
