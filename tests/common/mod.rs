//! Shared by the end-to-end tests: a capture target that records every request, when it
//! arrived and when it was answered (`capture.rs`), a guard that kills child processes, and
//! helpers to write jobs and recordings.
#![allow(dead_code)]

pub mod browser;
mod capture;
pub mod kafka;
pub mod pki;
pub mod prom;
pub mod s3;

// Not every test binary uses both.
#[allow(unused_imports)]
pub use capture::{Capture, Captured};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_reprise");

/// Where test recordings start, epoch ms (2023-11-14): recorded times before 2000 are
/// malformed (`[analyzer] earliest`).
pub const T0: usize = 1_700_000_000_000;

/// Kills its child when dropped, so a failing test leaves nothing running.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A fresh directory for one test, removed with everything in it when the test ends,
/// whether it passes or fails (the value is dropped as the test unwinds).
pub struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

pub fn temp_dir(name: &str) -> TestDir {
    let dir = tempfile::Builder::new().prefix(&format!("reprise-test-{name}-")).tempdir().expect("temp dir");
    TestDir(dir)
}

/// Writes a job file replaying `recording` against `target` with extra TOML lines.
pub fn write_job(dir: &Path, target: &str, recording: &Path, extra_job: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[job]\ntarget = \"{target}\"\n{extra_job}\n[fetcher]\ntype = \"file\"\n[fetcher.file]\npath = \"{}\"\n{extra}\n",
        recording.display()
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("write job");
    path
}

/// A json recording of `n` GETs of `/g/0`, `/g/1` …, `gap_ms` apart, in `dir/r.jsonl`.
pub fn gets_every(dir: &Path, n: usize, gap_ms: usize) -> PathBuf {
    let lines: Vec<String> =
        (0..n).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/g/{i}"}}"#, T0 + i * gap_ms)).collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// A `[reporter.raw]` section writing one row per request under `dir/raw`, and `[stats]
/// templates = false`, so that the rows name each path as recorded (`GET /k/3`, not
/// `GET /k/{id}`) for tests of order to read.
pub fn raw_sink(dir: &Path) -> String {
    format!("[reporter.raw]\ndir = \"{}\"\n[stats]\ntemplates = false\n", dir.join("raw").display())
}

/// (due instant in Unix µs, endpoint) of every row the raw sink wrote under `dir/raw`, in
/// due order: the schedule the dispatcher asked for and the order it released requests in.
/// Timing and order tests read it instead of arrivals, which a shared machine can shift by
/// tens of milliseconds and swap for requests a few milliseconds apart.
fn raw_by_due(dir: &Path) -> Vec<(i64, String)> {
    let text: String = std::fs::read_dir(dir.join("raw"))
        .expect("raw dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    let mut rows: Vec<(i64, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().expect("due column"), f.get(4).expect("endpoint column").to_string())
        })
        .collect();
    rows.sort();
    rows
}

/// The due instants (Unix µs) of every raw row, sorted.
pub fn raw_dues(dir: &Path) -> Vec<i64> {
    raw_by_due(dir).into_iter().map(|(due, _)| due).collect()
}

/// The endpoint of every raw row, in due order.
pub fn raw_endpoints_by_due(dir: &Path) -> Vec<String> {
    raw_by_due(dir).into_iter().map(|(_, e)| e).collect()
}

/// Runs `reprise ARGS` to its end (in a blocking thread, so the capture target keeps serving).
pub async fn reprise(args: Vec<String>) -> Output {
    reprise_env(args, &[]).await
}

/// [`reprise`] with extra environment variables.
pub async fn reprise_env(args: Vec<String>, env: &[(&str, &str)]) -> Output {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).env("RUST_LOG", "warn").envs(env).output().expect("run reprise")
    })
    .await
    .expect("join")
}

/// `reprise run JOB --report-json DIR/report.json EXTRA…`, which must succeed; the report.
pub async fn run_job(job: &Path, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("report.json");
    let mut a = args(&["run", job.to_str().expect("path"), "--report-json", report.to_str().expect("path")]);
    a.extend(extra.iter().map(|s| s.to_string()));
    let out = reprise(a).await;
    assert!(out.status.success(), "reprise run failed: {}", String::from_utf8_lossy(&out.stderr));
    read_json(&report)
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Starts a daemon and reads the `listening …` line it prints once bound.
pub fn spawn_daemon(args: &[&str]) -> (Guard, String) {
    spawn_daemon_env(args, &[])
}

/// [`spawn_daemon`] with extra environment variables.
pub fn spawn_daemon_env(args: &[&str], env: &[(&str, &str)]) -> (Guard, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn daemon");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("listening line");
    assert!(line.starts_with("listening "), "unexpected first line: {line:?}");
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        print!("{rest}");
    });
    (Guard(child), line.trim().to_owned())
}

/// The value of `key=` in a `listening` line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .expect("field in listening line")
        .to_owned()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report file")).expect("report json")
}

/// The report of a job stopped early: state "stopped", balanced books, fewer than `most`
/// records sent and every one of them `received` by the target. Returns the totals.
pub fn stopped_early(report: &Path, received: usize, most: u64) -> serde_json::Value {
    let mut r = read_json(report);
    assert_eq!(r["state"], "stopped");
    let t = r["totals"].take();
    assert_eq!(t["balanced"], true, "{t}");
    let n = |k: &str| t[k].as_u64().expect(k);
    assert_eq!(n("input"), n("in_range") + n("out_of_range"), "every record read is counted: {t}");
    assert_eq!(n("scheduled"), n("sent") + n("dropped_total"), "{t}");
    let sent = t["sent"].as_u64().expect("sent");
    assert!(sent < most, "stopped early: {sent} sent");
    assert_eq!(sent as usize, received);
    t
}

/// p-th percentile (0..=100) of a list.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i]
}

pub async fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Like [`wait_until`], for a condition that awaits (a query to another server).
pub async fn wait_until_async<F, Fut>(mut f: F, limit: Duration) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A plain HTTP/1.1 request to a daemon's admin port; returns (status, body).
pub async fn http(method: &str, addr: &str, path: &str) -> (u16, String) {
    http_json(method, addr, path, "").await
}

/// Like [`http`], with a JSON body.
pub async fn http_json(method: &str, addr: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    exchange(&mut stream, &request(method, addr, path, body, "")).await
}

/// An HTTP/1.1 request's text, with extra header lines (each ending in CRLF).
pub fn request(method: &str, addr: &str, path: &str, body: &str, headers: &str) -> String {
    let len = body.len();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{headers}Connection: close\r\n\r\n{body}"
    )
}

/// Writes a request on `stream` and reads the response to its end: (status, body).
pub async fn exchange(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    req: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Sends SIGINT to a child, as Ctrl-C or a stop does.
pub fn interrupt(guard: &Guard) {
    let pid = i32::try_from(guard.0.id()).ok().and_then(rustix::process::Pid::from_raw).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
}

/// Waits for a daemon to exit, off the async threads.
pub async fn wait_exit(mut guard: Guard) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || guard.0.wait().expect("wait")).await.expect("join")
}

/// Starts a replayer daemon process.
pub fn spawn_replayer(url: &str, id: &str) -> Guard {
    Guard(
        Command::new(BIN)
            .args(["replayer", "--dispatcher", url, "--id", id])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("replayer"),
    )
}

/// A dispatcher daemon started by a test, with its addresses.
pub struct Daemon {
    pub guard: Guard,
    /// "http://ADDR" for replayers.
    pub grpc_url: String,
    /// "ADDR" of the admin API.
    pub admin: String,
}

/// Starts `reprise dispatcher` for `job` on `grpc` (e.g. "127.0.0.1:0"), writing its report
/// to `report` when given.
pub fn start_dispatcher(job: &Path, grpc: &str, report: Option<&Path>) -> Daemon {
    match report {
        Some(r) => dispatcher_with(job, grpc, &["--report-json", r.to_str().expect("path")]),
        None => dispatcher_with(job, grpc, &[]),
    }
}

/// Starts `reprise dispatcher --serve-forever` for `job` on free ports: its admin API (the
/// report, `/metrics`) stays up after the job, for a test to read.
pub fn serve_dispatcher(job: &Path) -> Daemon {
    dispatcher_with(job, "127.0.0.1:0", &["--serve-forever"])
}

/// `reprise dispatcher` for `job` on `grpc`, its admin API on a free port, with `extra`.
pub fn dispatcher_with(job: &Path, grpc: &str, extra: &[&str]) -> Daemon {
    let mut a =
        vec!["dispatcher", "--config", job.to_str().expect("path"), "--grpc", grpc, "--http", "127.0.0.1:0"];
    a.extend_from_slice(extra);
    let (guard, line) = spawn_daemon(&a);
    Daemon { guard, grpc_url: format!("http://{}", field(&line, "grpc")), admin: field(&line, "http") }
}

/// A job file's text replaying `n` GETs of `/{prefix}/0` …, 5 ms apart, from
/// `dir/{prefix}.jsonl`, once two replayers have subscribed (for a standing dispatcher).
pub fn job_text(dir: &Path, target: &str, prefix: &str, n: usize) -> String {
    let lines: Vec<String> =
        (0..n).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/{prefix}/{i}"}}"#, T0 + i * 5)).collect();
    let recording = dir.join(format!("{prefix}.jsonl"));
    std::fs::write(&recording, lines.join("\n")).expect("write");
    format!(
        "[job]\nid = \"{prefix}\"\ntarget = \"{target}\"\nmin_replayers = 2\n[fetcher.file]\npath = \"{}\"\n",
        recording.display()
    )
}

/// `reprise dispatcher` without `--config` (taking jobs) on free loopback ports, keeping the
/// jobs' reports in `jobs_dir`, with `extra` flags: the guard, the gRPC URL and the admin
/// address.
pub fn standing_dispatcher(jobs_dir: &Path, extra: &[&str]) -> (Guard, String, String) {
    let mut a = vec!["dispatcher", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--jobs-dir"];
    a.push(jobs_dir.to_str().expect("path"));
    a.extend_from_slice(extra);
    let (guard, line) = spawn_daemon(&a);
    (guard, format!("http://{}", field(&line, "grpc")), field(&line, "http"))
}

/// The first `data:` line of the live page's event stream, as JSON.
pub async fn first_event(admin: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(admin).await.expect("connect");
    let req = format!("GET /events HTTP/1.1\r\nHost: {admin}\r\nAccept: text/event-stream\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended before an event");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(line) =
                text.split("data: ").nth(1).and_then(|rest| rest.split_once('\n')).map(|(l, _)| l)
            {
                return serde_json::from_str(line.trim_end()).expect("an event is JSON");
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read).await.expect("an event within 10 s")
}

/// Runs `program` (a Debian package's server) until dropped; returns once it accepts
/// connections on `port`.
pub fn serve(program: &str, package: &str, args: &[&str], port: u16) -> Guard {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} ({e}): install Debian's {package}, as scripts/test does"));
    let guard = Guard(child);
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{program} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// Debian's nginx in `dir` (its config, logs and temporary files), one worker, with `http`
/// inside its `http {}` block; returns once it listens on each of `ports`. Killed when the
/// guard drops.
pub fn nginx(dir: &Path, http: &str, ports: &[u16]) -> Guard {
    let d = dir.display();
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("{t}_temp_path {d}/{t};\n"))
        .collect();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\nhttp {{\n{temp}{http}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = Command::new("/usr/sbin/nginx")
        .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx: scripts/test installs Debian's nginx (apt-get install nginx)");
    let guard = Guard(child);
    let until = Instant::now() + Duration::from_secs(30);
    for &port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(Instant::now() < until, "nginx did not listen on {port}: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    guard
}

/// The grpcio server, logging what each call received to `log`; its address.
pub fn grpc_server(log: &std::path::Path) -> (Guard, String) {
    grpc_build(log, "v1")
}

/// [`grpc_server`] of a build: "v1", or "v2" whose Get answers another stock.
pub fn grpc_build(log: &std::path::Path, build: &str) -> (Guard, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/grpc_items.py");
    let mut child = Command::new("python3")
        .args([script, "0", log.to_str().expect("path"), build])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    BufReader::new(stdout).read_line(&mut line).expect("listening line");
    let port = line.strip_prefix("listening ").map(str::trim).unwrap_or_else(|| {
        panic!("the gRPC server did not start ({line:?}): `pip install grpcio`, as scripts/test does")
    });
    (guard, format!("http://127.0.0.1:{port}"))
}
