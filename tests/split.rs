//! Split mode: one dispatcher daemon and replayer daemons in their own processes give the
//! same result as `run`; a replayer killed mid-job neither hangs the job nor loses records
//! uncounted.

mod common;

use std::time::Duration;

use common::*;

const T0: i64 = 1_714_564_800_000;

fn recording(dir: &std::path::Path, n: usize, gap_ms: i64) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"ts":{},"method":"GET","url":"/split/{}?i={i}","headers":{{"X-Id":"{i}","X-User":"u{}"}}}}"#,
                T0 + i as i64 * gap_ms,
                i % 4,
                i % 5
            )
        })
        .collect();
    let path = dir.join("rec.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_and_two_replayer_processes_replay_like_run() {
    let dir = temp_dir("split");
    let rec = recording(&dir, 80, 5);
    let target = Capture::start().await;
    let job = write_job(
        &dir,
        &target.url(),
        &rec,
        "speed = 4\nmin_replayers = 2",
        "[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"fnv\"\n",
    );
    let report = dir.join("split.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let url = dispatcher.grpc_url.clone();
    let _r1 = spawn_replayer(&url, "one");
    let _r2 = spawn_replayer(&url, "two");
    let status = wait_exit(dispatcher.guard).await;
    assert!(status.success(), "dispatcher exit {status:?}");
    let split = read_json(&report);
    let split_ids = ids(&target.requests());

    let target2 = Capture::start().await;
    let job2 = write_job(
        &dir,
        &target2.url(),
        &rec,
        "speed = 4",
        "[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"fnv\"\n",
    );
    let run_report = dir.join("run.json");
    let out = reprise(args(&[
        "run",
        job2.to_str().expect("p"),
        "--replayers",
        "2",
        "--report-json",
        run_report.to_str().expect("p"),
    ]))
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = read_json(&run_report);

    assert_eq!(split_ids, ids(&target2.requests()), "same requests arrive in both modes");
    assert_eq!(split_ids.len(), 80);
    for key in ["input", "scheduled", "sent", "ok", "failed", "dropped_total"] {
        assert_eq!(split["totals"][key], run["totals"][key], "totals.{key}");
    }
    let sent: Vec<u64> = split["replayers"]
        .as_array()
        .expect("replayers")
        .iter()
        .map(|r| r["sent"].as_u64().expect("n"))
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|&n| n > 0), "both replayers worked: {sent:?}");
}

fn ids(got: &[Captured]) -> Vec<String> {
    let mut v: Vec<String> = got.iter().map(|c| c.path.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_killed_mid_job_is_counted_and_the_job_finishes() {
    let dir = temp_dir("kill");
    let rec = recording(&dir, 120, 25); // 3 s of traffic
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &rec, "speed = 1\nmin_replayers = 2", "");
    let report = dir.join("kill.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let url = dispatcher.grpc_url.clone();
    let _stays = spawn_replayer(&url, "stays");
    let mut doomed = spawn_replayer(&url, "doomed");
    assert!(wait_until(|| target.requests().len() >= 20, Duration::from_secs(10)).await, "replay began");
    doomed.0.kill().expect("kill replayer");
    let status = wait_exit(dispatcher.guard).await;
    assert!(status.success(), "dispatcher exit {status:?}");
    let r = read_json(&report);
    let t = &r["totals"];
    assert_eq!(t["scheduled"], 120);
    assert_eq!(t["balanced"], true, "{t}");
    let lost = t["dropped"]["lost_in_flight"].as_u64().unwrap_or(0);
    assert!(lost > 0, "the killed replayer's records are counted lost: {t}");
    assert!(lost <= 40, "loss bounded by what it held (lead + ack interval): {lost}");
    assert_eq!(t["sent"].as_u64().expect("sent") + lost, 120);
    let doomed = r["replayers"].as_array().expect("replayers").iter().find(|m| m["id"] == "doomed").cloned();
    let doomed = doomed.expect("the killed replayer stays in the report");
    assert_eq!(doomed["state"], "left");
    assert_eq!(doomed["lost_in_flight"].as_u64(), Some(lost), "{doomed}");
    assert!(target.requests().len() as u64 >= t["sent"].as_u64().expect("sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_joining_mid_job_gets_the_job_and_takes_a_share() {
    let dir = temp_dir("join");
    let rec = recording(&dir, 100, 20); // 2 s of traffic
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let report = dir.join("join.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let url = dispatcher.grpc_url.clone();
    let _first = spawn_replayer(&url, "first");
    assert!(wait_until(|| target.requests().len() >= 15, Duration::from_secs(10)).await, "replay began");
    let _late = spawn_replayer(&url, "late");
    let exit = wait_exit(dispatcher.guard).await;
    assert!(exit.success(), "{exit:?}");
    let r = read_json(&report);
    assert_eq!(r["totals"]["sent"], 100);
    assert_eq!(ids(&target.requests()).len(), 100);
    let late = r["replayers"].as_array().expect("replayers").iter().find(|m| m["id"] == "late").cloned();
    let late_sent = late.expect("late replayer in the report")["sent"].as_u64().expect("sent");
    assert!(late_sent > 10, "the late joiner took a share: {late_sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replayer_shows_missing_then_is_dropped_and_its_load_moves() {
    let dir = temp_dir("frozen");
    let rec = recording(&dir, 150, 20); // 3 s of traffic
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &rec, "speed = 1\nmin_replayers = 2", "");
    let report = dir.join("frozen.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _ok = spawn_replayer(&dispatcher.grpc_url, "steady");
    let frozen = spawn_replayer(&dispatcher.grpc_url, "frozen");
    assert!(wait_until(|| target.requests().len() >= 20, Duration::from_secs(10)).await, "replay began");
    let (_, running) = http("GET", &dispatcher.admin, "/status").await;
    let running: serde_json::Value = serde_json::from_str(&running).expect("json");
    let steady = running["replayers"].as_array().expect("r").iter().find(|m| m["id"] == "steady").cloned();
    let steady = steady.expect("steady");
    assert_eq!(steady["state"], "running");
    assert!(steady["credits"].as_u64().expect("credits") > 0);
    // SIGSTOP: its connection stays open but it falls silent, as a hung process does.
    let pid = frozen.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let mut seen_missing = false;
    for _ in 0..60 {
        let (_, body) = http("GET", &dispatcher.admin, "/status").await;
        if body.contains(r#""id":"frozen","state":"missing""#) {
            seen_missing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_missing, "a silent replayer shows as missing before it is dropped");
    let status = wait_exit(dispatcher.guard).await;
    assert!(status.success(), "{status:?}");
    let r = read_json(&report);
    let gone = r["replayers"].as_array().expect("r").iter().find(|m| m["id"] == "frozen").cloned();
    let gone = gone.expect("frozen replayer in the report");
    assert_eq!(gone["state"], "left");
    assert!(gone["left"].as_str().expect("why").contains("heartbeat"), "{gone}");
    assert_eq!(r["totals"]["balanced"], true, "{}", r["totals"]);
    let lost = r["totals"]["dropped"]["lost_in_flight"].as_u64().unwrap_or(0);
    assert_eq!(r["totals"]["sent"].as_u64().expect("sent") + lost, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_replayer_mid_job_exits_3() {
    let dir = temp_dir("lost-all");
    let rec = recording(&dir, 100, 20); // 2 s
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let report = dir.join("lost.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let mut only = spawn_replayer(&dispatcher.grpc_url, "only");
    assert!(wait_until(|| target.requests().len() >= 10, Duration::from_secs(10)).await);
    only.0.kill().expect("kill");
    let status = wait_exit(dispatcher.guard).await;
    assert_eq!(status.code(), Some(3), "the job could not run as recorded");
    let r = read_json(&report);
    assert!(r["totals"]["dropped"]["no_replayer"].as_u64().expect("no_replayer") > 0, "{}", r["totals"]);
    assert_eq!(r["totals"]["balanced"], true);
}
