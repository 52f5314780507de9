//! `[fetcher] type = "kafka"` against Tansu, a Kafka-protocol broker (built from crates.io;
//! scripts/test starts one for the suite and passes its address in REPRISE_TEST_KAFKA, else
//! each test starts its own). A recording is produced across 3 partitions with interleaved
//! timestamps; the replay through the real binary must merge them in time order, honour
//! begin and end, and finish by itself; follow mode must pick up messages produced during
//! the replay; a broker that is down is a clear error with exit code 3.
//!
//! Tansu answers a timestamp lookup with the earliest offset, so these tests prove that the
//! begin filter holds on its own, whatever the broker answers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::kafka::kafka;
use common::*;

fn line(ts: i64, n: usize) -> String {
    format!("{{\"ts\":{ts},\"method\":\"GET\",\"url\":\"/k/{n}\"}}\n")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn paths(target: &Capture) -> Vec<String> {
    target.requests().iter().map(|c| c.path.clone()).collect()
}

/// Asserts each of `/k/0..n` arrived once and the dispatcher released them in that order
/// (from the raw sink's due instants: arrival order on a busy machine need not keep
/// requests 20 ms apart in order).
fn assert_once_in_order(target: &Capture, dir: &std::path::Path, n: usize, what: &str) {
    let mut got = paths(target);
    got.sort_by_key(|p| p.trim_start_matches("/k/").parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(got, (0..n).map(|i| format!("/k/{i}")).collect::<Vec<_>>(), "each once: {what}");
    let released = raw_endpoints_by_due(dir);
    assert_eq!(released, (0..n).map(|i| format!("GET /k/{i}")).collect::<Vec<_>>(), "{what}");
}

const BASE: i64 = 1_795_255_200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partitions_merge_in_time_order_within_begin_and_end_and_finish() {
    let kafka = kafka().await;
    let target = Capture::start().await;
    let dir = temp_dir("kafka-order");
    let topic = kafka.topic("order").await;
    // Records 20 ms apart dealt round-robin over 3 partitions, 3 before begin and 3 after
    // end; partition 2 carries two records per message (several lines in one value).
    let (begin, end) = (BASE, BASE + 89 * 20);
    let mut all: Vec<(i64, usize)> = (0..3).map(|k| (BASE - 900 + k * 100, 900 + k as usize)).collect();
    all.extend((0..90).map(|n| (BASE + n as i64 * 20, n)));
    all.extend((0..3).map(|k| (end + 3_000 + k * 100, 950 + k as usize)));
    let mut pending_two = String::new();
    for (i, (ts, n)) in all.iter().enumerate() {
        let partition = (i % 3) as i32;
        if partition == 2 && pending_two.is_empty() && i + 3 < all.len() {
            pending_two = line(*ts, *n);
            continue;
        }
        let value = std::mem::take(&mut pending_two) + &line(*ts, *n);
        kafka.send(&topic, partition, *ts, &value).await;
    }
    let job = kafka.job(
        &dir,
        &target.url(),
        &format!("begin = {begin}\nend = {end}\nreorder_window = \"200ms\""),
        &format!("topic = \"{topic}\"\n{}", raw_sink(&dir)),
    );
    let report = run_job(&job, &dir, &[]).await;
    assert_once_in_order(&target, &dir, 90, "every record in range once, in time order across partitions");
    let totals = &report["totals"];
    assert_eq!(totals["in_range"], 90, "{totals}");
    assert!(totals["out_of_range"].as_u64() >= Some(3), "records before begin are filtered: {totals}");
    assert_eq!(totals["late"], 0, "{totals}");
    assert_eq!(report["source"]["kind"], "kafka");
    assert_eq!(report["source"]["parts"], 3, "{}", report["source"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_timestamps_order_records_and_havok_single_partition_reads_partition_0() {
    let kafka = kafka().await;
    let target = Capture::start().await;
    let dir = temp_dir("kafka-ts");
    let topic = kafka.topic("ts").await;
    // The records' own ts runs backwards; the message timestamps run forwards.
    for n in 0..30usize {
        kafka.send(&topic, (n % 3) as i32, BASE + n as i64 * 20, &line(BASE - n as i64 * 1000, n)).await;
    }
    let kafka_extra = format!("topic = \"{topic}\"\ntimestamp = \"kafka\"\n{}", raw_sink(&dir));
    let job = kafka.job(&dir, &target.url(), "", &kafka_extra);
    run_job(&job, &dir, &[]).await;
    assert_once_in_order(&target, &dir, 30, "ordered by the Kafka message timestamp");

    // Havok's type and keys, as Havok wrote them: partition 0 only, from the oldest offset.
    let target = Capture::start().await;
    let text = format!(
        "[job]\ntarget = \"{}\"\nspeed = \"max\"\n[fetcher]\ntype = \"kafka-single-partition\"\n[fetcher.kafka]\nbrokers = [\"{}\"]\ntopic = \"{topic}\"\noffset = -2\n[analyzer]\nname = \"json\"\n",
        target.url(),
        kafka.brokers
    );
    let job = dir.join("havok.toml");
    std::fs::write(&job, text).expect("write");
    let report = run_job(&job, &dir, &[]).await;
    let mut got = paths(&target);
    got.sort();
    let mut want: Vec<String> = (0..30).step_by(3).map(|n| format!("/k/{n}")).collect();
    want.sort();
    assert_eq!(got, want, "partition 0's records only");
    assert_eq!(report["source"]["parts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_replays_messages_produced_during_the_replay() {
    let kafka = kafka().await;
    let target = Capture::start().await;
    let dir = temp_dir("kafka-follow");
    let topic = kafka.topic("follow").await;
    let start = now_ms();
    for n in 0..6usize {
        kafka.send(&topic, (n % 3) as i32, start + n as i64, &line(start + n as i64 * 10, n)).await;
    }
    let job = kafka.job(
        &dir,
        &target.url(),
        "reorder_window = \"200ms\"",
        &format!("topic = \"{topic}\"\nfollow = true"),
    );
    let report_path = dir.join("report.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report_path));
    let _replayer = spawn_replayer(&dispatcher.grpc_url, "r1");
    assert!(
        wait_until(|| target.requests().len() >= 6, Duration::from_secs(20)).await,
        "backlog: {:?}",
        paths(&target)
    );
    // Live traffic, into one partition only: the two idle ones must not hold it back.
    for n in 6..12usize {
        let ts = now_ms();
        kafka.send(&topic, 1, ts, &line(ts, n)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        wait_until(|| target.requests().len() >= 12, Duration::from_secs(20)).await,
        "live messages arrive while the job runs: {:?}",
        paths(&target)
    );
    let (_, status) = http("GET", &dispatcher.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert!(
        status["source"]["lag_s"].as_f64().is_some_and(|l| l < 30.0),
        "lag shown in follow mode: {}",
        status["source"]
    );
    let (_, metrics) = http("GET", &dispatcher.admin, "/metrics").await;
    assert!(metrics.contains("kind=\"kafka\",state=\"total\"} 3"), "{metrics}");
    assert!(metrics.contains("reprise_source_lag_seconds{"), "{metrics}");
    let (code, _) = http("POST", &dispatcher.admin, "/job/stop").await;
    assert_eq!(code, 202, "stop accepted");
    // A follow-mode job has no end of its own: stopped, it exits 4 like any stopped job.
    assert_eq!(wait_exit(dispatcher.guard).await.code(), Some(4));
    let mut got = paths(&target);
    got.sort();
    let mut want: Vec<String> = (0..12).map(|n| format!("/k/{n}")).collect();
    want.sort();
    assert_eq!(got, want, "each message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_a_clear_error_with_exit_code_3() {
    let target = Capture::start().await;
    let dir = temp_dir("kafka-down");
    let port = free_port();
    let text = format!(
        "[job]\ntarget = \"{}\"\n[fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"t\"\nconnect_timeout = \"1s\"\n",
        target.url()
    );
    let job = dir.join("job.toml");
    std::fs::write(&job, text).expect("write");
    let out = reprise(args(&["run", job.to_str().expect("path")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot reach the brokers"), "{err}");
}
