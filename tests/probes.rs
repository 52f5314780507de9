//! A replayer's own HTTP port (`reprise replayer --http ADDR`): `/healthz` answers while the
//! process lives, `/readyz` only while it is subscribed to a dispatcher, and `/metrics`
//! counts what it received and sent. Through the real binary, over loopback.

mod common;

use std::time::Duration;

use common::*;

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayers_probes_follow_its_subscription_and_its_metrics_count_the_job() {
    let target = Capture::start().await;
    let dir = temp_dir("probes");
    let job = write_job(&dir, &target.url(), &gets_every(&dir, 40, 5), "", "");
    let grpc = format!("127.0.0.1:{}", free_port());
    let (_replayer, line) = spawn_daemon(&[
        "replayer",
        "--dispatcher",
        &format!("http://{grpc}"),
        "--id",
        "probe \"one\"",
        "--http",
        "127.0.0.1:0",
    ]);
    let http_addr = field(&line, "http");

    // No dispatcher yet: alive, not ready.
    assert_eq!(http(&http_addr, "/healthz").await, (200, "ok\n".to_owned()));
    let (code, why) = http(&http_addr, "/readyz").await;
    assert_eq!((code, why.as_str()), (503, "not subscribed to a dispatcher\n"));
    let m = http(&http_addr, "/metrics").await.1;
    assert_eq!(sample(&m, "reprise_replayer_connected"), 0.0);
    assert!(m.contains("reprise_replayer_info{id=\"probe \\\"one\\\"\",dispatcher=\"http://"), "{m}");

    // It subscribes by itself once the dispatcher listens, and takes the job.
    let (d, _) = spawn_daemon(&[
        "dispatcher",
        "--config",
        job.to_str().expect("p"),
        "--grpc",
        &grpc,
        "--http",
        "127.0.0.1:0",
        "--serve-forever",
    ]);
    let ready = answers(&http_addr, "/readyz", 200).await;
    assert!(ready, "ready once subscribed");
    assert_eq!(sample(&http(&http_addr, "/metrics").await.1, "reprise_replayer_connected"), 1.0);
    assert!(wait_until(|| target.requests().len() == 40, Duration::from_secs(10)).await);
    // The job's last statistics are in the metrics once the job has ended at the replayer.
    let mut m = String::new();
    for _ in 0..100 {
        m = http(&http_addr, "/metrics").await.1;
        if sample(&m, "reprise_replayer_jobs_total") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&m, "reprise_replayer_jobs_total"), 1.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_job_running"), 0.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_records_received_total"), 40.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_requests_sent_total"), 40.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_records_cancelled_total"), 0.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_records_held"), 0.0, "{m}");
    assert_eq!(sample(&m, "reprise_replayer_schedule_lag_seconds_count"), 40.0, "{m}");
    assert!(m.contains("reprise_replayer_schedule_lag_seconds{quantile=\"0.99\"}"), "{m}");

    // The dispatcher's job over (it takes no more replayers) or the dispatcher gone, the
    // replayer is alive but not ready.
    drop(d);
    assert!(answers(&http_addr, "/readyz", 503).await);
    assert_eq!(http(&http_addr, "/healthz").await.0, 200);
    assert_eq!(http(&http_addr, "/nothing").await.0, 404);
    assert_eq!(http_json("POST", &http_addr, "/readyz", "").await.0, 405);
}

/// Whether `path` on `addr` answers `status` within 10 s.
async fn answers(addr: &str, path: &str, status: u16) -> bool {
    wait_until_async(|| async { http(addr, path).await.0 == status }, Duration::from_secs(10)).await
}

/// GET `path` on `addr`.
async fn http(addr: &str, path: &str) -> (u16, String) {
    common::http("GET", addr, path).await
}
