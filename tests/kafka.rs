//! `[fetcher] type = "kafka"` against Tansu, a Kafka-protocol broker (built from crates.io;
//! scripts/test starts one for the suite and passes its address in REPRISE_TEST_KAFKA, else
//! each test starts its own). A recording is produced across 3 partitions with interleaved
//! timestamps; the replay through the real binary must merge them in time order, honour
//! begin and end, and finish by itself; follow mode must pick up messages produced during
//! the replay; a broker that is down is a clear error with exit code 3; dispatchers in one
//! consumer group share the partitions, and one that leaves loses nothing it committed.
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

/// A member of the group: a dispatcher in follow mode with one replayer, replaying to a
/// target of its own, so the test sees which member replayed what.
const PARTITIONS: i32 = 4;

struct Member {
    dispatcher: Daemon,
    _replayer: Guard,
    target: Capture,
    report: std::path::PathBuf,
    _dir: TestDir,
}

async fn member(kafka: &common::kafka::Kafka, topic: &str, name: &str) -> Member {
    let target = Capture::start().await;
    let dir = temp_dir(name);
    // Heartbeats every 200 ms: a member learns of a rebalance within a fraction of a second.
    // A second of reordering: on a loaded machine the partitions' fetches come that far
    // apart, and a record released out of order is late, sent at once instead of held.
    let job = kafka.job(
        &dir,
        &target.url(),
        "reorder_window = \"1s\"",
        &format!(
            "topic = \"{topic}\"\nfollow = true\ngroup_id = \"{topic}-group\"\n[fetcher.kafka.properties]\n\"heartbeat.interval.ms\" = 200\n"
        ),
    );
    let report = dir.join("report.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let replayer = spawn_replayer(&dispatcher.grpc_url, name);
    Member { dispatcher, _replayer: replayer, target, report, _dir: dir }
}

/// Whether the dispatcher at `admin` holds records it scheduled and has not dispatched yet.
async fn holds_records(admin: &str) -> bool {
    let (_, metrics) = http("GET", admin, "/metrics").await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    counter("reprise_scheduled_total") > counter("reprise_dispatched_total")
}

/// One message per partition, recorded `ahead_ms` after now, numbered from `n` on; the
/// records' numbers.
async fn produce(
    kafka: &common::kafka::Kafka,
    topic: &str,
    n: &mut usize,
    ahead_ms: i64,
) -> std::ops::Range<usize> {
    let first = *n;
    for p in 0..PARTITIONS {
        let ts = now_ms() + ahead_ms;
        kafka.send(topic, p, ts, &line(ts, *n)).await;
        *n += 1;
    }
    first..*n
}

/// B joins `a`'s group while traffic flows, until a partition has moved to it and every
/// message so far was replayed by one of them.
async fn join(kafka: &common::kafka::Kafka, topic: &str, n: &mut usize, a: &Member) -> Member {
    let b = member(kafka, topic, "group-b").await;
    let mut moved = false;
    for _ in 0..100 {
        produce(kafka, topic, n, 0).await;
        if wait_until(|| !b.target.requests().is_empty(), Duration::from_millis(300)).await {
            moved = true;
            break;
        }
    }
    assert!(moved, "no partition moved to the member that joined");
    let total = *n;
    assert!(
        wait_until(
            || a.target.requests().len() + b.target.requests().len() >= total,
            Duration::from_secs(30)
        )
        .await,
        "every message of the join replayed: A {:?}, B {:?}",
        paths(&a.target),
        paths(&b.target)
    );
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_moves_partitions_between_dispatchers_and_a_leaver_loses_nothing_it_committed() {
    let kafka = kafka().await;
    let topic = kafka.topic_of("group", PARTITIONS).await;
    let mut n = 0usize;

    // A alone owns every partition.
    let a = member(&kafka, &topic, "group-a").await;
    let before = produce(&kafka, &topic, &mut n, 0).await;
    assert!(
        wait_until(|| a.target.requests().len() >= before.len(), Duration::from_secs(30)).await,
        "A replays the backlog: {:?}",
        paths(&a.target)
    );

    // B joins: some partitions move to it, while traffic flows.
    let b = join(&kafka, &topic, &mut n, &a).await;

    // Records 10 s ahead of now: each member reads them and holds them for their instant.
    // Far ahead: each record's time is taken before its send is awaited, and on a loaded
    // CI machine the four sends to the broker took long enough for 3 s to pass first.
    // A leaves once its metrics show it holds some (scheduled, not dispatched): what it
    // held was not sent, so not committed, and B, taking its partitions from A's last
    // commit, replays them.
    assert!(!holds_records(&a.dispatcher.admin).await, "A sent all it read before");
    let held = produce(&kafka, &topic, &mut n, 10_000).await;
    assert!(
        wait_until_async(|| holds_records(&a.dispatcher.admin), Duration::from_secs(8)).await,
        "A read none of the records held for later"
    );
    let (code, _) = http("POST", &a.dispatcher.admin, "/job/stop").await;
    assert_eq!(code, 202);
    assert_eq!(wait_exit(a.dispatcher.guard).await.code(), Some(4), "a stopped job exits 4");
    let after = produce(&kafka, &topic, &mut n, 0).await;
    let want: Vec<String> = (0..n).map(|i| format!("/k/{i}")).collect();
    let replayed = || {
        let mut all: Vec<String> = paths(&a.target).into_iter().chain(paths(&b.target)).collect();
        all.sort();
        all.dedup();
        all
    };
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert!(
        wait_until(|| replayed() == sorted_want, Duration::from_secs(30)).await,
        "every message replayed at least once; missing: {:?}",
        sorted_want.iter().filter(|p| !replayed().contains(p)).collect::<Vec<_>>()
    );
    let at_b = paths(&b.target);
    for i in held.chain(after) {
        assert!(at_b.contains(&format!("/k/{i}")), "/k/{i}: B has every partition once A has left");
    }
    let a_report = read_json(&a.report);
    assert!(
        a_report["totals"]["dropped"]["stopped"].as_u64().is_some_and(|s| s >= 1),
        "A held records when it left: {}",
        a_report["totals"]
    );
    // What A sent before B joined was committed: B never replays it.
    for i in before {
        assert!(!at_b.contains(&format!("/k/{i}")), "/k/{i} was sent and committed by A");
    }
    let (code, _) = http("POST", &b.dispatcher.admin, "/job/stop").await;
    assert_eq!(code, 202);
    assert_eq!(wait_exit(b.dispatcher.guard).await.code(), Some(4));
}
