//! The spine end to end: `reprise run` replays a recording against a capture target.
//! Asserts exact copies with identical bytes, timing at speed 1 and 2, begin/end, order per
//! hash key, deterministic sampling, the report's accounting, and an interrupted run's.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::*;
use serde_json::json;

const T0: i64 = 1_714_564_800_000;

/// Writes `n` json records `offset_ms(i)` apart in recorded time; record i carries `x-id: i`.
fn recording(dir: &Path, n: usize, offset_ms: impl Fn(usize) -> i64) -> PathBuf {
    let mut out = String::new();
    for i in 0..n {
        let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][i % 5];
        let mut rec = json!({
            "ts": T0 + offset_ms(i),
            "method": method,
            "url": format!("/items/{i}?page={}&q=a%20b", i % 3),
            "headers": {"X-Id": i.to_string(), "X-User": format!("u{}", i % 6), "Cookie": ["a=1", format!("b={i}")]},
        });
        if i % 4 == 1 {
            rec["body"] = json!(format!("{{\"n\":{i},\"text\":\"héllo\"}}"));
        }
        if i % 4 == 2 {
            let bytes: Vec<u8> = (0..=255u8).chain([0, i as u8]).collect();
            rec["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        if i % 10 == 9 {
            rec["headers"]["X-Status"] = json!("404");
        }
        out.push_str(&rec.to_string());
        out.push('\n');
    }
    let path = dir.join("recording.jsonl");
    std::fs::write(&path, out).expect("recording");
    path
}

fn id_of(c: &Captured) -> usize {
    std::str::from_utf8(c.header("x-id").expect("x-id")).expect("utf8").parse().expect("number")
}

/// The threads of process `pid` as (name, nice), from /proc.
#[cfg(target_os = "linux")]
fn threads_of(pid: u32) -> Vec<(String, i64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?.trim().to_owned();
            let stat = std::fs::read_to_string(t.join("stat")).ok()?;
            // After the name's closing parenthesis come fields 3 onwards; nice is field 19.
            let nice = stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect()
}

/// By default each replayer of `run` has a thread of its own at the process's priority and
/// the dispatcher's threads a lower one; `--threads` puts everything on shared workers.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_gives_each_replayer_a_thread_and_the_dispatcher_a_lower_priority() {
    let target = Capture::start().await;
    let dir = temp_dir("layout");
    // 20 records over 1.9 s of recorded time at speed 1: long enough to look at the threads.
    let rec = recording(&dir, 20, |i| i as i64 * 100);
    let job = write_job(&dir, &target.url(), &rec, "", "");
    for (extra, own) in [(&[][..], true), (&["--threads", "1"][..], false)] {
        let before = target.requests().len();
        let report = dir.join("layout.json");
        let mut run = Guard(
            std::process::Command::new(BIN)
                .args(["run", job.to_str().expect("path"), "--replayers", "2"])
                .args(["--report-json", report.to_str().expect("path")])
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn reprise run"),
        );
        // Once requests arrive, both replayers run (the job starts with both).
        let started = std::time::Instant::now();
        while target.requests().len() == before && started.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let threads = threads_of(run.0.id());
        let status = tokio::task::spawn_blocking(move || run.0.wait()).await.expect("join").expect("wait");
        assert!(status.success(), "reprise run {extra:?} failed");
        assert_eq!(target.requests().len() - before, 20, "every record sent ({extra:?})");
        let replayers: Vec<&(String, i64)> =
            threads.iter().filter(|(n, _)| n.starts_with("replayer-")).collect();
        if own {
            for name in ["replayer-1", "replayer-2"] {
                assert!(replayers.iter().any(|(n, _)| n == name), "{name} has a thread: {threads:?}");
            }
            assert!(
                replayers.iter().all(|(_, nice)| *nice == 0),
                "replayers at the usual priority: {threads:?}"
            );
            assert!(
                threads.iter().any(|(n, nice)| n == "tokio-rt-worker" && *nice == 10),
                "the dispatcher's workers at nice 10: {threads:?}"
            );
        } else {
            assert!(replayers.is_empty(), "--threads: replayers share the workers: {threads:?}");
            assert!(
                threads.iter().all(|(_, nice)| *nice == 0),
                "--threads: no priority lowered: {threads:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_rate_times_with_identical_bytes() {
    let target = Capture::start().await;
    let dir = temp_dir("exact");
    let rec = recording(&dir, 30, |i| i as i64 * 7);
    let job = write_job(&dir, &target.url(), &rec, "rate = 2.0\nspeed = \"max\"", "");
    // One runtime thread for the dispatch loop and both replayers (`--threads`, as a target
    // sharing a small machine asks for): nothing may wait on a second one.
    let report = run_job(&job, &dir, &["--replayers", "2", "--threads", "1"]).await;
    assert_eq!(report["runtime_threads"], 1, "--threads sets the runtime's worker threads");

    let got = target.requests();
    assert_eq!(got.len(), 60, "30 records × rate 2");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&rec)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let mut per_id: BTreeMap<usize, usize> = BTreeMap::new();
    for c in &got {
        let i = id_of(c);
        *per_id.entry(i).or_default() += 1;
        let want = &lines[i];
        assert_eq!(c.method, want["method"].as_str().expect("method"));
        assert_eq!(c.path, want["url"].as_str().expect("url"));
        let cookies: Vec<&[u8]> =
            c.headers.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_slice()).collect();
        assert_eq!(
            cookies,
            vec![b"a=1".as_slice(), format!("b={i}").as_bytes()],
            "repeated headers in order"
        );
        assert_eq!(c.header("x-user"), Some(format!("u{}", i % 6).as_bytes()));
        let body: Vec<u8> = if let Some(b) = want["body_base64"].as_str() {
            base64::engine::general_purpose::STANDARD.decode(b).expect("b64")
        } else {
            want["body"].as_str().unwrap_or("").as_bytes().to_vec()
        };
        assert_eq!(c.body, body, "body of record {i}");
    }
    assert!(per_id.values().all(|&n| n == 2), "each record exactly twice: {per_id:?}");

    let t = &report["totals"];
    assert_eq!(t["input"], 30);
    assert_eq!(t["scheduled"], 60);
    assert_eq!(t["sent"], 60);
    assert_eq!(t["failed"], 6, "x-status 404 on records 9, 19, 29 (×2)");
    assert_eq!(t["ok"], 54);
    assert_eq!(t["balanced"], true);
    assert_eq!(report["total"]["status"]["404"], 6);
}

/// `--dry-run` does all but the HTTP call: every copy is received, timed and counted, the
/// target sees nothing, and the raw rows still carry each copy's due instant in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_every_record_and_sends_none() {
    let target = Capture::start().await;
    let dir = temp_dir("dry");
    let rec = recording(&dir, 30, |i| i as i64 * 5);
    let job = write_job(&dir, &target.url(), &rec, "rate = 2.0\nspeed = 4.0", &raw_sink(&dir));
    let report = run_job(&job, &dir, &["--replayers", "2", "--dry-run"]).await;

    assert!(target.requests().is_empty(), "a dry run sends nothing");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(report["runtime_threads"], cores, "one runtime thread per core by default");
    let t = &report["totals"];
    assert_eq!((t["input"].as_u64(), t["scheduled"].as_u64()), (Some(30), Some(60)), "{t}");
    assert_eq!(
        (t["sent"].as_u64(), t["ok"].as_u64(), t["failed"].as_u64()),
        (Some(60), Some(60), Some(0)),
        "{t}"
    );
    assert_eq!(t["balanced"], true);
    let due = raw_dues(&dir);
    assert_eq!(due.len(), 60, "a raw row per copy");
    // 145 ms of recording at speed 4: the last copy is due ~36 ms after the first.
    let span_us = due.iter().max().expect("rows") - due.iter().min().expect("rows");
    assert!((30_000..=45_000).contains(&span_us), "dues span {span_us} µs");
}

/// The dispatcher's due instants under `dir/raw` against the recorded offsets divided by
/// `speed`, both from the first, µs: the largest difference.
fn schedule_error_us(dir: &Path, recorded_ms: impl Fn(usize) -> i64, n: usize, speed: f64) -> i64 {
    let due = raw_dues(dir);
    assert_eq!(due.len(), n, "a raw row per request");
    let mut want: Vec<i64> = (0..n).map(|i| recorded_ms(i) * 1000).collect();
    want.sort();
    due.iter()
        .zip(&want)
        .map(|(d, w)| ((d - due[0]) - ((w - want[0]) as f64 / speed) as i64).abs())
        .max()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_one_keeps_the_recorded_timing() {
    let target = Capture::start().await;
    let dir = temp_dir("timing");
    let offset = |i: usize| (i as i64 * 47) + (i as i64 % 3) * 11;
    let rec = recording(&dir, 40, offset);
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", &raw_sink(&dir));
    run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 40);
    let err = schedule_error_us(&dir, offset, 40, 1.0);
    assert!(err <= 1, "every request due at its recorded offset: off by {err} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_two_halves_the_span() {
    let target = Capture::start().await;
    let dir = temp_dir("speed2");
    let rec = recording(&dir, 21, |i| i as i64 * 100);
    let job = write_job(&dir, &target.url(), &rec, "speed = 2.0", &raw_sink(&dir));
    run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 21);
    let due = raw_dues(&dir);
    assert_eq!(due[due.len() - 1] - due[0], 1_000_000, "2 s recorded span due over 1 s at speed 2");
    let err = schedule_error_us(&dir, |i| i as i64 * 100, 21, 2.0);
    assert!(err <= 1, "every request due at its offset / 2: off by {err} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_and_end_bound_the_replay() {
    let target = Capture::start().await;
    let dir = temp_dir("range");
    let rec = recording(&dir, 20, |i| i as i64 * 100);
    let range = format!("speed = \"max\"\nbegin = {}\nend = \"{}\"", T0 + 500, "2024-05-01T12:00:01.500Z");
    let job = write_job(&dir, &target.url(), &rec, &range, "");
    let report = run_job(&job, &dir, &[]).await;
    let mut ids: Vec<usize> = target.requests().iter().map(id_of).collect();
    ids.sort();
    assert_eq!(ids, (5..=15).collect::<Vec<_>>(), "records 500 ms..=1500 ms");
    assert_eq!(report["totals"]["out_of_range"], 9, "5 before begin, 4 after end");
    assert_eq!(report["totals"]["in_range"], 11);
    assert_eq!(report["totals"]["input"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_hash_key_across_replayers() {
    let target = Capture::start().await;
    let dir = temp_dir("order");
    let rec = recording(&dir, 60, |i| i as i64 * 20);
    let extra = "[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"consistent\"\n";
    let job = write_job(&dir, &target.url(), &rec, "speed = 2.0", extra);
    let report = run_job(&job, &dir, &["--replayers", "3"]).await;
    let mut got = target.requests();
    got.sort_by_key(|c| c.at);
    let mut per_user: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    for c in &got {
        per_user.entry(c.header("x-user").expect("user").to_vec()).or_default().push(id_of(c));
    }
    assert_eq!(per_user.len(), 6);
    for (user, ids) in &per_user {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, &sorted, "order for user {}", String::from_utf8_lossy(user));
    }
    // Each user stuck to one replayer: 6 keys over 3 replayers, all of them used once joined.
    let replayers = report["replayers"].as_array().expect("replayers");
    let busy = replayers.iter().filter(|r| r["sent"].as_u64() > Some(0)).count();
    assert!(busy >= 2, "keys spread over replayers: {replayers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_rates_choose_the_same_records_every_run() {
    let dir = temp_dir("sample");
    let rec = recording(&dir, 100, |i| i as i64);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let target = Capture::start().await;
        let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"\nrate = 0.3\nseed = 7", "");
        let report = run_job(&job, &dir, &[]).await;
        let mut ids: Vec<usize> = target.requests().iter().map(id_of).collect();
        ids.sort();
        assert_eq!(report["totals"]["scheduled"].as_u64(), Some(ids.len() as u64));
        runs.push(ids);
    }
    assert_eq!(runs[0], runs[1], "same seed, same sample");
    assert!((15..=45).contains(&runs[0].len()), "about 30 % of 100: {}", runs[0].len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_host_is_sent_only_with_preserve_host() {
    let dir = temp_dir("host");
    let rec = dir.join("r.jsonl");
    std::fs::write(&rec, r#"{"ts":1700000000001,"method":"GET","url":"http://shop.example:8443/p?q=1"}"#)
        .expect("write");
    for (preserve, want) in [(false, None), (true, Some("shop.example:8443"))] {
        let target = Capture::start().await;
        let extra = format!("[replayer]\npreserve_host = {preserve}\n");
        let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", &extra);
        run_job(&job, &dir, &[]).await;
        let got = target.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "/p?q=1");
        let host = String::from_utf8_lossy(got[0].header("host").expect("host")).into_owned();
        match want {
            Some(h) => assert_eq!(host, h),
            None => assert_eq!(host, target.addr.to_string()),
        }
    }
}

/// A record that cannot be sent as it was recorded (a header value with CR, LF or NUL, which
/// would split the request or be dropped) is counted malformed at the dispatcher, with its
/// reason and the header's name, never its value; the job goes on with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_sent_as_recorded_is_malformed_and_the_rest_goes_on() {
    let dir = temp_dir("unsendable");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":1700000000001,"method":"GET","url":"/bad","headers":{"Host":"bad\u0000host"}}"#,
        r#"{"ts":1700000000002,"method":"GET","url":"/split","headers":{"X-Token":"abc\r\nX-Injected: 1"}}"#,
        r#"{"ts":1700000000003,"method":"GET","url":"/good","headers":{"Host":"good.example"}}"#,
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", "[replayer]\npreserve_host = true\n");
    let report_path = dir.join("report.json");
    let out = reprise(args(&[
        "run",
        job.to_str().expect("path"),
        "--report-json",
        report_path.to_str().expect("path"),
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got = target.requests();
    assert_eq!(got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), vec!["/good"]);
    let report = read_json(&report_path);
    let totals = &report["totals"];
    assert_eq!((totals["sent"].as_u64(), totals["ok"].as_u64()), (Some(1), Some(1)), "{totals}");
    assert_eq!(totals["malformed"]["bad_headers"].as_u64(), Some(2), "{totals}");
    assert_eq!(totals["input"].as_u64(), Some(1), "{totals}");
    assert!(
        stderr.contains("bad_headers") && stderr.contains("`Host`") && stderr.contains("`X-Token`"),
        "the reason and the header are logged: {stderr}"
    );
}

/// Interrupted (SIGINT, as by Ctrl-C), `reprise run` stops dispatching, lets the requests in
/// flight finish and still writes its report with balanced books: what was sent is what the
/// target got, and the rest of what was scheduled counts as stopped. Its replayers get the
/// job's end and report their last statistics through the in-process service, as a fleet's
/// do over gRPC (`admin.rs` stops a daemon's job the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_drains_and_balances_its_books() {
    let dir = temp_dir("interrupted");
    let target = Capture::start().await;
    let rec = recording(&dir, 200, |i| i as i64 * 50); // 10 s at speed 1
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let report = dir.join("report.json");
    let child = std::process::Command::new(BIN)
        .args(["run", job.to_str().expect("path"), "--replayers", "2", "--report-json"])
        .arg(&report)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn reprise run");
    let run = Guard(child);
    assert!(wait_until(|| target.requests().len() >= 10, std::time::Duration::from_secs(10)).await);
    let pid = run.0.id().to_string();
    // Its replayers are in the process: it listens on the admin port only, not on gRPC.
    assert_eq!(listening_ports(&pid).len(), 1, "one listening port: {:?}", listening_ports(&pid));
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let exit = wait_exit(run).await;
    assert_eq!(exit.code(), Some(4), "an interrupted job exits 4: {exit:?}");
    let t = stopped_early(&report, target.requests().len(), 100);
    let sent = t["sent"].as_u64().expect("sent");
    assert_eq!(t["ok"].as_u64().expect("ok") + t["failed"].as_u64().expect("failed"), sent);
    let stopped = t["dropped"]["stopped"].as_u64().unwrap_or_default();
    assert_eq!(t["scheduled"].as_u64().expect("scheduled"), sent + stopped, "{t}");
}

/// The TCP ports process `pid` listens on, from /proc: the socket inodes among its file
/// descriptors that /proc/net/tcp{,6} list in state LISTEN (0A).
fn listening_ports(pid: &str) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

/// The built-in echo target logs each arrival (what `scripts/bench` reads the schedule error
/// at the target from), and the report's start lines the replay up with it: no request
/// arrives before the start plus its recorded offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_target_logs_arrivals_that_line_up_with_the_reported_start() {
    let dir = temp_dir("arrivals");
    let log = dir.join("arrivals.tsv");
    let (mut echo, line) = spawn_daemon(&[
        "echo-server",
        "--listen",
        "127.0.0.1:0",
        "--log-arrivals",
        log.to_str().expect("path"),
    ]);
    let addr = line.trim().trim_start_matches("listening addr=").to_owned();
    let rec = recording(&dir, 8, |i| i as i64 * 60);
    let job = write_job(&dir, &format!("http://{addr}"), &rec, "speed = 1", "");
    let report = run_job(&job, &dir, &[]).await;
    let start = report["started_unix_us"].as_i64().expect("started_unix_us");
    assert!(start > 1_700_000_000_000_000, "{start}");
    // SIGTERM: the echo target flushes its log and exits.
    let pid = echo.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert!(echo.0.wait().expect("wait").success());
    let text = std::fs::read_to_string(&log).expect("arrivals");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 8, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.len(), 3, "{l:?}");
        let id: i64 =
            l[2].trim_start_matches("/items/").split('?').next().and_then(|n| n.parse().ok()).expect("id");
        let arrived: i64 = l[0].parse().expect("µs");
        // 1 ms for the two clocks' readings (wall clock here, monotonic in the replayer).
        assert!(
            arrived >= start + id * 60_000 - 1_000,
            "line {i}: {l:?} arrived before its instant (start {start})"
        );
    }
}
