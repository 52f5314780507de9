//! `[fetcher] type = "s3"` against moto's S3 server (from PyPI; scripts/test starts one for the
//! suite and passes its URL in REPRISE_TEST_S3, else each test starts its own). Recordings
//! are uploaded across time-partitioned keys, gzipped and plain, with records interleaved
//! across objects; the replay through the real binary must deliver every record in range
//! exactly once and in time order, never fetch objects outside the range, and name a
//! corrupt object in the report.

mod common;

use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{S3, s3};
use common::*;

/// Credentials moto accepts; the binary gets them the standard way, from the environment.
const ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

impl S3 {
    async fn bucket(&self, name: &str) -> String {
        let name = format!("{name}-{}", std::process::id());
        self.client.create_bucket().bucket(&name).send().await.expect("create bucket");
        name
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> u64 {
        let len = body.len() as u64;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("put");
        len
    }

    fn job(
        &self,
        dir: &std::path::Path,
        target: &str,
        bucket: &str,
        job_extra: &str,
        s3_extra: &str,
    ) -> std::path::PathBuf {
        let text = format!(
            "[job]\ntarget = \"{target}\"\n{job_extra}\n[fetcher]\ntype = \"s3\"\n[fetcher.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{bucket}\"\n{s3_extra}\n",
            self.endpoint
        );
        let path = dir.join("job.toml");
        std::fs::write(&path, text).expect("write job");
        path
    }
}

/// 2026-11-21T10:00:00Z in ms.
const T10: i64 = 1_795_255_200_000;
const HOUR_MS: i64 = 3_600_000;

fn line(ts: i64, n: usize) -> String {
    format!("{{\"ts\":{ts},\"method\":\"GET\",\"url\":\"/r/{n}\"}}\n")
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).expect("gz");
    e.finish().expect("gz")
}

async fn run(job: &std::path::Path, dir: &std::path::Path) -> (std::process::Output, serde_json::Value) {
    let report = dir.join("report.json");
    let out = reprise_env(
        args(&["run", job.to_str().expect("path"), "--report-json", report.to_str().expect("path")]),
        ENV,
    )
    .await;
    let json = std::fs::read(&report).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    (out, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_across_hours_replay_once_each_in_time_order_within_the_range() {
    let s3 = s3().await;
    let target = Capture::start().await;
    let dir = temp_dir("s3-order");
    let bucket = s3.bucket("order").await;
    // 100 records 20 ms apart across the 10:00 → 11:00 boundary, alternating between two
    // objects per hour (one gzipped, one plain): every object interleaves with another.
    let first = T10 + HOUR_MS - 1_000;
    let mut objects: [String; 4] = Default::default();
    for n in 0..100 {
        let ts = first + n as i64 * 20;
        let hour = usize::from(ts >= T10 + HOUR_MS);
        objects[hour * 2 + n % 2].push_str(&line(ts, n));
    }
    // Out of range: before begin in hour 10, after end in hour 11.
    objects[0].insert_str(0, &line(first - 600, 900));
    objects[3].push_str(&line(first + 4_000, 901));
    let keys = [
        "logs/2026/11/21/10/a.jsonl.gz",
        "logs/2026/11/21/10/b.jsonl",
        "logs/2026/11/21/11/a.jsonl.gz",
        "logs/2026/11/21/11/b.jsonl",
    ];
    let mut fetched_bytes = 0;
    for (key, text) in keys.iter().zip(&objects) {
        let body = if key.ends_with(".gz") { gz(text) } else { text.clone().into_bytes() };
        fetched_bytes += s3.put(&bucket, key, body).await;
    }
    // Never fetched: hours outside the range, and a key the glob does not match. Their
    // content is garbage, so a fetch would show as malformed input.
    for key in ["logs/2026/11/21/08/a.jsonl", "logs/2026/11/21/13/a.jsonl", "logs/2026/11/21/10/notes.txt"] {
        s3.put(&bucket, key, b"not a recording\n".to_vec()).await;
    }
    let job_extra = format!("begin = {first}\nend = {}\nreorder_window = \"500ms\"", first + 99 * 20);
    let job = s3.job(
        &dir,
        &target.url(),
        &bucket,
        &job_extra,
        &format!(
            "key = \"logs/{{yyyy}}/{{MM}}/{{dd}}/{{HH}}/*.jsonl*\"\nconcurrency = 1\n{}",
            raw_sink(&dir)
        ),
    );
    let (out, report) = run(&job, &dir).await;
    assert!(out.status.success(), "reprise failed: {}", String::from_utf8_lossy(&out.stderr));

    let mut got: Vec<String> = target.requests().iter().map(|c| c.path.clone()).collect();
    got.sort_by_key(|p| p.trim_start_matches("/r/").parse::<u32>().unwrap_or(u32::MAX));
    let want: Vec<String> = (0..100).map(|n| format!("/r/{n}")).collect();
    assert_eq!(got, want, "every record in range arrives once");
    let released = raw_endpoints_by_due(&dir);
    let want: Vec<String> = (0..100).map(|n| format!("GET /r/{n}")).collect();
    assert_eq!(released, want, "released in recorded order");
    let totals = &report["totals"];
    assert_eq!(totals["out_of_range"], 2, "{totals}");
    assert_eq!(totals["late"], 0, "{totals}");
    assert_eq!(totals["malformed"], serde_json::json!({}), "nothing outside the range was fetched: {totals}");
    let source = &report["source"];
    assert_eq!(source["kind"], "s3");
    assert_eq!(source["parts"], 4, "only the objects that can hold the range: {source}");
    assert_eq!(source["parts_done"], 4, "{source}");
    assert_eq!(source["bytes"], fetched_bytes, "bytes fetched are those of the four objects: {source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_counted_and_named_and_the_others_replay() {
    let s3 = s3().await;
    let target = Capture::start().await;
    let dir = temp_dir("s3-corrupt");
    let bucket = s3.bucket("corrupt").await;
    let good: String = (0..20).map(|n| line(T10 + n as i64 * 5, n)).collect();
    s3.put(&bucket, "day/2026/11/21/good.jsonl", good.into_bytes()).await;
    let mut broken = gz(&(20..40).map(|n| line(T10 + n as i64 * 5, n)).collect::<String>());
    let cut = broken.len() / 2;
    broken.truncate(cut);
    s3.put(&bucket, "day/2026/11/21/broken.jsonl.gz", broken).await;
    let job = s3.job(
        &dir,
        &target.url(),
        &bucket,
        "speed = \"max\"",
        "prefix = \"day/\"\nkey = \"{yyyy}/{MM}/{dd}/*\"\nretries = 1",
    );
    let (out, report) = run(&job, &dir).await;
    assert!(out.status.success(), "the job goes on: {}", String::from_utf8_lossy(&out.stderr));
    let mut paths: Vec<String> = target.requests().iter().map(|c| c.path.clone()).collect();
    paths.sort();
    assert!(paths.len() >= 20, "the good object replays whole: {paths:?}");
    for n in 0..20 {
        assert!(paths.contains(&format!("/r/{n}")), "/r/{n} missing");
    }
    let source = &report["source"];
    assert_eq!(source["parts_failed"], 1, "{source}");
    let failed = &source["failed"][0];
    assert_eq!(failed["part"], format!("s3://{bucket}/day/2026/11/21/broken.jsonl.gz"), "{source}");
    assert!(failed["reason"].as_str().unwrap_or_default().contains("unreadable"), "{failed}");
    assert_eq!(report["totals"]["malformed"]["unreadable_object"], 1, "{}", report["totals"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("not read: s3://"), "the table names it too: {table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hours_read_one_object_ahead_merge_without_late_records() {
    let s3 = s3().await;
    let target = Capture::start().await;
    let dir = temp_dir("s3-hours");
    let bucket = s3.bucket("hours").await;
    // Six hours, two interleaved objects each: the order holds only if each hour's objects
    // are opened together, and the next hour's when the merge reaches it.
    for h in 0..6 {
        for (k, part) in ["a", "b"].iter().enumerate() {
            let base = T10 + h * HOUR_MS;
            let text: String = (0..10)
                .map(|i| line(base + i * 100 + k as i64 * 50, (h * 20 + i * 2) as usize + k))
                .collect();
            s3.put(&bucket, &format!("2026/11/21/{}/{part}.jsonl", 10 + h), text.into_bytes()).await;
        }
    }
    let job = s3.job(
        &dir,
        &target.url(),
        &bucket,
        "speed = \"max\"",
        "key = \"{yyyy}/{MM}/{dd}/{HH}/*.jsonl\"\nconcurrency = 1\npre_download = 1",
    );
    let (out, report) = run(&job, &dir).await;
    assert!(out.status.success(), "reprise failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut paths: Vec<String> = target.requests().iter().map(|c| c.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 120, "every record once");
    assert_eq!(report["totals"]["late"], 0, "merged in time order: {}", report["totals"]);
    assert_eq!(report["source"]["parts_done"], 12, "{}", report["source"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_buckets_and_patterns_are_clear_errors() {
    let s3 = s3().await;
    let target = Capture::start().await;
    let dir = temp_dir("s3-errors");
    let job = s3.job(&dir, &target.url(), "no-such-bucket-reprise", "", "key = \"*.jsonl\"");
    let (out, _) = run(&job, &dir).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "cannot run: {err}");
    assert!(err.contains("no-such-bucket-reprise") && err.contains("cannot list"), "{err}");

    let job = s3.job(&dir, &target.url(), "b", "", "key = \"{HH}/*.jsonl\"");
    let (out, _) = run(&job, &dir).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a job-file error: {err}");
    assert!(err.contains("fetcher.s3.key") && err.contains("coarser"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_havok_sls_job_reads_the_logs_shipped_to_oss_and_warns_of_sls_api_keys() {
    let s3 = s3().await;
    let target = Capture::start().await;
    let dir = temp_dir("s3-sls");
    let bucket = s3.bucket("sls").await;
    let text: String = (0..12).map(|n| line(T10 + n as i64 * 10, n)).collect();
    s3.put(&bucket, "shipped/2026/11/21/10/part-0.json.gz", gz(&text)).await;
    let job = dir.join("dispatcher.toml");
    std::fs::write(
        &job,
        format!(
            "[job]\ntarget = \"{}\"\nspeed = \"max\"\n[fetcher]\ntype = \"sls\"\n\
             [fetcher.sls]\naccess_key_id = \"id\"\naccess_key_secret = \"secret\"\nregion = \"us-east-1\"\n\
             project = \"p\"\nlogstore = \"l\"\nexpression = \"*\"\nconcurrency = 2\npre-download = 1000\n\
             [fetcher.s3]\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nkey = \"shipped/{{yyyy}}/{{MM}}/{{dd}}/{{HH}}/*\"\n",
            target.url(),
            s3.endpoint
        ),
    )
    .expect("write");
    let (out, report) = run(&job, &dir).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(target.requests().len(), 12, "{err}");
    assert_eq!(report["source"]["parts_done"], 1);
    for key in ["access_key_id", "access_key_secret", "project", "logstore", "expression"] {
        assert_eq!(err.matches(&format!("fetcher.sls.{key}:")).count(), 1, "one warning for {key}: {err}");
    }
    assert!(!err.contains("fetcher.sls.concurrency"), "a used key is not warned of: {err}");
}
