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
