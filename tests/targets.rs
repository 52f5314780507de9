//! Where the target comes from: `[job] target`, `--target` (or `REPRISE_TARGET`) of `run` and
//! `dispatcher`, and a replayer's own `--target`, which wins over the job's. A job without a
//! target (Havok's files have none) is valid with a warning and runs on replayers that have
//! one; a replayer without one refuses it and says why. Through the real binary, with local
//! capture targets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A replayer daemon for one job, with extra arguments.
fn replayer(dispatcher: &str, id: &str, extra: &[&str]) -> Guard {
    Guard(
        Command::new(BIN)
            .args(["replayer", "--dispatcher", dispatcher, "--id", id, "--once"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("replayer"),
    )
}

/// The report's row of replayer `id`.
fn row<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["replayers"].as_array().expect("rows").iter().find(|r| r["id"] == id).expect("row")
}

/// Havok's sample, unchanged: it validates with warnings only (one of them naming the target
/// rule), `run` without a target says what to add, and a dispatcher serving it sends each
/// replayer's records to that replayer's own target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_havok_file_without_a_target_runs_on_replayers_given_their_own() {
    let out = reprise(args(&["validate", "configs/havok.toml"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.lines().all(|l| l.starts_with("warning: configs/havok.toml: ")), "warnings only:\n{err}");
    assert!(err.contains("job.target: not set: each replayer sends to its own --target URL"), "{err}");

    let out = reprise(args(&["run", "configs/havok.toml"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("job.target: missing: `reprise run` needs a target; set [job] target"), "{err}");
    assert!(err.contains("or pass --target URL"), "{err}");

    // An empty job file: every problem in one message, the target among them.
    let dir = temp_dir("empty-job");
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    let out = reprise(args(&["run", empty.to_str().expect("path")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("- job.target: missing"), "{err}");
    assert!(err.contains("- fetcher"), "the recording too: {err}");
    assert_eq!(err.matches("error:").count(), 1, "one message: {err}");
    let out = reprise(args(&["run", empty.to_str().expect("path"), "--target", "http://127.0.0.1:9"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("job.target") && err.contains("- fetcher"), "--target gives one: {err}");

    let (a, b) = (Capture::start().await, Capture::start().await);
    let dir = temp_dir("havok-targets");
    let report = dir.join("report.json");
    // The replayers start first and retry until the dispatcher listens, so both are there
    // when the job (which starts with the first) begins.
    let grpc = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{grpc}");
    let r1 = replayer(&url, "r1", &["--target", &a.url()]);
    let r2 = replayer(&url, "r2", &["--target", &format!("{}/", b.url())]);
    let d = start_dispatcher(std::path::Path::new("configs/havok.toml"), &grpc, Some(&report));
    let code = wait_exit(d.guard).await;
    assert!(code.success(), "{code:?}");
    for mut r in [r1, r2] {
        let mut exit = None;
        wait_until(
            || matches!(r.0.try_wait(), Ok(Some(s)) if { exit = Some(s); true }),
            Duration::from_secs(20),
        )
        .await;
        // A replayer still running is killed when `r` drops, failing or not.
        assert!(exit.expect("each replayer took part and ended with the job").success());
    }

    let r = read_json(&report);
    let t = &r["totals"];
    assert_eq!(t["balanced"], true, "{t}");
    // 161 of the sample's 200 records fall between begin and end.
    assert_eq!(t["sent"], 161, "{t}");
    assert_eq!(a.requests().len() + b.requests().len(), 161);
    for (id, capture) in [("r1", &a), ("r2", &b)] {
        let row = row(&r, id);
        assert_eq!(row["target"].as_str(), Some(capture.url().as_str()), "{row}");
        assert_eq!(row["sent"].as_u64(), Some(capture.requests().len() as u64), "{row}");
    }
    // r2's target was given with a trailing '/': its paths are not doubled.
    assert!(
        b.requests().iter().all(|c| c.path.starts_with('/') && !c.path.starts_with("//")),
        "{:?}",
        b.requests()
    );
}

/// A replayer's own target wins over the job's: the job's target sees nothing. And a
/// replayer without a target refuses a job without one, before anything is handed to it,
/// with the reason in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayers_own_target_wins_and_one_without_refuses_a_job_without_a_target() {
    let (job_target, canary) = (Capture::start().await, Capture::start().await);
    let dir = temp_dir("own-target");
    let job = write_job(&dir, &job_target.url(), &gets_every(&dir, 30, 5), "", "");
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let out = reprise_env(
        args(&["replayer", "--dispatcher", &d.grpc_url, "--id", "canary", "--once"]),
        &[("REPRISE_TARGET", &canary.url())],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_exit(d.guard).await.success());
    assert_eq!(canary.requests().len(), 30);
    assert!(job_target.requests().is_empty(), "the job's target was overridden");
    assert_eq!(row(&read_json(&report), "canary")["target"].as_str(), Some(canary.url().as_str()));

    let job = dir.join("no-target.toml");
    let recording = gets_every(&dir, 10, 5);
    std::fs::write(&job, format!("[job]\n[fetcher.file]\npath = \"{}\"\n", recording.display()))
        .expect("job");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let out = reprise(args(&["replayer", "--dispatcher", &d.grpc_url, "--id", "bare", "--once"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("the job has no target and this replayer was given none"), "{err}");
    assert_eq!(wait_exit(d.guard).await.code(), Some(3), "its only replayer refused");
    let r = read_json(&report);
    let bare = row(&r, "bare");
    assert_eq!(bare["state"], "refused", "{bare}");
    assert!(bare["left"].as_str().expect("why").contains("--target URL (or REPRISE_TARGET)"), "{bare}");
    assert_eq!(bare["received"], 0, "{bare}");
    assert!(bare.get("target").is_none(), "{bare}");
}

/// `run` and `dispatcher` take the target from `--target` or `REPRISE_TARGET` over the job
/// file's; a bad one is refused at once, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_dispatcher_take_the_target_from_the_flag_or_the_environment() {
    let (file_target, flag_target) = (Capture::start().await, Capture::start().await);
    let dir = temp_dir("flag-target");
    let job = write_job(&dir, &file_target.url(), &gets_every(&dir, 12, 2), "", "");
    let report = run_job(&job, &dir, &["--target", &flag_target.url()]).await;
    assert_eq!(report["totals"]["sent"], 12);
    assert_eq!(flag_target.requests().len(), 12);

    let out = reprise_env(
        args(&["run", job.to_str().expect("p"), "--replayers", "2"]),
        &[("REPRISE_TARGET", &flag_target.url())],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(flag_target.requests().len(), 24);
    assert!(file_target.requests().is_empty());

    let (guard, line) = spawn_daemon(&[
        "dispatcher",
        "--config",
        job.to_str().expect("p"),
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--target",
        &flag_target.url(),
    ]);
    let grpc = format!("http://{}", field(&line, "grpc"));
    let out = reprise(args(&["replayer", "--dispatcher", &grpc, "--id", "r", "--once"])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_exit(guard).await.success());
    assert_eq!(flag_target.requests().len(), 36);
    assert!(file_target.requests().is_empty());

    for cmd in [
        vec!["run", job.to_str().expect("p"), "--target", "staging:8080"],
        vec!["dispatcher", "--config", job.to_str().expect("p"), "--target", "staging:8080"],
        vec!["replayer", "--dispatcher", "http://127.0.0.1:9", "--target", "builtin:echo"],
    ] {
        let out = reprise(args(&cmd)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(err.contains("--target") && err.contains("must be an http://"), "{cmd:?}: {err}");
    }
}
