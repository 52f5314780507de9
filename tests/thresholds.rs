//! The CI gate through the real binary: thresholds that hold exit 0, a failing one exits 99
//! naming the expression and the measured value, `abort_on_fail` stops a failing job early,
//! and a bad expression is a job-file error (exit 2).

mod common;

use common::*;

/// `n` GET records 10 ms apart; every `bad_every`-th answers 500 (0: none).
fn recording(dir: &std::path::Path, n: usize, gap_ms: usize, bad_every: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let path = if i % 2 == 0 { "/a" } else { "/b" };
            let status =
                if bad_every > 0 && i % bad_every == 0 { r#","headers":{"X-Status":"500"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"{path}"{status}}}"#, T0 + i * gap_ms)
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

async fn run(job: &std::path::Path, dir: &std::path::Path) -> (Option<i32>, String, serde_json::Value) {
    let report = dir.join("report.json");
    let out =
        reprise(args(&["run", job.to_str().expect("p"), "--report-json", report.to_str().expect("p")])).await;
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), read_json(&report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_that_hold_exit_0_with_their_measured_values() {
    let target = Capture::start().await;
    let dir = temp_dir("th-pass");
    let rec = recording(&dir, 20, 10, 0);
    let gate = "[thresholds]\n\"*\" = [\"p99 < 5s\", \"error_rate < 1%\", \"count == 20\"]\n\"GET /a\" = [\"count == 10\", \"max < 5s\"]\n";
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", gate);
    let (code, err, r) = run(&job, &dir).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["thresholds_passed"], true);
    let verdicts = r["thresholds"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 5);
    let count_a =
        verdicts.iter().find(|v| v["endpoint"] == "GET /a" && v["expression"] == "count == 10").expect("v");
    assert_eq!(count_a["measured"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_threshold_exits_99_and_names_what_it_measured() {
    let target = Capture::start().await;
    let dir = temp_dir("th-fail");
    let rec = recording(&dir, 20, 10, 2); // every other request answers 500
    let gate =
        "[thresholds]\n\"*\" = [\"error_rate < 10%\", \"p99 < 5s\"]\n\"GET /missing\" = [\"p95 < 1s\"]\n";
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", gate);
    let (code, err, r) = run(&job, &dir).await;
    assert_eq!(code, Some(99), "{err}");
    assert!(err.contains("error_rate < 10%") && err.contains("measured 50.000%"), "{err}");
    assert!(err.contains("GET /missing") && err.contains("no requests"), "{err}");
    assert_eq!(r["thresholds_passed"], false);
    let p99 = r["thresholds"].as_array().expect("v").iter().find(|v| v["expression"] == "p99 < 5s").cloned();
    assert_eq!(p99.expect("p99")["pass"], true, "the others are still judged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_a_failing_job_early() {
    let target = Capture::start().await;
    let dir = temp_dir("th-abort");
    let rec = recording(&dir, 400, 25, 1); // 10 s of traffic, all 500
    let gate = "[thresholds]\n\"*\" = [\"error_rate < 5%\", \"count > 1000\"]\nabort_on_fail = true\n";
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", gate);
    let (code, err, r) = run(&job, &dir).await;
    assert_eq!(code, Some(99), "{err}");
    assert_eq!(r["state"], "stopped");
    let sent = r["totals"]["sent"].as_u64().expect("sent");
    assert!((100..400).contains(&sent), "stopped once 100 requests judged, before the end: {sent}");
    assert!(r["aborted_by"].as_str().expect("aborted_by").contains("error_rate < 5%"), "{}", r["aborted_by"]);
    assert_eq!(r["totals"]["balanced"], true);
}

#[tokio::test]
async fn a_bad_expression_is_a_job_file_error_naming_it() {
    let dir = temp_dir("th-bad");
    let rec = recording(&dir, 1, 10, 0);
    let job = write_job(&dir, "http://127.0.0.1:9", &rec, "", "[thresholds]\n\"*\" = [\"p99 < soon\"]\n");
    let out = reprise(args(&["validate", job.to_str().expect("p")])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("thresholds.\"*\"") && err.contains("p99 < soon"), "{err}");
}
