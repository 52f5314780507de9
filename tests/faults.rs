//! Faults through real processes: a replayer that freezes (SIGSTOP) mid-job, a second
//! process with a live replayer's id, replayers restarted one by one (SIGTERM) mid-job, a
//! dispatcher stopped (SIGTERM) with requests in flight.

mod common;

use std::time::Duration;

use common::*;

fn signal(guard: &Guard, sig: &str) {
    let pid = guard.0.id().to_string();
    let ok = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill").success();
    assert!(ok, "kill {sig} {pid}");
}

/// Two replayers, round-robin; one freezes for 3 s. Once it is missing (1.5 s of silence)
/// its share goes to the other at once, and back when it answers: nothing is dropped or
/// lost, and the report counts the episode. Without the rerouting each would get half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replayers_records_go_to_the_others_until_it_answers() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-frozen");
    let extra = "[proxy]\nheartbeat_timeout = \"20s\"\n";
    let job = write_job(&dir, &target.url(), &gets_every(&dir, 150, 30), "min_replayers = 2", extra);
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _a = spawn_replayer(&d.grpc_url, "a");
    let b = spawn_replayer(&d.grpc_url, "b");
    assert!(wait_until(|| target.requests().len() >= 10, Duration::from_secs(10)).await);
    signal(&b, "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&b, "-CONT");
    assert!(wait_exit(d.guard).await.success());
    let r = read_json(&report);
    let t = &r["totals"];
    assert_eq!((t["sent"].as_u64(), t["dropped_total"].as_u64()), (Some(150), Some(0)), "{t}");
    assert_eq!(t["balanced"], true, "{t}");
    let row = |id: &str| {
        r["replayers"].as_array().expect("rows").iter().find(|m| m["id"] == id).cloned().expect(id)
    };
    let (a, b) = (row("a"), row("b"));
    assert!(b["missing"].as_u64() >= Some(1), "{b}");
    assert!(a["received"].as_u64() >= Some(85), "a took b's share while b was missing: {a}");
    assert_eq!(a["received"].as_u64().unwrap_or(0) + b["received"].as_u64().unwrap_or(0), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replayer_with_a_live_id_cannot_take_its_place() {
    let target = Capture::start().await;
    let dir = temp_dir("trust-same-id");
    let job = write_job(&dir, &target.url(), &gets_every(&dir, 40, 25), "", "");
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _first = spawn_replayer(&d.grpc_url, "same");
    assert!(wait_until(|| !target.requests().is_empty(), Duration::from_secs(10)).await);
    let _second = spawn_replayer(&d.grpc_url, "same");
    assert!(wait_exit(d.guard).await.success());
    assert_eq!(target.requests().len(), 40);
    let r = read_json(&report);
    let rows: Vec<&serde_json::Value> =
        r["replayers"].as_array().expect("rows").iter().filter(|m| m["id"] == "same").collect();
    assert_eq!(rows.len(), 1, "one subscription held the id throughout: {}", r["replayers"]);
    assert_eq!((rows[0]["received"].as_u64(), rows[0]["lost_in_flight"].as_u64()), (Some(40), Some(0)));
}

/// `n` GETs of `/u/0` … 20 ms apart, keyed by `X-User` (8 users), each answered after
/// `delay_ms` (so requests are in flight whenever a signal comes).
fn keyed_gets(dir: &std::path::Path, n: usize, delay_ms: impl Fn(usize) -> u64) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"ts":{},"method":"GET","url":"/u/{i}","headers":{{"X-User":"user-{}","X-Delay-Ms":"{}"}}}}"#,
                T0 + i * 20,
                i % 8,
                delay_ms(i)
            )
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// A rolling restart: of two replayers, each in turn gets SIGTERM mid-job and a new one
/// takes its place. A leaving replayer sends what it holds (records ahead of their instant,
/// requests in flight), reports it and exits 0; its keys go to the others at once. Every
/// record reaches the target exactly once, nothing is lost or dropped, the books balance.
/// Before graceful leave, each SIGTERM counted what the replayer held `lost_in_flight`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayers_restarted_one_by_one_lose_nothing() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-rolling");
    let rec = keyed_gets(&dir, 250, |_| 150);
    let extra = "[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"consistent\"\n";
    let job = write_job(&dir, &target.url(), &rec, "min_replayers = 2", extra);
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let a = spawn_replayer(&d.grpc_url, "a");
    let b = spawn_replayer(&d.grpc_url, "b");
    assert!(wait_until(|| target.requests().len() >= 40, Duration::from_secs(10)).await);
    signal(&a, "-TERM");
    let _a2 = spawn_replayer(&d.grpc_url, "a2");
    let a_exit = wait_exit(a).await;
    assert!(wait_until(|| target.requests().len() >= 130, Duration::from_secs(10)).await);
    signal(&b, "-TERM");
    let _b2 = spawn_replayer(&d.grpc_url, "b2");
    let b_exit = wait_exit(b).await;
    assert!(wait_exit(d.guard).await.success());
    assert!(a_exit.success() && b_exit.success(), "a leaving replayer exits 0: {a_exit:?} {b_exit:?}");
    let r = read_json(&report);
    let t = &r["totals"];
    assert_eq!(t["balanced"], true, "{t}");
    assert_eq!((t["sent"].as_u64(), t["dropped_total"].as_u64()), (Some(250), Some(0)), "{t}");
    let mut paths: Vec<String> = target.requests().into_iter().map(|c| c.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!((target.requests().len(), paths.len()), (250, 250), "each record exactly once");
    let rows = r["replayers"].as_array().expect("rows");
    for id in ["a", "b"] {
        let row = rows.iter().find(|m| m["id"] == id).expect(id);
        assert_eq!(row["state"], "left", "{row}");
        assert_eq!(row["lost_in_flight"], 0, "{row}");
        assert!(row["received"].as_u64() > Some(0), "{row}");
        assert_eq!(row["sent"], row["received"], "it sent all it held before leaving: {row}");
    }
}

/// SIGTERM to a dispatcher with requests in flight at a target that answers every other one
/// only after 10 s: the job stops, its replayers cut what is still unanswered after their
/// grace and report it, and the dispatcher writes the report and exits 4 (stopped). A request
/// that reached the target counts as sent, the unanswered ones with the error "cancelled";
/// nothing counts as lost (before, all it held was `lost_in_flight` and `sent` was 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_stopped_with_requests_in_flight_counts_them_sent_and_exits_4() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-sigterm");
    let rec = keyed_gets(&dir, 300, |i| if i % 2 == 1 { 10_000 } else { 0 });
    let job = write_job(&dir, &target.url(), &rec, "", "[replayer]\ntimeout = \"30s\"\n");
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _r = spawn_replayer(&d.grpc_url, "r");
    assert!(wait_until(|| target.requests().len() >= 40, Duration::from_secs(10)).await);
    signal(&d.guard, "-TERM");
    let exit = wait_exit(d.guard).await;
    assert_eq!(exit.code(), Some(4), "a stopped job has its own exit code");
    let arrived = target.requests();
    let slow = arrived.iter().filter(|c| c.header("x-delay-ms") == Some(b"10000")).count() as u64;
    let t = stopped_early(&report, arrived.len(), 300);
    assert_eq!(t["dropped"]["lost_in_flight"].as_u64().unwrap_or(0), 0, "{t}");
    let r = read_json(&report);
    assert_eq!(r["total"]["errors"]["cancelled"].as_u64(), Some(slow), "{}", r["total"]);
    assert_eq!(r["total"]["ok"].as_u64(), Some(arrived.len() as u64 - slow), "{}", r["total"]);
}

/// The replayer's CPU time so far, in clock ticks (utime + stime from /proc).
fn cpu_ticks(guard: &Guard) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", guard.0.id())).expect("stat");
    // Fields after the command name (which may hold spaces): state is the 3rd field.
    let rest = stat.rsplit_once(')').expect("comm").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A replayer SIGKILLed mid-job: its stream closes with its process, so the dispatcher
/// sees it gone at once (well within the 3 s heartbeat timeout), moves its records to the
/// other, and counts what it held `lost_in_flight`: at most the credit window, the same
/// figure in its row and in the totals, and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_killed_mid_job_loses_at_most_its_window_and_says_so() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-sigkill");
    let rec = keyed_gets(&dir, 200, |_| 300);
    let extra = "[proxy]\ncredit_window = 16\nheartbeat_timeout = \"3s\"\n";
    let job = write_job(&dir, &target.url(), &rec, "min_replayers = 2", extra);
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _a = spawn_replayer(&d.grpc_url, "a");
    let b = spawn_replayer(&d.grpc_url, "b");
    assert!(wait_until(|| target.requests().len() >= 40, Duration::from_secs(10)).await);
    signal(&b, "-KILL");
    let killed = std::time::Instant::now();
    let mut gone = false;
    while !gone && killed.elapsed() < Duration::from_secs(3) {
        let (_, body) = http("GET", &d.admin, "/status").await;
        let s: serde_json::Value = serde_json::from_str(&body).expect("status json");
        gone =
            s["replayers"].as_array().expect("rows").iter().any(|m| m["id"] == "b" && m["state"] == "left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a killed replayer is seen gone within the heartbeat timeout");
    assert!(wait_exit(d.guard).await.success());
    let r = read_json(&report);
    let t = &r["totals"];
    assert_eq!(t["balanced"], true, "{t}");
    let lost = t["dropped"]["lost_in_flight"].as_u64().unwrap_or(0);
    let row = r["replayers"].as_array().expect("rows").iter().find(|m| m["id"] == "b").cloned().expect("b");
    assert_eq!(row["lost_in_flight"].as_u64(), Some(lost), "{row}");
    assert!(lost <= 16, "bounded by the credit window: {lost}");
    assert_eq!(t["sent"].as_u64().expect("sent") + lost, 200, "the rest went to a: {t}");
}

/// A dispatcher killed (SIGKILL) mid-job and started again on the same port: its replayer
/// waits with backoff (a few tenths of a CPU second over the outage, not a busy loop),
/// subscribes to the new one by itself and runs its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dispatcher_gets_its_replayers_back_without_busy_loops() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-restart");
    let grpc = format!("127.0.0.1:{}", free_port());
    let first = write_job(&dir, &target.url(), &gets_every(&dir, 300, 20), "", "");
    let d1 = start_dispatcher(&first, &grpc, None);
    let r = spawn_replayer(&d1.grpc_url, "r");
    assert!(wait_until(|| target.requests().len() >= 20, Duration::from_secs(10)).await);
    signal(&d1.guard, "-KILL");
    let _ = wait_exit(d1.guard).await;
    let before = cpu_ticks(&r);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spent = cpu_ticks(&r) - before;
    assert!(spent < 50, "the replayer waited, not spun: {spent} ticks over 3 s");
    let rec2 = dir.join("second.jsonl");
    let lines: Vec<String> =
        (0..20).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/second/{i}"}}"#, T0 + i * 10)).collect();
    std::fs::write(&rec2, lines.join("\n")).expect("write");
    let second = dir.join("second.toml");
    std::fs::write(
        &second,
        format!("[job]\ntarget = \"{}\"\n[fetcher.file]\npath = \"{}\"\n", target.url(), rec2.display()),
    )
    .expect("write job");
    let report = dir.join("report.json");
    let d2 = start_dispatcher(&second, &grpc, Some(&report));
    let exit = tokio::time::timeout(Duration::from_secs(30), wait_exit(d2.guard)).await;
    assert!(exit.expect("the second job ends").success());
    let again = target.requests().iter().filter(|c| c.path.starts_with("/second/")).count();
    assert_eq!(again, 20, "the replayer came back by itself and ran the new job");
    assert_eq!(read_json(&report)["replayers"][0]["id"], "r");
}

/// A target that accepts connections, reads, and never answers: every request times out
/// (counted), the job ends, and the process stays small (the credit window bounds what
/// waits, whatever the target does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_answers_times_out_every_request_and_the_job_ends() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = hole.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = hole.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut conn, &mut sink).await;
            });
        }
    });
    let dir = temp_dir("faults-silent-target");
    let job = write_job(
        &dir,
        &format!("http://{addr}"),
        &gets_every(&dir, 600, 0),
        "speed = \"max\"",
        "[replayer]\nconcurrency = 32\ntimeout = \"100ms\"\n",
    );
    let r = tokio::time::timeout(Duration::from_secs(60), run_job(&job, &dir, &["--replayers", "1"]))
        .await
        .expect("the job ends");
    let t = &r["total"];
    assert_eq!((t["errors"]["timeout"].as_u64(), t["ok"].as_u64()), (Some(600), Some(0)), "{t}");
    assert_eq!(r["totals"]["balanced"], true, "{}", r["totals"]);
    assert!(
        accepted.load(std::sync::atomic::Ordering::Relaxed) >= 600 / 32,
        "timed-out connections are replaced"
    );
    let rss = r["peak_rss_bytes"].as_u64().expect("peak rss");
    assert!(rss < 200 << 20, "memory stays bounded: {rss} bytes");
}

/// Raw results on a disk that refuses writes past 64 KiB (a file-size limit on the process,
/// its SIGXFSZ ignored, as a full disk refuses them): rows are dropped and counted, the
/// replay is whole and the job exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_raw_results_drops_rows_not_the_replay() {
    let target = Capture::start().await;
    let dir = temp_dir("faults-full-disk");
    // One endpoint, so the report itself stays well under the limit.
    let rec = dir.join("same.jsonl");
    let line = format!(r#"{{"ts":{T0},"method":"GET","url":"/same"}}"#);
    std::fs::write(&rec, vec![line; 2000].join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", &raw_sink(&dir));
    let report = dir.join("report.json");
    let (job, report_path) = (job.clone(), report.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; exec prlimit --fsize=65536 -- \"$@\"", "sh", BIN, "run"])
            .arg(&job)
            .arg("--report-json")
            .arg(&report_path)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run reprise under a file-size limit")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot write raw results"), "the refused writes are said: {stderr}");
    assert_eq!(target.requests().len(), 2000, "the replay is whole");
    let r = read_json(&report);
    assert_eq!(r["totals"]["balanced"], true, "{}", r["totals"]);
    let raw =
        r["sinks"].as_array().expect("sinks").iter().find(|s| s["name"] == "raw").cloned().expect("raw");
    let (written, dropped) = (raw["written"].as_u64().expect("w"), raw["dropped"].as_u64().expect("d"));
    assert!(dropped > 0 && written + dropped == 2000, "{raw}");
    let on_disk: usize = std::fs::read_dir(dir.join("raw"))
        .expect("raw dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read").lines().count())
        .sum();
    assert!(on_disk as u64 >= written, "rows counted written are on disk: {on_disk} < {written}");
}
