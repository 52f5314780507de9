//! Sessions in order (`[proxy] ordered`), through the real binary against a real HTTP
//! target, read from the target's own log: a key's request never arrives before the target
//! answered that key's previous one, and it arrives in recorded order; what requests waited
//! is reported apart from latency and schedule lag; `order_timeout` lets a request go while
//! its session's previous one is still in flight. Without `ordered` the same recording
//! overlaps, so the check can fail.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// Users, requests per user, and how long the target takes to answer each (ms), while a
/// user's requests were recorded 5 ms apart: each overlaps the previous one unless held.
const USERS: usize = 3;
const PER_USER: usize = 6;
const ANSWER_MS: usize = 80;

/// The slow user's first request takes this long; its second was recorded 10 ms later.
const SLOW_MS: usize = 1_500;
const ORDER_TIMEOUT_MS: u64 = 300;

/// The recording: users u0..u2 interleaved, `/s/{user}/{n}` in order, each answered after
/// ANSWER_MS; and user "slow", whose first request outlasts the order timeout.
fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for n in 0..PER_USER {
        for u in 0..USERS {
            let ts = T0 + n * 5 + u;
            lines.push(format!(
                r#"{{"ts":{ts},"method":"GET","url":"/s/u{u}/{n}","headers":{{"X-User":"u{u}","X-Delay-Ms":"{ANSWER_MS}"}}}}"#
            ));
        }
    }
    lines.push(format!(
        r#"{{"ts":{},"method":"POST","url":"/s/slow/0","headers":{{"X-User":"slow","X-Delay-Ms":"{SLOW_MS}"}}}}"#,
        T0 + 40
    ));
    lines.push(format!(
        r#"{{"ts":{},"method":"GET","url":"/s/slow/1","headers":{{"X-User":"slow"}}}}"#,
        T0 + 50
    ));
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// What the target saw, by user (from the path), in arrival order.
fn by_user(target: &Capture) -> BTreeMap<String, Vec<Captured>> {
    let mut seen = target.requests();
    seen.sort_by_key(|c| c.at);
    let mut users: BTreeMap<String, Vec<Captured>> = BTreeMap::new();
    for c in seen {
        let user = c.path.split('/').nth(2).expect("/s/USER/N").to_owned();
        users.entry(user).or_default().push(c);
    }
    users
}

/// The job: key routing on X-User over two replayers, ordered or not.
fn job(dir: &std::path::Path, target: &Capture, ordered: bool) -> std::path::PathBuf {
    let rec = recording(dir);
    let proxy = format!(
        "[analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"fnv\"\nordered = {ordered}\n\
         order_timeout = \"{ORDER_TIMEOUT_MS}ms\"\n[replayer]\nconcurrency = 8\n"
    );
    write_job(dir, &target.url(), &rec, "min_replayers = 2", &proxy)
}

/// A fleet: a dispatcher daemon and two replayer daemons over gRPC; the report and the
/// metrics are read from the dispatcher once the job has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_requests_wait_for_its_previous_response_and_the_wait_is_reported_apart() {
    let target = Capture::start().await;
    let dir = temp_dir("ordered");
    let job = job(dir.as_ref(), &target, true);
    let dispatcher = serve_dispatcher(&job);
    let (admin, grpc) = (dispatcher.admin.clone(), dispatcher.grpc_url.clone());
    let (_a, _b) = (spawn_replayer(&grpc, "a"), spawn_replayer(&grpc, "b"));
    let done = wait_until_async(
        || async { http("GET", &admin, "/status").await.1.contains("\"state\":\"finished\"") },
        Duration::from_secs(30),
    )
    .await;
    assert!(done, "the job finished");
    let r: serde_json::Value = serde_json::from_str(&http("GET", &admin, "/report").await.1).expect("report");
    assert_eq!(r["totals"]["sent"], USERS * PER_USER + 2);
    assert_eq!(r["totals"]["ok"], USERS * PER_USER + 2);
    let (_, metrics) = http("GET", &admin, "/metrics").await;

    let users = by_user(&target);
    for u in 0..USERS {
        let seen = &users[&format!("u{u}")];
        let paths: Vec<&str> = seen.iter().map(|c| c.path.as_str()).collect();
        let recorded: Vec<String> = (0..PER_USER).map(|n| format!("/s/u{u}/{n}")).collect();
        assert_eq!(paths, recorded, "user u{u}'s requests arrive in recorded order");
        for pair in seen.windows(2) {
            let answered = pair[0].answered.expect("answered before the job ended");
            assert!(
                pair[1].at >= answered,
                "{} arrived {:?} before {} was answered",
                pair[1].path,
                answered - pair[1].at,
                pair[0].path
            );
        }
    }
    // The order timeout let the slow user's second request go while its first was held.
    let slow = &users["slow"];
    assert_eq!(slow.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["/s/slow/0", "/s/slow/1"]);
    assert!(slow[1].at < slow[0].answered.expect("answered"), "let go before the slow answer");
    let waited_for_slow = slow[1].at - slow[0].at;
    assert!(
        waited_for_slow.as_millis() >= u128::from(ORDER_TIMEOUT_MS) - 100,
        "held for the order timeout: {waited_for_slow:?}"
    );

    // Every user request but each user's first waited, and the slow user's second.
    let w = &r["order_wait"];
    assert_eq!(w["requests"], USERS * (PER_USER - 1) + 1, "{w}");
    assert_eq!(w["timed_out"], 1, "{w}");
    let wait_max = w["wait_ms"]["max"].as_f64().expect("max");
    assert!(wait_max >= ANSWER_MS as f64, "the last request of a user waited for several answers: {w}");
    // The wait is not schedule lag: lag counts from the moment a request was let go.
    let lag_max = r["total"]["schedule_lag_ms"]["max"].as_f64().expect("lag");
    assert!(lag_max < wait_max / 2.0, "schedule lag max {lag_max} ms holds the wait ({wait_max} ms)");
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert_eq!(metric("reprise_order_wait_seconds_count"), (USERS * (PER_USER - 1) + 1) as f64);
    assert_eq!(metric("reprise_order_timeouts_total"), 1.0);
    assert!(metric("reprise_order_wait_seconds{job_id") > 0.0, "the median wait");
}

/// The same recording without `ordered`: a user's requests overlap at the target, which is
/// what the test above would catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ordered_a_keys_requests_overlap() {
    let target = Capture::start().await;
    let dir = temp_dir("unordered");
    let job = job(dir.as_ref(), &target, false);
    let r = run_job(&job, dir.as_ref(), &["--replayers", "2"]).await;
    assert!(r.get("order_wait").is_none(), "no ordering, no wait summary: {}", r["order_wait"]);
    let users = by_user(&target);
    let overlapping = (0..USERS)
        .flat_map(|u| {
            users[&format!("u{u}")]
                .windows(2)
                .map(|p| p[1].at < p[0].answered.expect("answered"))
                .collect::<Vec<_>>()
        })
        .filter(|o| *o)
        .count();
    assert!(overlapping >= USERS, "requests 5 ms apart and answered in 80 ms overlap: {overlapping}");
}

/// `ordered` without a key or key routing is refused before anything is sent, naming the fix.
#[tokio::test]
async fn ordered_without_a_key_is_refused_with_the_fix() {
    let dir = temp_dir("ordered-refused");
    let rec = gets_every(dir.as_ref(), 2, 1);
    let job = write_job(dir.as_ref(), "http://127.0.0.1:9", &rec, "", "[proxy]\nordered = true\n");
    let out = reprise(args(&["run", job.to_str().expect("path")])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("proxy.ordered = true: needs a key to order by: set [analyzer] hash_field"),
        "{err}"
    );
    assert!(err.contains("needs [proxy] hash = \"fnv\" or \"consistent\""), "{err}");
}
