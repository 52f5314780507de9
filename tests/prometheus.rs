//! GET /metrics scraped by a real Prometheus (Debian's package, installed by scripts/test)
//! during a replay; Prometheus' query API must give the same counts as the report.

mod common;

use std::time::Duration;

use common::prom::prometheus;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_same_counts_as_the_report() {
    let target = Capture::start().await;
    let dir = temp_dir("prometheus");
    let lines: Vec<String> = (0..150)
        .map(|i| {
            let status = if i % 5 == 0 { r#","headers":{"X-Status":"503"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"/p/{}"{status}}}"#, T0 + i * 20, i % 3)
        })
        .collect();
    std::fs::write(dir.join("r.jsonl"), lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &dir.join("r.jsonl"), "id = \"prom\"\nspeed = 1", "");
    // --serve-forever: /metrics stays up after the job so the last scrape sees the end.
    let (guard, line) = spawn_daemon(&[
        "dispatcher",
        "--config",
        job.to_str().expect("p"),
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--serve-forever",
    ]);
    let _dispatcher = guard;
    let admin = field(&line, "http");
    let prom = prometheus(&dir, &[&admin]).await;
    let _r = spawn_replayer(&format!("http://{}", field(&line, "grpc")), "r1");

    // Finished, and the final figures merged.
    let done = wait_until_async(
        || async { http("GET", &admin, "/status").await.1.contains("\"state\":\"finished\"") },
        Duration::from_secs(20),
    )
    .await;
    assert!(done, "the job finished");
    let (_, report) = http("GET", &admin, "/report").await;
    let report: serde_json::Value = serde_json::from_str(&report).expect("report");
    let (sent, failed) =
        (report["totals"]["sent"].as_f64().expect("sent"), report["totals"]["failed"].as_f64().expect("f"));
    assert_eq!((sent, failed), (150.0, 30.0));

    let counted = wait_until_async(
        || async { prom.query(r#"sum(reprise_requests_total{job_id="prom"})"#).await == Some(150.0) },
        Duration::from_secs(20),
    )
    .await;
    assert!(
        counted,
        "prometheus saw {:?} requests",
        prom.query(r#"sum(reprise_requests_total{job_id="prom"})"#).await
    );
    assert_eq!(
        prom.query(r#"sum(reprise_requests_total{job_id="prom",outcome="failed"})"#).await,
        Some(failed)
    );
    assert_eq!(prom.query(r#"sum(reprise_latency_seconds_count{job_id="prom"})"#).await, Some(sent));
    assert_eq!(prom.query(r#"sum(reprise_responses_total{job_id="prom",class="5xx"})"#).await, Some(30.0));
    assert_eq!(prom.query(r#"reprise_scheduled_total{job_id="prom"}"#).await, Some(150.0));
    assert_eq!(
        prom.query(r#"reprise_job_recorded_seconds{job_id="prom"}"#).await,
        Some(2.98),
        "149 × 20 ms replayed"
    );
    let p99 = prom
        .query(r#"histogram_quantile(0.99, sum by (le) (reprise_latency_seconds_bucket{job_id="prom"}))"#)
        .await;
    assert!(p99.is_some_and(|v| v > 0.0 && v < 5.0), "a p99 from the buckets: {p99:?}");
}
