//! `[reporter.influxdb]` against VictoriaMetrics (Debian's package, installed by scripts/test),
//! which takes both InfluxDB write APIs: the points written during a real replay, read back
//! with /api/v1/export, add up to the report's counts. A dead sink drops (and counts) points
//! without disturbing the replay.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

struct Vm {
    addr: String,
    _guard: Guard,
}

async fn victoria_metrics(dir: &std::path::Path) -> Vm {
    let addr = format!("127.0.0.1:{}", free_port());
    let guard = Guard(
        Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr={addr}"))
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is not installed: scripts/test installs it (apt-get install victoria-metrics)"),
    );
    for _ in 0..150 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() && http("GET", &addr, "/health").await.0 == 200
        {
            return Vm { addr, _guard: guard };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("victoria-metrics did not start");
}

impl Vm {
    /// Sum of every sample of `metric` with label job=`job`.
    async fn sum(&self, metric: &str, job: &str) -> f64 {
        let _ = http("GET", &self.addr, "/internal/force_flush").await;
        let selector = format!("{{__name__=\"{metric}\",job=\"{job}\"}}");
        let encoded: String = selector
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (code, body) = http("GET", &self.addr, &format!("/api/v1/export?match%5B%5D={encoded}")).await;
        assert_eq!(code, 200, "{body}");
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .flat_map(|v| v["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x.as_f64())
            .sum()
    }
}

fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let lines: Vec<String> = (0..120)
        .map(|i| {
            let status = if i % 4 == 0 { r#","headers":{"X-Status":"500"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"/v/{}"{status}}}"#, T0 + i * 20, i % 2)
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_written_during_a_replay_add_up_to_the_report_v1_and_v2() {
    let dir = temp_dir("influx");
    let vm = victoria_metrics(&dir).await;
    let rec = recording(&dir);
    for (job_id, sink) in [
        (
            "v1job",
            format!(
                "[reporter.influxdb]\nurl = \"http://{}\"\ndatabase = \"reprise\"\nuser = \"u\"\npassword = \"p\"\n",
                vm.addr
            ),
        ),
        (
            "v2job",
            format!("[reporter.influxdb]\nurl = \"http://{}\"\norg = \"o\"\nbucket = \"b\"\n", vm.addr),
        ),
    ] {
        let target = Capture::start().await;
        let job = write_job(&dir, &target.url(), &rec, &format!("id = \"{job_id}\"\nspeed = 1"), &sink);
        let r = run_job(&job, &dir, &["--replayers", "2"]).await;
        let (sent, failed) =
            (r["totals"]["sent"].as_f64().expect("sent"), r["totals"]["failed"].as_f64().expect("f"));
        assert_eq!((sent, failed), (120.0, 30.0));
        assert_eq!(r["sinks"][0]["dropped"], 0, "{}", r["sinks"]);
        assert!(r["sinks"][0]["written"].as_u64().expect("written") > 0);
        // The store makes fresh samples searchable a second or two after it takes them.
        let mut seen = 0.0;
        for _ in 0..100 {
            seen = vm.sum("reprise_requests_count", job_id).await;
            if seen >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(seen, sent, "{job_id}");
        assert_eq!(vm.sum("reprise_requests_failed", job_id).await, failed, "{job_id}");
        assert_eq!(
            vm.sum("reprise_status_count", job_id).await,
            sent,
            "{job_id}: every response has a class"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_drops_its_points_and_the_replay_goes_on() {
    let dir = temp_dir("influx-dead");
    let target = Capture::start().await;
    let rec = recording(&dir);
    let sink = format!(
        "[reporter.influxdb]\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"x\"\ntimeout = \"200ms\"\n",
        free_port()
    );
    let job = write_job(&dir, &target.url(), &rec, "speed = 2", &sink);
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 120, "the replay is whole");
    assert_eq!(r["totals"]["balanced"], true);
    assert_eq!(r["sinks"][0]["written"], 0);
    assert!(r["sinks"][0]["dropped"].as_u64().expect("dropped") > 0, "{}", r["sinks"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_answers_costs_the_replay_nothing() {
    // Accepts connections and reads, but never answers: every write times out.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = hole.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    let dir = temp_dir("influx-slow");
    let target = Capture::start().await;
    let rec = recording(&dir);
    let sink =
        format!("[reporter.influxdb]\nurl = \"http://{addr}\"\ndatabase = \"x\"\ntimeout = \"300ms\"\n");
    let job = write_job(&dir, &target.url(), &rec, "speed = 2", &sink);
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 120, "the replay is whole");
    let lag = r["total"]["schedule_lag_ms"]["p99"].as_f64().expect("lag");
    // A sink in the way would hold requests for its 300 ms timeout, again and again.
    assert!(lag < 250.0, "requests stayed on schedule: p99 lag {lag} ms");
    assert_eq!(r["sinks"][0]["written"], 0);
    assert!(r["sinks"][0]["dropped"].as_u64().expect("dropped") > 0, "{}", r["sinks"]);
}
