//! The dispatcher daemon's admin API and lifecycle: /healthz, /status, POST /job/start for a
//! job still waiting for replayers, POST /job/stop mid-job, and a replayer that starts
//! before its dispatcher and connects once it is there.

mod common;

use std::time::Duration;

use common::*;

fn recording(dir: &std::path::Path, n: usize, gap_ms: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/a/{i}"}}"#, T0 + 1_000 + i * gap_ms))
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

async fn status(http_addr: &str) -> serde_json::Value {
    let (code, body) = http("GET", http_addr, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_shows_in_status_and_starts_on_request() {
    let target = Capture::start().await;
    let dir = temp_dir("admin-start");
    let rec = recording(&dir, 30, 10);
    let job = write_job(&dir, &target.url(), &rec, "speed = 5\nmin_replayers = 2", "");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", None);
    let admin = dispatcher.admin.clone();
    assert_eq!(http("GET", &admin, "/healthz").await, (200, "ok\n".to_owned()));
    let _r = spawn_replayer(&dispatcher.grpc_url, "only");

    let mut waiting = serde_json::Value::Null;
    for _ in 0..100 {
        waiting = status(&admin).await;
        if waiting["replayers"].as_array().is_some_and(|r| r.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waiting["state"], "waiting", "one of two replayers: {waiting}");
    assert_eq!(waiting["replayers"][0]["id"], "only");
    assert_eq!(waiting["replayers"][0]["state"], "ready", "subscribed, no job running yet");
    assert_eq!(waiting["replayers"][0]["credits"], 20000);
    assert!(target.requests().is_empty());

    let (code, _) = http("POST", &admin, "/job/start").await;
    assert_eq!(code, 202);
    let exit = wait_exit(dispatcher.guard).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(target.requests().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_mid_way_ends_with_balanced_books() {
    let target = Capture::start().await;
    let dir = temp_dir("admin-stop");
    let rec = recording(&dir, 200, 50); // 10 s at speed 1
    let report = dir.join("report.json");
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _r = spawn_replayer(&dispatcher.grpc_url, "r1");
    assert!(wait_until(|| target.requests().len() >= 10, Duration::from_secs(10)).await);
    let running = status(&dispatcher.admin).await;
    assert_eq!(running["state"], "running");
    let (code, _) = http("POST", &dispatcher.admin, "/job/stop").await;
    assert_eq!(code, 202);
    let exit = wait_exit(dispatcher.guard).await;
    assert_eq!(exit.code(), Some(4), "a stopped job exits 4: {exit:?}");
    stopped_early(&report, target.requests().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_waits_for_its_dispatcher_and_connects_when_it_comes() {
    let target = Capture::start().await;
    let dir = temp_dir("admin-reconnect");
    let rec = recording(&dir, 20, 10);
    let job = write_job(&dir, &target.url(), &rec, "speed = 5", "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let _r = spawn_replayer(&format!("http://127.0.0.1:{port}"), "early");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let grpc = format!("127.0.0.1:{port}");
    let dispatcher = start_dispatcher(&job, &grpc, None);
    let exit = wait_exit(dispatcher.guard).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(target.requests().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_outlives_its_dispatcher_and_serves_the_next_one() {
    let dir = temp_dir("admin-restart");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let grpc = format!("127.0.0.1:{port}");
    let first_target = Capture::start().await;
    let long = recording(&dir, 200, 50); // 10 s: it will not finish
    let job = write_job(&dir, &first_target.url(), &long, "speed = 1", "");
    let first = start_dispatcher(&job, &grpc, None);
    let _replayer = spawn_replayer(&first.grpc_url, "survivor");
    assert!(wait_until(|| first_target.requests().len() >= 5, Duration::from_secs(10)).await);
    drop(first); // killed mid-job

    let second_target = Capture::start().await;
    let short = dir.join("short.jsonl");
    let lines: Vec<String> =
        (0..10).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/b/{i}"}}"#, T0 + i * 10)).collect();
    std::fs::write(&short, lines.join("\n")).expect("write");
    let job2 = write_job(&dir, &second_target.url(), &short, "speed = 2", "");
    let second = start_dispatcher(&job2, &grpc, None);
    let exit = wait_exit(second.guard).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(second_target.requests().len(), 10, "the same replayer served the next dispatcher");
}
