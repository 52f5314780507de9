//! Faults through real processes: a replayer that freezes (SIGSTOP) mid-job, a second
//! process with a live replayer's id.

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
