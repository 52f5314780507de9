//! The replayer is the boundary: `--allow-target` (or `REPRISE_ALLOW_TARGETS`) admits a job
//! aimed inside the list and refuses one aimed elsewhere before sending anything, telling the
//! dispatcher why. Through the real binary, with two local targets.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_refuses_a_job_aimed_outside_its_allowlist_and_sends_nothing() {
    let allowed = Capture::start().await;
    let elsewhere = Capture::start().await;
    let dir = temp_dir("trust-allow");
    let job = write_job(&dir, &elsewhere.url(), &gets_every(&dir, 20, 5), "", "");
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let allowed_port = allowed.url().rsplit(':').next().expect("port").to_owned();
    let allow = format!("127.0.0.1:{allowed_port}");
    let a = args(&[
        "replayer",
        "--dispatcher",
        &d.grpc_url,
        "--id",
        "careful",
        "--once",
        "--allow-target",
        &allow,
    ]);
    let out = reprise(a).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("refused the job") && stderr.contains("--allow-target"), "{stderr}");

    // With its only replayer gone, the job cannot run as recorded: exit 3, and the report
    // says which replayer refused and why.
    assert_eq!(wait_exit(d.guard).await.code(), Some(3));
    assert!(elsewhere.requests().is_empty(), "nothing reached the target outside the list");
    assert!(allowed.requests().is_empty());
    let r = read_json(&report);
    let row = &r["replayers"][0];
    assert_eq!((row["id"].as_str(), row["state"].as_str()), (Some("careful"), Some("refused")), "{row}");
    let why = row["left"].as_str().expect("why");
    assert!(why.contains(&elsewhere.url()) && why.contains(&allow), "{why}");
    assert_eq!(row["received"], 0, "it was handed nothing: {row}");
    assert_eq!(r["totals"]["dropped"]["lost_in_flight"].as_u64().unwrap_or(0), 0, "{}", r["totals"]);
    assert_eq!(r["totals"]["dropped"]["no_replayer"], 20, "{}", r["totals"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_runs_a_job_its_allowlist_admits() {
    let target = Capture::start().await;
    let dir = temp_dir("trust-allowed");
    let job = write_job(&dir, &target.url(), &gets_every(&dir, 20, 5), "", "");
    let d = start_dispatcher(&job, "127.0.0.1:0", None);
    let port = target.url().rsplit(':').next().expect("port").to_owned();
    let list = format!("*.staging.example.com,127.0.0.1:{port}");
    let a = args(&["replayer", "--dispatcher", &d.grpc_url, "--id", "r", "--once"]);
    let out = reprise_env(a, &[("REPRISE_ALLOW_TARGETS", &list)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_exit(d.guard).await.success());
    assert_eq!(target.requests().len(), 20);
}
