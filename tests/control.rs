//! Live control through the real daemon: a speed change mid-job continues the schedule
//! without a burst or a gap, a change to `qps` paces the rest by arrival rate, pause holds
//! every record until resume, a rate change applies to the records after it, and bad
//! changes are refused with a message.
//!
//! The schedule is read from the raw sink's due instants (what the dispatcher asked for),
//! not from arrival times at the target: on a shared machine a replayer thread descheduled
//! for 40 ms would make arrivals bunch up, and that is not what these tests are about.

mod common;

use std::time::Duration;

use common::*;

fn recording(dir: &std::path::Path, n: usize, gap_ms: usize) -> std::path::PathBuf {
    let lines: Vec<String> =
        (0..n).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/c/{i}"}}"#, T0 + i * gap_ms)).collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// Gaps between consecutive due instants, ms.
fn gaps(dir: &std::path::Path) -> Vec<f64> {
    raw_dues(dir).windows(2).map(|w| (w[1] - w[0]) as f64 / 1000.0).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    v[v.len() / 2]
}

/// The target, the dispatcher, a replayer, and the job's directory (removed when dropped).
async fn start(n: usize, gap_ms: usize, name: &str) -> (Capture, Daemon, Guard, TestDir) {
    let target = Capture::start().await;
    let dir = temp_dir(name);
    let job = write_job(&dir, &target.url(), &recording(&dir, n, gap_ms), "speed = 1", &raw_sink(&dir));
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", None);
    let replayer = spawn_replayer(&dispatcher.grpc_url, "r1");
    (target, dispatcher, replayer, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speed_change_continues_the_schedule_without_burst_or_gap() {
    let (target, dispatcher, _r, dir) = start(80, 40, "ctl-speed").await;
    assert!(wait_until(|| target.requests().len() >= 20, Duration::from_secs(10)).await);
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"speed": 2}"#).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"speed\":2.0"), "{body}");
    assert!(wait_exit(dispatcher.guard).await.success());
    assert_eq!(target.requests().len(), 80);
    let g = gaps(&dir);
    let (before, after) = (median(g[..15].to_vec()), median(g[g.len() - 20..].to_vec()));
    assert!((39.5..40.5).contains(&before), "40 ms apart at speed 1: {before:.1}");
    assert!((19.5..20.5).contains(&after), "20 ms apart at speed 2: {after:.1}");
    let (min, max) = g.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(min > 19.5, "no burst at the change: smallest gap {min:.1} ms in {g:?}");
    assert!(max < 40.5, "no hole at the change: largest gap {max:.1} ms in {g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_every_record_until_resume() {
    let (target, dispatcher, _r, dir) = start(60, 40, "ctl-pause").await;
    assert!(wait_until(|| target.requests().len() >= 10, Duration::from_secs(10)).await);
    let (code, _) = http("POST", &dispatcher.admin, "/job/pause").await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(400)).await; // what was already released lands
    let (_, status) = http("GET", &dispatcher.admin, "/status").await;
    assert!(status.contains("\"state\":\"paused\"") && status.contains("\"paused\":true"), "{status}");
    let held = target.requests().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(target.requests().len(), held, "nothing is sent while paused");
    let (code, _) = http("POST", &dispatcher.admin, "/job/resume").await;
    assert_eq!(code, 200);
    assert!(wait_exit(dispatcher.guard).await.success());
    assert_eq!(target.requests().len(), 60, "every record arrives after the resume");
    let g = gaps(&dir);
    assert!(g.iter().any(|&x| x > 1000.0), "the pause shows as one long gap");
    assert!(g.iter().all(|&x| x > 39.5), "no burst after the resume: {g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_change_applies_to_the_records_after_it() {
    let (target, dispatcher, _r, _dir) = start(40, 50, "ctl-rate").await;
    assert!(wait_until(|| target.requests().len() >= 10, Duration::from_secs(10)).await);
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"rate": 2}"#).await;
    assert_eq!(code, 200, "{body}");
    assert!(wait_exit(dispatcher.guard).await.success());
    let got = target.requests();
    let copies: Vec<usize> =
        (0..40).map(|i| got.iter().filter(|c| c.path == format!("/c/{i}")).count()).collect();
    // Records released before the change go once, every one after it twice: a suffix,
    // wherever the change landed (not a count that depends on how fast this machine is).
    let changed_at = copies.iter().position(|&n| n == 2).expect("records after the change");
    assert!(changed_at >= 10, "the 10 records seen before the change went once: {copies:?}");
    assert!(copies[..changed_at].iter().all(|&n| n == 1), "{copies:?}");
    assert!(copies[changed_at..].iter().all(|&n| n == 2), "{copies:?}");
}

/// Records 40 ms apart (25 a second); `{"qps": 100}` mid-job makes the rest 10 ms apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_qps_paces_the_rest_by_arrival_rate() {
    let (target, dispatcher, _r, dir) = start(80, 40, "ctl-qps").await;
    assert!(wait_until(|| target.requests().len() >= 20, Duration::from_secs(10)).await);
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"qps": 100}"#).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"qps\":100.0") && body.contains("\"speed\":null"), "{body}");
    assert!(wait_exit(dispatcher.guard).await.success());
    assert_eq!(target.requests().len(), 80);
    let g = gaps(&dir);
    let (before, after) = (median(g[..15].to_vec()), median(g[g.len() - 20..].to_vec()));
    assert!((39.5..40.5).contains(&before), "40 ms apart as recorded: {before:.1}");
    assert!((9.8..10.2).contains(&after), "100 a second: {after:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_changes_are_refused_with_a_message() {
    let (_target, dispatcher, _r, _dir) = start(100, 50, "ctl-bad").await;
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"speed": 0}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("speed = 0"), "{body}");
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"sped": 2}"#).await;
    assert!((400..500).contains(&code), "{code} {body}");
    assert!(body.contains("unknown field"), "{body}");
    let (code, body) =
        http_json("POST", &dispatcher.admin, "/job/config", r#"{"speed": "max", "rate": 0.5}"#).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"speed\":\"max\""), "{body}");
    let (code, body) =
        http_json("POST", &dispatcher.admin, "/job/config", r#"{"speed": 2, "qps": 10}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not both"), "{body}");
    let (code, body) = http_json("POST", &dispatcher.admin, "/job/config", r#"{"qps": -1}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("qps = -1"), "{body}");
}
