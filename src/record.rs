//! `reprise record`: its flags, checked into [`reprise_record::RecordOptions`], and the
//! lines it prints (`listening addr=…` once bound, a summary of what was recorded at exit).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use reprise_dispatcher::CaptureFilters;
use reprise_dispatcher::config::{ByteSize, ListenAddr};
use reprise_record::{DropReason, FileSink, KafkaSink, RecordOptions, Redact, Sample, Sink, UpstreamHttp};
use tokio_util::sync::CancellationToken;

use crate::{EXIT_CANNOT_RUN, EXIT_CONFIG};

/// `reprise record`'s flags.
#[derive(clap::Args)]
pub struct RecordArgs {
    /// Where clients connect: `:8080`, `127.0.0.1:0` (a free port; prints `listening addr=`).
    #[arg(long, env = "REPRISE_RECORD_LISTEN", value_name = "ADDR")]
    listen: ListenAddr,
    /// The service every request is forwarded to: `http://HOST:PORT`.
    #[arg(long, env = "REPRISE_RECORD_UPSTREAM", value_name = "URL", value_parser = upstream)]
    upstream: http::Uri,
    /// The HTTP version requests go up in: `same` as the client's, `1.1` for a service
    /// that knows no HTTP/2 (gRPC then fails), `2` for one that speaks h2c only.
    #[arg(long, env = "REPRISE_RECORD_UPSTREAM_HTTP", value_name = "VERSION", default_value = "same", value_parser = upstream_http)]
    upstream_http: UpstreamHttp,
    /// The json recording. With --rotate-size or --rotate-every, the pattern of its files'
    /// names: `capture.jsonl` gives `capture-20261205T200102Z-000001.jsonl`, …
    #[arg(
        long,
        env = "REPRISE_RECORD_OUT",
        value_name = "PATH",
        required_unless_present = "kafka_topic",
        conflicts_with = "kafka_topic"
    )]
    out: Option<PathBuf>,
    /// Start a new file once this many bytes (of json) are written: `100MB`, `1GiB`.
    #[arg(long, value_name = "SIZE", value_parser = size, requires = "out")]
    rotate_size: Option<ByteSize>,
    /// Start a new file after this long: `1h`, `10m`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "out")]
    rotate_every: Option<Duration>,
    /// Write gzip (`.gz` is added to rotated files' names).
    #[arg(long, requires = "out")]
    gzip: bool,
    /// Send each exchange to this Kafka topic instead of a file, one message each.
    #[arg(long, env = "REPRISE_RECORD_KAFKA_TOPIC", value_name = "TOPIC", requires = "kafka_brokers")]
    kafka_topic: Option<String>,
    /// The brokers of --kafka-topic: `HOST:PORT[,HOST:PORT…]`.
    #[arg(long, env = "REPRISE_RECORD_KAFKA_BROKERS", value_name = "HOSTS", requires = "kafka_topic")]
    kafka_brokers: Option<String>,
    /// Key each message by this header's value, so a session stays in one partition.
    #[arg(long, value_name = "HEADER", value_parser = reprise_record::header_name, requires = "kafka_topic")]
    kafka_key: Option<http::HeaderName>,
    /// A librdkafka property of the producer (`security.protocol=ssl`); repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = property, requires = "kafka_topic")]
    kafka_property: Vec<(String, String)>,
    /// Keep each body up to this size; a longer one keeps its length and hash.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = size)]
    max_body: ByteSize,
    /// Hold at most this much waiting for the file; past it, exchanges are dropped and
    /// counted (`reprise_record_dropped_total{reason="queue_full"}`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = size)]
    queue: ByteSize,
    /// Record this share of exchanges, from 0.0001 to 1.
    #[arg(long, value_name = "RATE", default_value_t = 1.0, value_parser = rate)]
    sample: f64,
    /// Draw the sample by this header's value, so a session is recorded whole or not at all.
    #[arg(long, value_name = "HEADER", value_parser = reprise_record::header_name)]
    sample_key: Option<http::HeaderName>,
    /// Leave out of the recording what this file's `[[filter]]` rules deny (a job file's
    /// syntax; a job file will do). What is left out is forwarded all the same.
    #[arg(long, env = "REPRISE_RECORD_FILTER", value_name = "FILE")]
    filter: Option<PathBuf>,
    /// Record this header's values as a keyed hash (key: REPRISE_REDACT_KEY); repeatable.
    #[arg(long, value_name = "HEADER", value_delimiter = ',', value_parser = reprise_record::header_name)]
    redact: Vec<http::HeaderName>,
    /// Serve h2 and HTTP/1.1 over TLS with this certificate (PEM).
    #[arg(long, env = "REPRISE_RECORD_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "REPRISE_RECORD_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a client may take to send a request's head; slower ones (slowloris) are
    /// closed and counted.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Client connections open at once; more are closed and counted.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// Serve /healthz, /readyz and /metrics here (the `listening` line then has `http=ADDR`).
    #[arg(long, env = "REPRISE_RECORD_HTTP", value_name = "ADDR")]
    http: Option<ListenAddr>,
}

fn upstream(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) if uri.path() == "/" || uri.path().is_empty() => Ok(uri),
        (Some("http"), Some(_)) => Err("give the service's base URL without a path, e.g. http://127.0.0.1:8080".into()),
        (Some("https"), _) => Err(
            "an https upstream is not supported: put reprise record beside the service, in front of its plain HTTP port"
                .into(),
        ),
        _ => Err("must be http://HOST:PORT, e.g. http://127.0.0.1:8080".into()),
    }
}

fn upstream_http(s: &str) -> Result<UpstreamHttp, String> {
    match s {
        "same" => Ok(UpstreamHttp::Same),
        "1.1" => Ok(UpstreamHttp::Http1),
        "2" => Ok(UpstreamHttp::Http2),
        _ => Err(format!("{s:?} is not an HTTP version: write same, 1.1 or 2")),
    }
}

fn property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE, e.g. security.protocol=ssl")),
    }
}

fn size(s: &str) -> Result<ByteSize, String> {
    ByteSize::parse(s)
        .filter(|b| b.0 > 0)
        .ok_or_else(|| format!("{s:?} is not a size: write e.g. 1MiB, 64MB or 65536"))
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0001..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a share from 0.0001 to 1 (0.1 records one exchange in ten)")),
    }
}

impl RecordArgs {
    /// A file, or (clap requires one of them) a Kafka topic.
    fn sink(&mut self) -> Sink {
        match (self.out.take(), self.kafka_topic.take()) {
            (None, Some(topic)) => Sink::Kafka(KafkaSink {
                brokers: self.kafka_brokers.take().unwrap_or_default(),
                topic,
                key: self.kafka_key.take(),
                properties: std::mem::take(&mut self.kafka_property),
            }),
            (path, _) => Sink::File(FileSink {
                path: path.unwrap_or_default(),
                rotate_bytes: self.rotate_size.map(|b| b.0),
                rotate_every: self.rotate_every,
                gzip: self.gzip,
            }),
        }
    }

    fn options(mut self, threads: usize) -> Result<RecordOptions, String> {
        let sink = self.sink();
        let redact = match self.redact.is_empty() {
            true => None,
            false => {
                let key = std::env::var(reprise_record::REDACT_KEY_VAR).unwrap_or_default();
                if key.len() < 16 {
                    return Err(format!(
                        "--redact needs a secret key of 16 characters or more in {}, the same on every proxy whose \
                         recordings are replayed together (e.g. `openssl rand -hex 32`)",
                        reprise_record::REDACT_KEY_VAR
                    ));
                }
                Some(Redact::new(self.redact, key.as_bytes()))
            }
        };
        let filter = match &self.filter {
            None => None,
            Some(path) => {
                let rules = CaptureFilters::load(path).map_err(|e| format!("--filter: {e}"))?;
                Some(Box::new(JobFilters(rules)) as Box<dyn reprise_record::HeadFilter>)
            }
        };
        Ok(RecordOptions {
            filter,
            listen: self.listen.0,
            upstream: self.upstream,
            upstream_http: self.upstream_http,
            sink,
            max_body: usize::try_from(self.max_body.0).unwrap_or(usize::MAX),
            queue_bytes: self.queue.0,
            sample: Sample::new(self.sample, self.sample_key),
            redact,
            tls: self.tls_cert.zip(self.tls_key),
            max_connections: self.max_connections.max(1),
            threads,
            header_timeout: self.header_timeout,
            probes: self.http.map(|a| a.0),
        })
    }
}

/// A job file's `[[filter]]` rules, judged on a request's head.
#[derive(Debug)]
struct JobFilters(CaptureFilters);

impl reprise_record::HeadFilter for JobFilters {
    fn names(&self) -> Vec<String> {
        self.0.names().to_vec()
    }

    fn denies(&self, head: &http::request::Parts) -> Option<usize> {
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = head.headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
        let host = host.or_else(|| head.uri.authority().map(|a| a.as_str()));
        let headers = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        self.0.denies(head.method.as_str(), target, host, headers)
    }
}

/// Runs the proxy until a signal, on `threads` threads (default: one per core); prints
/// what it recorded and dropped.
pub async fn record(args: RecordArgs, threads: Option<u16>, cancel: CancellationToken) -> ExitCode {
    let threads = threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    let opts = match args.options(threads) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let bound = |b: reprise_record::Bound| {
        match b.probes {
            Some(p) => println!("listening addr={} http={p}", b.proxy),
            None => println!("listening addr={}", b.proxy),
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    match reprise_record::run(opts, cancel, bound).await {
        Ok(c) => {
            let dropped: Vec<String> =
                DropReason::ALL.iter().map(|r| format!("{}={}", r.as_str(), c.dropped(*r))).collect();
            eprintln!(
                "recorded {} of {} exchanges ({} filtered, {} sampled out, {} upstream errors); dropped: {}",
                c.recorded.load(Relaxed),
                c.exchanges.load(Relaxed),
                c.filtered(),
                c.sampled_out.load(Relaxed),
                c.upstream_errors.load(Relaxed),
                dropped.join(" ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}
