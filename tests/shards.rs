//! Shards (`--shard I/N`) and `reprise merge`, through the real binary against a real HTTP
//! target: shards of one recording replay every record exactly once between them (split by
//! key inside one file, by name over a glob, by partition over a Kafka topic), and their
//! JSON reports merge into the report a single dispatcher writes of the whole recording:
//! the same counts and histogram totals, percentiles read off the merged histograms, the
//! thresholds judged on the merge.
//!
//! The Kafka broker is Tansu (see tests/kafka.rs); one message per produce request, as
//! Tansu's end offsets count only a batch's first message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kafka::kafka;
use common::*;

const USERS: usize = 23;

/// `n` requests of `USERS` users (header X-User), each path naming its user and its place
/// in the recording, across `files` files (record i in file i % files).
fn recording(dir: &Path, n: usize, files: usize) -> Vec<PathBuf> {
    let mut lines = vec![Vec::new(); files];
    for i in 0..n {
        let user = i * 7 % USERS;
        let (method, body) = if i % 4 == 0 { ("POST", r#","body":"{\"n\":1}""#) } else { ("GET", "") };
        lines[i % files].push(format!(
            r#"{{"ts":{},"method":"{method}","url":"/u/{user}/{i}","headers":{{"X-User":"u{user}"}}{body}}}"#,
            T0 + 2 * i
        ));
    }
    (0..files)
        .map(|f| {
            let path = dir.join(format!("r{f}.jsonl"));
            std::fs::write(&path, lines[f].join("\n")).expect("write");
            path
        })
        .collect()
}

/// A job replaying `path` (a file or a glob) to `target` as recorded, each user on one
/// replayer of two and in recorded order, every path its own endpoint. (At speed "max" the
/// first records could go out while one replayer has not yet accepted the job, and a user's
/// first requests then go to the other: order holds within one replayer.)
fn job(dir: &Path, target: &str, path: &str, name: &str) -> PathBuf {
    let text = format!(
        "[job]\ntarget = \"{target}\"\nreplayers = 2\n[fetcher.file]\npath = \"{path}\"\n\
         [analyzer]\nhash_field = \"header:X-User\"\n[proxy]\nhash = \"fnv\"\nordered = true\n\
         [stats]\ntemplates = false\n[thresholds]\n\"*\" = [\"count > 10\"]\n"
    );
    let job = dir.join(name);
    std::fs::write(&job, text).expect("write job");
    job
}

/// Runs shard `i` of `n` of `job`, all at once, each `reprise run` a process of its own;
/// their JSON reports' paths.
async fn run_shards(job: &Path, dir: &Path, n: u32) -> Vec<PathBuf> {
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let report = dir.join(format!("shard{i}.json"));
            let (job, shard) = (job.to_str().expect("path"), format!("{i}/{n}"));
            let a = args(&["run", job, "--shard", &shard, "--report-json", report.to_str().expect("path")]);
            tokio::spawn(async move {
                let out = reprise(a).await;
                assert!(out.status.success(), "shard {shard}: {}", String::from_utf8_lossy(&out.stderr));
                report
            })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.expect("shard"));
    }
    reports
}

/// `reprise merge REPORTS… EXTRA…`: its exit code, stdout and stderr.
async fn merge(reports: &[PathBuf], extra: &[&str]) -> (Option<i32>, String, String) {
    let mut a = args(&["merge"]);
    a.extend(reports.iter().map(|p| p.to_str().expect("path").to_owned()));
    a.extend(args(extra));
    let out = reprise(a).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each endpoint's requests and status counts.
fn endpoints(report: &serde_json::Value) -> BTreeMap<String, (u64, String)> {
    report["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            let name = e["endpoint"].as_str().expect("name").to_owned();
            (name, (e["requests"].as_u64().expect("requests"), e["status"].to_string()))
        })
        .collect()
}

/// What a merged report must share with the single run of the same recording: the books,
/// each endpoint's counts, and the totals' histogram counts.
fn assert_same_books(merged: &serde_json::Value, whole: &serde_json::Value) {
    for key in ["input", "in_range", "scheduled", "dispatched", "sent", "ok", "failed", "bytes"] {
        assert_eq!(merged["totals"][key], whole["totals"][key], "totals.{key}");
    }
    assert_eq!(merged["totals"]["balanced"], true);
    assert_eq!(endpoints(merged), endpoints(whole), "each endpoint's requests and statuses");
    assert_eq!(merged["total"]["requests"], whole["total"]["requests"]);
}

/// Paths the target received, each with how many times.
fn received(target: &Capture) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in target.requests() {
        *seen.entry(r.path.clone()).or_default() += 1;
    }
    seen
}

/// The recorded place of each request (the path's last part), per user, in arrival order.
fn arrivals_by_user(target: &Capture) -> BTreeMap<String, Vec<usize>> {
    let mut by_user: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut requests = target.requests();
    requests.sort_by_key(|r| r.at);
    for r in requests {
        let parts: Vec<&str> = r.path.split('/').collect();
        by_user.entry(parts[2].to_owned()).or_default().push(parts[3].parse().expect("place"));
    }
    by_user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_of_one_file_split_by_key_replay_each_record_once_and_merge_to_the_whole() {
    const N: usize = 240;
    let dir = temp_dir("shards-key");
    let path = recording(&dir, N, 1).remove(0);
    let (whole_target, shards_target) = (Capture::start().await, Capture::start().await);
    let whole_job = job(&dir, &whole_target.url(), path.to_str().expect("path"), "whole.toml");
    let whole = run_job(&whole_job, &dir, &[]).await;
    let shards_job = job(&dir, &shards_target.url(), path.to_str().expect("path"), "shards.toml");
    let reports = run_shards(&shards_job, &dir, 3).await;

    let seen = received(&shards_target);
    assert_eq!(seen.len(), N, "every record reached the target");
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    assert_eq!(seen, received(&whole_target), "the shards sent what one dispatcher sent");
    // Each user on one shard, and in recorded order there.
    let shards: Vec<serde_json::Value> = reports.iter().map(|p| read_json(p)).collect();
    let users_of = |r: &serde_json::Value| -> BTreeSet<String> {
        endpoints(r).keys().map(|e| e.split('/').nth(2).expect("user").to_owned()).collect()
    };
    let mut all_users = BTreeSet::new();
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"], format!("{i}/3"), "the report names its shard");
        let users = users_of(s);
        assert!(!users.is_empty(), "shard {i} replayed some users");
        assert!(all_users.is_disjoint(&users), "a user on two shards: {users:?}");
        all_users.extend(users);
    }
    assert_eq!(all_users.len(), USERS);
    for (user, places) in arrivals_by_user(&shards_target) {
        assert!(places.windows(2).all(|w| w[0] < w[1]), "user {user} out of order: {places:?}");
    }

    let merged_path = dir.join("merged.json");
    let (code, table, err) = merge(&reports, &["--report-json", merged_path.to_str().expect("path")]).await;
    assert_eq!(code, Some(0), "{table}{err}");
    assert!(table.contains("merged from 3 reports"), "{table}");
    let merged = read_json(&merged_path);
    assert_same_books(&merged, &whole);
    assert_eq!(merged["thresholds"][0]["expression"], "count > 10", "the runs' thresholds judged again");
    assert_eq!(merged["thresholds"][0]["measured"], N as f64);
    // A merge of merges is the same merge: the merged report carries its histograms too.
    let (code, _, err) = merge(
        std::slice::from_ref(&merged_path),
        &["--report-json", dir.join("again.json").to_str().expect("p")],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let again = read_json(&dir.join("again.json"));
    assert_eq!(again["total"]["latency_ms"], merged["total"]["latency_ms"]);
    assert_eq!(again["total"]["service_ms"], merged["total"]["service_ms"]);
    assert_eq!(endpoints(&again), endpoints(&merged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_of_a_glob_of_four_files_read_each_file_once() {
    const N: usize = 200;
    let dir = temp_dir("shards-glob");
    recording(&dir, N, 4);
    let glob = dir.join("r*.jsonl");
    let (whole_target, shards_target) = (Capture::start().await, Capture::start().await);
    let whole =
        run_job(&job(&dir, &whole_target.url(), glob.to_str().expect("p"), "whole.toml"), &dir, &[]).await;
    let reports =
        run_shards(&job(&dir, &shards_target.url(), glob.to_str().expect("p"), "s.toml"), &dir, 3).await;

    let seen = received(&shards_target);
    assert_eq!((seen.len(), seen.values().all(|&n| n == 1)), (N, true), "each record once");
    let parts: Vec<u64> =
        reports.iter().map(|p| read_json(p)["source"]["parts"].as_u64().expect("parts")).collect();
    assert_eq!(parts.iter().sum::<u64>(), 4, "each file read by one shard: {parts:?}");
    let merged_path = dir.join("merged.json");
    let (code, table, err) = merge(&reports, &["--report-json", merged_path.to_str().expect("p")]).await;
    assert_eq!(code, Some(0), "{table}{err}");
    let merged = read_json(&merged_path);
    assert_same_books(&merged, &whole);
    assert_eq!(merged["source"]["parts_done"], 4);
}

/// Two runs, one of fast answers and one of slow ones: the merge's percentiles are those of
/// all requests together (read off the merged histograms), not an average of the runs'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_reads_percentiles_off_the_merged_histograms_and_judges_thresholds_on_them() {
    const SLOW_MS: u64 = 40;
    let target = Capture::start().await;
    let dir = temp_dir("merge");
    let mut reports = Vec::new();
    // 60 fast and 40 slow: the median is a fast answer even when a loaded machine makes a
    // few fast ones slow (with 50 and 50 it sat on the boundary, and one did).
    for (name, delay, n) in [("fast", 0, 60), ("slow", SLOW_MS, 40)] {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"ts":{},"method":"GET","url":"/x","headers":{{"X-Delay-Ms":"{delay}"}}}}"#,
                    T0 + i
                )
            })
            .collect();
        let rec = dir.join(format!("{name}.jsonl"));
        std::fs::write(&rec, lines.join("\n")).expect("write");
        let job = write_job(
            &dir,
            &target.url(),
            &rec,
            "speed = \"max\"\nreplayers = 1",
            "[replayer]\nconcurrency = 50\n",
        );
        run_job(&job, &dir, &[]).await;
        let report = dir.join(format!("{name}.json"));
        std::fs::rename(dir.join("report.json"), &report).expect("rename");
        reports.push(report);
    }
    let fast = read_json(&reports[0]);
    let slow = read_json(&reports[1]);
    let merged_path = dir.join("merged.json");
    let (code, table, err) = merge(&reports, &["--report-json", merged_path.to_str().expect("p")]).await;
    assert_eq!(code, Some(0), "{table}{err}");
    let m = read_json(&merged_path);
    let ms = |r: &serde_json::Value, q: &str| r["total"]["latency_ms"][q].as_f64().expect("ms");
    assert_eq!(m["total"]["requests"], 100);
    assert!(ms(&m, "p90") >= SLOW_MS as f64, "p90 of all is a slow answer: {}", ms(&m, "p90"));
    assert!(ms(&m, "p50") < SLOW_MS as f64, "p50 of all is a fast answer: {}", ms(&m, "p50"));
    assert_eq!(ms(&m, "max"), ms(&slow, "max"));
    assert_eq!(ms(&m, "min"), ms(&fast, "min"));

    let limit = format!("p90 < {}ms", SLOW_MS);
    let (code, _, err) = merge(&reports, &["--threshold", &limit]).await;
    assert_eq!(code, Some(99), "p90 of the merge crosses {limit}: {err}");
    let (code, _, err) = merge(&reports[..1], &["--threshold", &limit]).await;
    assert_eq!(code, Some(0), "the fast run alone passes: {err}");
    let (code, _, err) = merge(&reports, &["--threshold", "GET /x: p99 <"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--threshold \"GET /x: p99 <\""), "{err}");

    // A report without its histograms (a live page's, an older version's) is named.
    let mut bare = fast.clone();
    bare["total"].as_object_mut().expect("total").remove("encoded");
    std::fs::write(dir.join("bare.json"), bare.to_string()).expect("write");
    let (code, _, err) = merge(&[dir.join("bare.json")], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bare.json: the total carries no encoded statistics"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_of_a_topic_of_six_partitions_read_two_partitions_each() {
    const N: usize = 90;
    let kafka = kafka().await;
    let topic = kafka.topic_of("shards", 6).await;
    for i in 0..N {
        let user = i * 7 % USERS;
        let line = format!(
            r#"{{"ts":{},"method":"GET","url":"/u/{user}/{i}","headers":{{"X-User":"u{user}"}}}}"#,
            T0 + i
        );
        kafka.send(&topic, (i % 6) as i32, (T0 + i) as i64, &line).await;
    }
    let (whole_dir, shards_dir) = (temp_dir("shards-kafka-whole"), temp_dir("shards-kafka"));
    let (whole_target, shards_target) = (Capture::start().await, Capture::start().await);
    let job_of = |dir: &Path, target: &Capture| {
        kafka.job(
            dir,
            &target.url(),
            "speed = \"max\"\nreplayers = 2",
            &format!("topic = \"{topic}\"\n[stats]\ntemplates = false"),
        )
    };
    let whole = run_job(&job_of(&whole_dir, &whole_target), &whole_dir, &[]).await;
    let reports = run_shards(&job_of(&shards_dir, &shards_target), &shards_dir, 3).await;

    let seen = received(&shards_target);
    assert_eq!((seen.len(), seen.values().all(|&n| n == 1)), (N, true), "each record once: {seen:?}");
    for r in &reports {
        assert_eq!(read_json(r)["source"]["parts"], 2, "two partitions a shard");
    }
    let merged_path = shards_dir.join("merged.json");
    let (code, table, err) = merge(&reports, &["--report-json", merged_path.to_str().expect("p")]).await;
    assert_eq!(code, Some(0), "{table}{err}");
    assert_same_books(&read_json(&merged_path), &whole);
}

/// Three dispatchers of one job, shard 0 coordinating, each with two replayer daemons:
/// (dispatcher, its replayers, its directory).
struct Sharded {
    shards: Vec<(Daemon, Vec<Guard>, TestDir)>,
}

impl Sharded {
    /// Starts shard 0, then the others joining it; `n` records 10 ms apart, keyed by user,
    /// each shard writing raw rows and its report in its own directory.
    fn start(target: &Capture, n: usize) -> Sharded {
        let recording = temp_dir("sharded-rec");
        let path = recording.join("r.jsonl");
        let lines: Vec<String> = (0..n)
            .map(|i| {
                let user = i * 7 % USERS;
                format!(
                    r#"{{"ts":{},"method":"GET","url":"/u/{user}/{i}","headers":{{"X-User":"u{user}"}}}}"#,
                    T0 + i * 10
                )
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).expect("write");
        let mut shards = Vec::new();
        let mut coordinator = String::new();
        for i in 0..3 {
            let dir = temp_dir(&format!("sharded-{i}"));
            // Each shard its own copy of the recording: the split must not need a shared file.
            let own = dir.join("r.jsonl");
            std::fs::copy(&path, &own).expect("copy");
            let text = format!(
                "[job]\nid = \"sharded\"\ntarget = \"{}\"\nmin_replayers = 2\n[fetcher.file]\npath = \"{}\"\n\
                 [analyzer]\nhash_field = \"header:X-User\"\n[thresholds]\n\"*\" = [\"count >= {n}\"]\n{}",
                target.url(),
                own.display(),
                raw_sink(&dir)
            );
            let job = dir.join("job.toml");
            std::fs::write(&job, text).expect("job");
            let report = dir.join("report.json");
            let shard = format!("{i}/3");
            let coordinator_url = format!("http://{coordinator}");
            let mut extra = vec!["--shard", &shard, "--report-json", report.to_str().expect("p")];
            if i > 0 {
                extra.extend(["--coordinator", &coordinator_url]);
            }
            let d = dispatcher_with(&job, "127.0.0.1:0", &extra);
            if i == 0 {
                coordinator = d.grpc_url.trim_start_matches("http://").to_owned();
            }
            let replayers = (0..2).map(|r| spawn_replayer(&d.grpc_url, &format!("s{i}-r{r}"))).collect();
            shards.push((d, replayers, dir));
        }
        Sharded { shards }
    }

    fn dir(&self, i: usize) -> &Path {
        &self.shards[i].2
    }

    /// Waits for shard `i`'s dispatcher to exit; its exit code.
    async fn exit(&mut self, i: usize) -> Option<i32> {
        let guard = std::mem::replace(
            &mut self.shards[i].0.guard,
            Guard(std::process::Command::new("true").spawn().expect("true")),
        );
        wait_exit(guard).await.code()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinated_shards_start_together_follow_one_schedule_and_merge_to_one_report() {
    const N: usize = 90;
    let target = Capture::start().await;
    let mut sharded = Sharded::start(&target, N);
    for i in 0..3 {
        assert_eq!(sharded.exit(i).await, Some(0), "shard {i}/3 ran");
    }
    let seen = received(&target);
    assert_eq!((seen.len(), seen.values().all(|&n| n == 1)), (N, true), "each record once: {seen:?}");
    // One schedule: a record recorded at T0 + 10 ms × i is due at start + 10 ms × i,
    // whichever shard released it (raw sink due instants, µs).
    let mut starts = Vec::new();
    for i in 0..3 {
        let rows = raw_endpoints_by_due(sharded.dir(i));
        let dues = raw_dues(sharded.dir(i));
        assert!(!rows.is_empty(), "shard {i} released some records");
        for (due, endpoint) in dues.iter().zip(&rows) {
            let place: i64 = endpoint.rsplit('/').next().expect("place").parse().expect("number");
            starts.push(due - place * 10_000);
        }
    }
    // The clocks here are one clock: a shard's measured offset is the error of its reading
    // (at most half a round trip, which a loaded machine stretches), and shifts its start by
    // as much.
    let reports: Vec<PathBuf> = (0..3).map(|i| sharded.dir(i).join("report.json")).collect();
    let coordinator = read_json(&reports[0]);
    let shards = coordinator["shards"].as_array().expect("the coordinator lists its shards");
    let offsets: Vec<i64> =
        shards.iter().map(|s| (s["clock_offset_ms"].as_f64().expect("ms") * 1000.0) as i64).collect();
    let misread = offsets.iter().chain([&0]).max().expect("0") - offsets.iter().chain([&0]).min().expect("0");
    let (first, last) = (starts.iter().min().expect("dues"), starts.iter().max().expect("dues"));
    assert!(
        last - first <= 1_000 + misread,
        "every shard's dues follow one start within 1 ms and the clocks' misreading ({misread} µs): spread {} µs",
        last - first
    );

    // The coordinator's report is the whole job's: its shards' results merged into its own.
    assert_eq!(shards.len(), 2, "{shards:?}");
    for s in shards {
        assert_eq!(s["state"], "finished", "{s}");
        assert!(s["clock_offset_ms"].as_f64().expect("offset").abs() < 5.0, "{s}");
    }
    assert_eq!(coordinator["shard"], serde_json::Value::Null, "not one shard's share");
    assert_eq!(coordinator["totals"]["input"], N as u64);
    assert_eq!(coordinator["totals"]["sent"], N as u64);
    assert_eq!(coordinator["total"]["requests"], N as u64, "the merged histogram holds every request");
    assert_eq!(coordinator["totals"]["balanced"], true);
    // Judged once, on the whole job: each shard alone sent fewer than N.
    assert_eq!(coordinator["thresholds"][0]["measured"], N as f64);
    assert_eq!(coordinator["thresholds_passed"], true);
    let ids: BTreeSet<&str> = coordinator["replayers"]
        .as_array()
        .expect("replayers")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 6, "every shard's replayers: {ids:?}");
    // The shards' own reports are their shares: merged, shards 1 and 2 are part of the job,
    // and the job's threshold fails on them.
    let shares = sharded.dir(0).join("shares.json");
    let (code, table, err) = merge(&reports[1..], &["--report-json", shares.to_str().expect("p")]).await;
    assert_eq!(code, Some(99), "{table}{err}");
    let shares = read_json(&shares);
    let sent = |r: &serde_json::Value| r["totals"]["sent"].as_u64().expect("sent");
    assert!(sent(&shares) < N as u64 && sent(&shares) > 0, "shards 1 and 2 sent part of the job");
}

/// A shard killed mid-job is named lost in the coordinator's report (exit 3); a stop of the
/// coordinator's job reaches the shard left (exit 4, stopped by the coordinator); a shard
/// whose coordinator is gone stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_is_named_a_stop_reaches_every_shard_and_no_shard_outlives_its_coordinator() {
    let target = Capture::start().await;
    // 3,000 records 10 ms apart: 30 s, far longer than the test.
    let mut sharded = Sharded::start(&target, 3_000);
    assert!(wait_until(|| target.requests().len() > 30, Duration::from_secs(20)).await, "the job runs");
    // Once the coordinator has shard 2's results (its replayers in the coordinator's /status).
    let admin = sharded.shards[0].0.admin.clone();
    let has_results = || async { http("GET", &admin, "/status").await.1.contains("s2-r0") };
    assert!(
        wait_until_async(has_results, Duration::from_secs(20)).await,
        "shard 2's results reach the coordinator"
    );
    sharded.shards[2].0.guard.0.kill().expect("kill shard 2");
    let (status, _) = http("POST", &sharded.shards[0].0.admin.clone(), "/job/stop").await;
    assert_eq!(status, 202);
    assert_eq!(sharded.exit(1).await, Some(4), "shard 1 stopped with the coordinator's job");
    assert_eq!(sharded.exit(0).await, Some(3), "the coordinator names the lost shard");
    let coordinator = read_json(&sharded.dir(0).join("report.json"));
    let lost: Vec<&serde_json::Value> =
        coordinator["shards"].as_array().expect("shards").iter().filter(|s| s["state"] == "lost").collect();
    assert_eq!(lost.len(), 1, "{}", coordinator["shards"]);
    assert_eq!(lost[0]["shard"], "2/3");
    // What the lost shard had scheduled and not reported done is counted, and named.
    assert_eq!(coordinator["totals"]["balanced"], true, "{}", coordinator["totals"]);
    assert!(coordinator["totals"]["dropped"]["shard_lost"].as_u64().is_some(), "{}", coordinator["totals"]);
    let shard1 = read_json(&sharded.dir(1).join("report.json"));
    assert_eq!(shard1["state"], "stopped");
    assert!(
        shard1["aborted_by"].as_str().expect("why").contains("the coordinator"),
        "{}",
        shard1["aborted_by"]
    );

    // A coordinator that is gone stops its shards.
    let mut again = Sharded::start(&target, 3_000);
    let before = target.requests().len();
    assert!(wait_until(|| target.requests().len() > before + 30, Duration::from_secs(20)).await, "it runs");
    again.shards[0].0.guard.0.kill().expect("kill the coordinator");
    for i in 1..3 {
        assert_eq!(again.exit(i).await, Some(4), "shard {i} stops without its coordinator");
        let report = read_json(&again.dir(i).join("report.json"));
        assert!(report["aborted_by"].as_str().expect("why").contains("gone"), "{}", report["aborted_by"]);
    }
}

/// The coordinator's live page charts the whole job: its shards' seconds are added to its
/// own rows, so the rows' requests add up to every record, not to shard 0's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinators_live_charts_count_every_shards_requests() {
    const N: usize = 60;
    let target = Capture::start().await;
    let dir = temp_dir("sharded-live");
    let path = recording(&dir, N, 1).remove(0);
    let mut daemons = Vec::new();
    let mut coordinator = String::new();
    for i in 0..2 {
        let job = dir.join(format!("job{i}.toml"));
        let text = format!(
            "[job]\nid = \"live\"\ntarget = \"{}\"\n[fetcher.file]\npath = \"{}\"\n",
            target.url(),
            path.display()
        );
        std::fs::write(&job, text).expect("write job");
        let shard = format!("{i}/2");
        let url = format!("http://{coordinator}");
        let mut extra = vec!["--shard", &shard];
        extra.push(if i == 0 { "--serve-forever" } else { "--coordinator" });
        if i > 0 {
            extra.push(&url);
        }
        let d = dispatcher_with(&job, "127.0.0.1:0", &extra);
        if i == 0 {
            coordinator = d.grpc_url.trim_start_matches("http://").to_owned();
        }
        let replayer = spawn_replayer(&d.grpc_url, &format!("s{i}"));
        daemons.push((d, replayer));
    }
    let admin = daemons[0].0.admin.clone();
    let finished = wait_until_async(
        || async { http("GET", &admin, "/status").await.1.contains("\"state\":\"finished\"") },
        Duration::from_secs(60),
    )
    .await;
    assert!(finished, "the job ends");
    assert_eq!(target.requests().len(), N);
    // A page opened now gets every closed second; the shards' are in two seconds after.
    let charted = || async {
        let rows = first_event(&admin).await["rows"].as_array().cloned().unwrap_or_default();
        rows.iter().map(|r| r["requests"].as_u64().expect("requests")).sum::<u64>()
    };
    let all = wait_until_async(|| async { charted().await == N as u64 }, Duration::from_secs(20)).await;
    assert!(all, "the charts count {} of {N} requests", charted().await);
}
