//! reprise: replays recorded HTTP traffic against a service.
//!
//! Thin edge: clap → tracing → config → the dispatcher and replayer crates. Exit codes:
//! 0 the job ran, 2 a bad job file, 3 it could not run, 4 it was stopped before its end,
//! 99 a threshold failed; 130 a second signal ended the process at once.

mod echo;
mod merge;
mod record;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// The dispatch path allocates a few small strings per record; glibc's malloc took ~17% of
// the CPU at 450k records/s (perf), mimalloc much less. Without transparent huge pages
// (`no_thp` here, and for the whole process in `main`): a huge page is zeroed whole, 2 MiB,
// by the thread whose allocation first touches it, and those faults were stalls of up to
// tens of ms in the replayer (bench (c)) and a tenth of the dispatcher's CPU (bench (a)).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad job file.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the job could not run (target unreachable, no recording, no replayer).
const EXIT_CANNOT_RUN: u8 = 3;
/// Exit code when the job was stopped before its end (POST /job/stop, SIGINT, SIGTERM) and
/// no threshold failed: the report covers what ran, which is not the whole recording.
const EXIT_STOPPED: u8 = 4;
/// Exit code when the job ran and a threshold failed (the CI gate).
const EXIT_THRESHOLDS: u8 = 99;

#[derive(Parser)]
#[command(name = "reprise", version, about = "Replays recorded HTTP traffic against a service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads that the dispatch loop and the replayers' connections share. Without
    /// it, `run` gives each replayer a thread of its own and the dispatcher a runtime at a
    /// lower priority (one worker per core); the daemons use one worker per core. When the
    /// target runs on the same small machine, one shared thread can leave it more of the
    /// machine, as wrk's `-t1` does. For `record`, the threads that serve clients (default:
    /// one per core).
    #[arg(long, global = true, env = "REPRISE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on this machine: a dispatcher and N replayers in one process.
    Run {
        job: PathBuf,
        /// Replayers to start (default: job.replayers in the job file).
        #[arg(long)]
        replayers: Option<u32>,
        #[command(flatten)]
        outputs: run::Outputs,
        /// Do everything but the HTTP calls (measures the dispatch path).
        #[arg(long)]
        dry_run: bool,
        /// Replay against this base URL instead of `[job] target` (e.g. a candidate build).
        #[arg(long, env = "REPRISE_TARGET", value_name = "URL", value_parser = job_target)]
        target: Option<String>,
        #[command(flatten)]
        shard: run::ShardArgs,
    },
    /// Serve a job to replayer daemons over gRPC, with an admin HTTP API; without --config,
    /// take jobs one after another (POST /jobs) on a standing fleet.
    Dispatcher {
        /// The one job to run. Without it, the dispatcher waits for jobs submitted with
        /// POST /jobs and runs them one after another.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Without --config: where each finished job's report.json and report.html are kept.
        #[arg(
            long,
            env = "REPRISE_JOBS_DIR",
            value_name = "DIR",
            default_value = "reprise-jobs",
            conflicts_with = "config"
        )]
        jobs_dir: PathBuf,
        /// Without --config: how many finished jobs' reports are kept (the oldest go first).
        #[arg(long, env = "REPRISE_KEEP_JOBS", value_name = "N", default_value_t = 20, conflicts_with = "config",
              value_parser = clap::value_parser!(u32).range(1..))]
        keep_jobs: u32,
        /// Without --config: a TOML file whose `[service]` table (TLS, metrics_auth, the
        /// ports) the dispatcher serves with; a job file will do.
        #[arg(long, env = "REPRISE_SERVICE", value_name = "FILE", conflicts_with = "config")]
        service: Option<PathBuf>,
        #[command(flatten)]
        daemon: run::DaemonArgs,
    },
    /// Receive records from a dispatcher and fire them at the target.
    ///
    /// With REPRISE_REPLAYER_TOKEN set, every call carries it (the dispatcher's must match).
    Replayer(ReplayerArgs),
    /// Check a job file; lists every problem and exits 2 if there is any.
    Validate { job: PathBuf },
    /// Put two JSON reports side by side per endpoint; exits 99 when a --max-… limit is
    /// crossed (the candidate against the last release's run, as a CI gate).
    Diff(DiffArgs),
    /// Merge JSON reports of separate runs (shards run on their own) into one, exactly:
    /// counts added and histograms merged, the thresholds judged on the merge (exit 99).
    Merge(merge::MergeArgs),
    /// A capture proxy: forwards every exchange to --upstream unchanged (HTTP/1.1, HTTP/2,
    /// gRPC) and writes each one, with its answer, as a json record a job can replay.
    Record(Box<record::RecordArgs>),
    /// A local HTTP target answering 200 with the request body (for tries and benchmarks).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Write a line per request as it arrives: Unix µs, method, path (benchmarks).
        #[arg(long)]
        log_arrivals: Option<PathBuf>,
        /// Answer like an API instead: a JSON document made from the path, with a request id
        /// and a time that differ on every answer, drawn from SEED (give each server its
        /// own). For trying `[compare]`.
        #[arg(long, value_name = "SEED")]
        json: Option<u64>,
        /// With --json: change a price in the answers to one path in N (a candidate's
        /// regression, for `[compare]` to find).
        #[arg(long, value_name = "N", default_value_t = 0, requires = "json")]
        json_differ: u64,
    },
}

/// `reprise diff`'s flags.
#[derive(clap::Args)]
struct DiffArgs {
    /// The run to compare against (e.g. the last release's report).
    base: PathBuf,
    /// The run under test.
    candidate: PathBuf,
    /// Fail when an endpoint's p99 rose by more than this, per cent of the base's (`10%`).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    max_p99_increase: Option<f64>,
    /// Fail when an endpoint's p50 rose by more than this, per cent of the base's.
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    max_p50_increase: Option<f64>,
    /// Fail when an endpoint's error rate rose by more than this many percentage points
    /// (`0.5%`: from 1 % to 1.6 % fails).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    max_error_rate_increase: Option<f64>,
    /// Endpoints with fewer requests in either run are shown but not judged (the total
    /// always is).
    #[arg(long, value_name = "N", default_value_t = 100)]
    min_requests: u64,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `10%` or `10`: a non-negative per cent.
fn percent(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches('%').trim();
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a per cent: give e.g. 10% or 2.5")),
    }
}

fn diff(args: &DiffArgs) -> ExitCode {
    use reprise_dispatcher::{DiffLimits, ReportFile, RunDiff};
    let load = |p: &std::path::Path| {
        ReportFile::load(p).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        })
    };
    let (base, candidate) = match (load(&args.base), load(&args.candidate)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let limits = DiffLimits {
        p99_increase_pct: args.max_p99_increase,
        p50_increase_pct: args.max_p50_increase,
        error_rate_increase_pp: args.max_error_rate_increase,
        min_requests: args.min_requests,
    };
    let name = |p: &std::path::Path, r: &ReportFile| format!("{} (job {})", p.display(), r.job);
    let names = (name(&args.base, &base), name(&args.candidate, &candidate));
    let d = RunDiff::of(&base, &candidate, (&names.0, &names.1), limits);
    if args.json {
        match serde_json::to_string_pretty(&d) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        print!("{}", d.table());
    }
    if d.passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_THRESHOLDS) }
}

/// `reprise replayer`'s flags.
#[derive(clap::Args)]
struct ReplayerArgs {
    /// e.g. http://127.0.0.1:9090, or https://dispatcher:9090 for TLS.
    #[arg(long, env = "REPRISE_DISPATCHER")]
    dispatcher: String,
    /// CA certificate (PEM) the dispatcher's certificate must chain to (default: the web's roots).
    #[arg(long, env = "REPRISE_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// This replayer's certificate (PEM), for a dispatcher that verifies clients (mTLS).
    #[arg(long, env = "REPRISE_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "REPRISE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A target this replayer may send to: HOST, HOST:PORT, *.DOMAIN (any subdomain) or
    /// `[IPv6]:PORT`; repeatable. A job aimed elsewhere is refused before anything is sent.
    /// Without it, any target.
    #[arg(
        long = "allow-target",
        env = "REPRISE_ALLOW_TARGETS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    allow_target: Vec<reprise_replayer::AllowedTarget>,
    /// Send to this base URL instead of the job's target (one dispatcher can drive a
    /// staging fleet and a canary fleet); needed for a job without one. --allow-target
    /// applies to it too.
    #[arg(long, env = "REPRISE_TARGET", value_name = "URL", value_parser = replayer_target)]
    target: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address (e.g. `:8081`, or
    /// 127.0.0.1:0 for a free port; prints `listening http=ADDR` once bound).
    #[arg(long, env = "REPRISE_REPLAYER_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Name of this replayer (default: host name and process id).
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    dry_run: bool,
    /// Exit after one job.
    #[arg(long)]
    once: bool,
    /// On SIGTERM or SIGINT during a job, how long this replayer may take to send the
    /// records it holds at their instants (the dispatcher hands it no more and moves its
    /// keys to the others) before what is left unsent is cancelled. A second signal
    /// exits at once.
    #[arg(long, env = "REPRISE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,
}

fn main() -> ExitCode {
    // On hosts where THP is "always" the kernel would give huge pages to large mappings even
    // unasked; this turns them off for this process (a failure only leaves them on).
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Run { .. } | Command::Validate { .. } | Command::Diff(_) | Command::Merge(_)
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // rustls picks a process-wide provider by itself only while exactly one is compiled in:
    // name ring, the one every client here is built on, so a dependency cannot change it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(usize::from(n));
    }
    let layout = match cli.threads {
        Some(_) => run::Layout::Shared,
        None => run::Layout::OwnThreads,
    };
    if matches!(cli.command, Command::Run { .. }) && layout == run::Layout::OwnThreads {
        // This runtime is then the dispatcher's alone (see run::Layout).
        builder.on_thread_start(run::lower_priority);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        match cli.command {
            Command::Run { job, replayers, outputs, dry_run, target, shard } => {
                let flags = run::JobFlags { dry_run, target, shard };
                run::local(&job, replayers, &outputs, flags, layout, cancel).await
            }
            Command::Dispatcher { config, jobs_dir, keep_jobs, service, daemon: args } => match config {
                Some(config) => run::dispatcher(&config, args, cancel).await,
                None if args.shard.shard().is_ok_and(|s| !s.is_whole()) => {
                    eprintln!(
                        "error: --shard needs --config: a standing dispatcher's jobs are each read whole"
                    );
                    ExitCode::from(EXIT_CONFIG)
                }
                None => {
                    let keep = reprise_dispatcher::Keep { dir: jobs_dir, last: keep_jobs as usize };
                    run::standing(args, keep, service.as_deref(), cancel).await
                }
            },
            Command::Replayer(args) => replayer(args, cancel).await,
            Command::Validate { job } => run::validate(&job),
            Command::Diff(args) => diff(&args),
            Command::Merge(args) => merge::merge(&args),
            Command::Record(args) => record::record(*args, cli.threads, cancel).await,
            Command::EchoServer { listen, log_arrivals, json, json_differ } => {
                let answers = match json {
                    Some(seed) => echo::Answers::Json { seed, differ: json_differ },
                    None => echo::Answers::Echo,
                };
                echo_server(listen, log_arrivals, answers, cancel).await
            }
        }
    })
}

/// `reprise replayer`: subscribes to a dispatcher and replays what it is sent, serving its
/// probes (with `--http`) until it has drained.
async fn replayer(args: ReplayerArgs, cancel: CancellationToken) -> ExitCode {
    let id = args.id.unwrap_or_else(default_id);
    let token = match run::env_secret(reprise_dispatcher::REPLAYER_TOKEN_VAR) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let creds = reprise_replayer::Credentials {
        tls_ca: args.tls_ca,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        token,
    };
    let health = reprise_replayer::Health::new(&id, &args.dispatcher);
    // Served until the replayer has drained: probes must answer while it leaves.
    let mut probes = None;
    if let Some(addr) = args.http {
        match run::serve_health(&addr, &health).await {
            Ok(server) => {
                println!("listening http={}", server.addr);
                let _ = std::io::Write::flush(&mut std::io::stdout());
                probes = Some(server);
            }
            Err(code) => return code,
        }
    }
    let opts = reprise_replayer::ReplayerOptions {
        dispatcher: args.dispatcher,
        id,
        dry_run: args.dry_run,
        once: args.once,
        allow: reprise_replayer::Allowlist::new(args.allow_target),
        target: args.target,
        health,
        drain_timeout: args.drain_timeout,
    };
    let result = reprise_replayer::run(opts, &creds, cancel).await;
    if let Some(server) = probes {
        server.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

async fn echo_server(
    listen: SocketAddr,
    log: Option<PathBuf>,
    answers: echo::Answers,
    cancel: CancellationToken,
) -> ExitCode {
    let arrivals = match log.as_deref().map(echo::Arrivals::create).transpose() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --log-arrivals: cannot create the file: {e}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    match echo::start(listen, cancel.clone(), arrivals.clone(), answers).await {
        Ok(addr) => {
            println!("listening addr={addr}");
            cancel.cancelled().await;
            if let Some(Err(e)) = arrivals.map(|a| a.flush()) {
                eprintln!("error: --log-arrivals: {e}");
                return ExitCode::from(EXIT_CANNOT_RUN);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

/// `--target` of `run` and `dispatcher`: what `[job] target` takes.
fn job_target(url: &str) -> Result<String, String> {
    reprise_dispatcher::config::check_target(url).map(|()| url.to_owned())
}

/// `--target` of a replayer: an http(s) base URL (it has no built-in echo target).
fn replayer_target(url: &str) -> Result<String, String> {
    reprise_replayer::base_url(url).map(|_| url.to_owned()).map_err(|_| {
        "must be an http:// or https:// base URL with a host, e.g. \"http://127.0.0.1:8080\"".to_owned()
    })
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "replayer".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// First SIGINT/SIGTERM stops the job and drains; a second one exits at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Some(_) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
            }
            if round == 0 {
                eprintln!("stopping: draining the job (signal again to exit at once)");
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}
