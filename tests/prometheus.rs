//! GET /metrics scraped by a real Prometheus (Debian's package, installed by scripts/test)
//! during a replay; Prometheus' query API must give the same counts as the report.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Prometheus' instant query result as a number (the first series), if any.
async fn query(prom: &str, q: &str) -> Option<f64> {
    let path = format!(
        "/api/v1/query?query={}",
        q.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D").replace('"', "%22")
    );
    let (code, body) = http("GET", prom, &path).await;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_same_counts_as_the_report() {
    let bin = which("prometheus")
        .expect("prometheus is not installed: scripts/test installs it (apt-get install prometheus)");
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
    let prom = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reprise\n    static_configs:\n      - targets: ['{admin}']\n"),
    )
    .expect("config");
    let _prometheus = Guard(
        Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let ready =
        wait_until_async(|| async { http_ok(&prom, "/-/ready").await }, Duration::from_secs(30)).await;
    assert!(ready, "prometheus did not become ready");
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
        || async { query(&prom, r#"sum(reprise_requests_total{job_id="prom"})"#).await == Some(150.0) },
        Duration::from_secs(20),
    )
    .await;
    assert!(
        counted,
        "prometheus saw {:?} requests",
        query(&prom, r#"sum(reprise_requests_total{job_id="prom"})"#).await
    );
    assert_eq!(
        query(&prom, r#"sum(reprise_requests_total{job_id="prom",outcome="failed"})"#).await,
        Some(failed)
    );
    assert_eq!(query(&prom, r#"sum(reprise_latency_seconds_count{job_id="prom"})"#).await, Some(sent));
    assert_eq!(query(&prom, r#"sum(reprise_responses_total{job_id="prom",class="5xx"})"#).await, Some(30.0));
    assert_eq!(query(&prom, r#"reprise_scheduled_total{job_id="prom"}"#).await, Some(150.0));
    assert_eq!(
        query(&prom, r#"reprise_job_recorded_seconds{job_id="prom"}"#).await,
        Some(2.98),
        "149 × 20 ms replayed"
    );
    let p99 = query(
        &prom,
        r#"histogram_quantile(0.99, sum by (le) (reprise_latency_seconds_bucket{job_id="prom"}))"#,
    )
    .await;
    assert!(p99.is_some_and(|v| v > 0.0 && v < 5.0), "a p99 from the buckets: {p99:?}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

async fn http_ok(addr: &str, path: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok() && http("GET", addr, path).await.0 == 200
}

async fn wait_until_async<F, Fut>(mut f: F, limit: Duration) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
