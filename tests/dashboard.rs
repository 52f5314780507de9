//! deploy/grafana/reprise.json, the Grafana dashboard, against a real Prometheus scraping a
//! real replay: every query of every panel (with Grafana's variables put in as Grafana would)
//! must return data, and data that moved, while a follow-mode Kafka replay runs on two
//! replayers, one of them sending to a port where nothing listens. The replay has every kind
//! of figure the dashboard shows: answers, 5xx, connection errors, a late record dropped,
//! malformed input, source lag. Also checked: the dashboard's layout and variables hold
//! together, and every panel over the dispatcher's figures is filtered by the `job_id`
//! variable.
//!
//! No Grafana runs here (none is installable offline): what Grafana itself would say of the
//! JSON is checked only by its structure below.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::kafka::kafka;
use common::prom::{encode, prometheus};
use common::*;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../deploy/grafana/reprise.json");

/// What Grafana puts in for `$__rate_interval` with a 1 s scrape interval (four scrapes).
const RATE_INTERVAL: &str = "4s";

/// Queries whose figures stay at zero in this replay by design: nobody is refused, and a
/// follow-mode job without `[job] end` has nothing out of range.
const ZERO_HERE: [&str; 2] = ["reprise_refused_total", "reprise_out_of_range_total"];

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

fn record(ts_ms: i64, n: usize) -> String {
    let method = if n.is_multiple_of(3) { "POST" } else { "GET" };
    let headers = match n % 5 {
        0 => r#","headers":{"X-Status":"503"}"#,
        1 => r#","headers":{"X-Delay-Ms":"30"}"#,
        _ => "",
    };
    format!(r#"{{"ts":{ts_ms},"method":"{method}","url":"/d/{}"{headers}}}"#, n % 16)
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        all.push(p);
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Every query: (panel title, expression, format).
fn queries(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr =
                t["expr"].as_str().unwrap_or_else(|| panic!("a target without expr in {}", p["title"]));
            let format = t["format"].as_str().unwrap_or("time_series");
            out.push((p["title"].as_str().unwrap_or("").to_owned(), expr.to_owned(), format.to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_holds_together_and_shows_what_a_replay_needs() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("deploy/grafana/reprise.json is JSON");
    assert_eq!(dash["uid"], "reprise-replay");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let job = var("job_id");
    assert_eq!(job["definition"], "label_values(reprise_job_running, job_id)");
    assert_eq!((job["multi"].as_bool(), job["includeAll"].as_bool()), (Some(true), Some(true)));

    let all = panels(&dash);
    let ids: BTreeSet<i64> = all.iter().map(|p| p["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");
    // Top-level panels fit the 24 columns and never overlap.
    let mut cells = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        let kind = p["type"].as_str().expect("type");
        assert!(["row", "stat", "timeseries", "heatmap"].contains(&kind), "panel type {kind}");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24 && w > 0 && h > 0, "{} at {g}", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{} overlaps another panel at ({cx}, {cy})", p["title"]);
            }
        }
        if kind != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
        }
    }

    let qs = queries(&dash);
    for (title, expr, _) in &qs {
        // The replayers' own figures carry no job; everything of the dispatcher's is
        // filtered by the variable.
        if !expr.contains("reprise_replayer_") {
            assert!(expr.contains(r#"job_id=~"$job_id""#), "{title}: {expr}");
        }
    }
    // What the dashboard must show.
    let has = |needle: &str| qs.iter().any(|(_, e, _)| e.contains(needle));
    for family in [
        "reprise_requests_total",
        "sum by (kind) (rate(reprise_errors_total",
        "sum by (reason) (rate(reprise_dropped_total",
        "reprise_replayers_connected",
        "reprise_fleet_replayer_lag_seconds",
        "reprise_job_recorded_seconds",
        "reprise_source_lag_seconds",
    ] {
        assert!(has(family), "no panel shows {family}");
    }
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            has(&format!("histogram_quantile({q}, sum by (le) (rate(reprise_latency_seconds_bucket")),
            "p{q}"
        );
    }
    let heatmap = all.iter().find(|p| p["type"] == "heatmap").expect("a latency heatmap");
    assert_eq!(heatmap["targets"][0]["format"], "heatmap");
    assert!(
        heatmap["targets"][0]["expr"].as_str().is_some_and(|e| e.contains("reprise_latency_seconds_bucket"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_the_dashboard_returns_data_from_a_real_replay() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let kafka = kafka().await;
    let target = Capture::start().await;
    let dir = temp_dir("dashboard");
    let topic = kafka.topic("dash").await;
    let start = now();
    // A backlog of 40 records recorded over the last 4 s, and one unit that is not a record.
    let base = (start * 1e3) as i64 - 4_000;
    for n in 0..40usize {
        let ts = base + n as i64 * 50;
        kafka.send(&topic, (n % 3) as i32, ts, &record(ts, n)).await;
    }
    kafka.send(&topic, 0, base, "not a record").await;
    let job = kafka.job(
        &dir,
        &target.url(),
        "id = \"dash\"\nspeed = 1\nmin_replayers = 2\nreorder_window = \"200ms\"\nlate = \"drop\"",
        &format!("topic = \"{topic}\"\nfollow = true"),
    );
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", None);
    let replayer = |id: &str, extra: &[&str]| {
        let mut a =
            vec!["replayer", "--dispatcher", &dispatcher.grpc_url, "--id", id, "--http", "127.0.0.1:0"];
        a.extend(extra);
        spawn_daemon(&a)
    };
    let (_r1, line1) = replayer("r1", &[]);
    // r2 sends to a port where nothing listens: every request of its share is an error.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (_r2, line2) = replayer("r2", &["--target", &nowhere]);
    let prom = prometheus(&dir, &[&dispatcher.admin, &field(&line1, "http"), &field(&line2, "http")]).await;

    // Every figure must move while Prometheus watches: from its first scrape of all three.
    let scraping = wait_until_async(
        || async { prom.query("count(up == 1)").await == Some(3.0) },
        Duration::from_secs(20),
    )
    .await;
    assert!(scraping, "prometheus scrapes the dispatcher and both replayers");
    // Live traffic for 6 s, with a record far older than the stream (late, dropped) and
    // another malformed unit.
    for n in 40..100usize {
        let ts = (now() * 1e3) as i64;
        kafka.send(&topic, (n % 3) as i32, ts, &record(ts, n)).await;
        if n == 80 {
            kafka.send(&topic, 1, ts - 5_000, &record(ts - 5_000, 0)).await;
            kafka.send(&topic, 2, ts, "{\"ts\":").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = |q: &'static str, at_least: f64| {
        let prom = &prom;
        async move { prom.query(q).await.is_some_and(|v| v >= at_least) }
    };
    for (q, n) in [
        (r#"sum(reprise_requests_total{job_id="dash"})"#, 95.0),
        (r#"sum(reprise_errors_total{job_id="dash"})"#, 1.0),
        (r#"sum(reprise_dropped_total{job_id="dash",reason="late"})"#, 1.0),
        (r#"sum(reprise_malformed_total{job_id="dash"})"#, 2.0),
    ] {
        let got = wait_until_async(|| seen(q, n), Duration::from_secs(20)).await;
        assert!(got, "prometheus saw {:?} for {q}, want at least {n}", prom.query(q).await);
    }
    // Four more scrapes, so that the last rates are taken over the whole replay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = now();

    let values =
        prom.api(&format!("/api/v1/label/job_id/values?match[]={}", encode("reprise_job_running"))).await;
    assert_eq!(values, serde_json::json!(["dash"]), "the job_id variable's values");

    let mut failures = Vec::new();
    for (title, expr, format) in queries(&dash) {
        let q = expr.replace("$job_id", "dash").replace("$__rate_interval", RATE_INTERVAL);
        assert!(!q.contains('$'), "{title}: a variable the test does not know in {expr}");
        let series = prom.query_range(&q, start, end, 1.0).await;
        let points: Vec<f64> = series
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v[1].as_str().and_then(|x| x.parse().ok()))
            .collect();
        let moved = points.iter().any(|v| v.is_finite() && *v > 0.0);
        if points.is_empty() {
            failures.push(format!("{title}: no data for {q}"));
        } else if !moved && !ZERO_HERE.iter().any(|z| q.contains(z)) {
            failures.push(format!("{title}: only zeros for {q}"));
        }
        if format == "heatmap" {
            let les: BTreeSet<String> =
                series.iter().filter_map(|s| s["metric"]["le"].as_str().map(str::to_owned)).collect();
            assert_eq!(les.len(), 15, "{title}: a series per bucket, +Inf included: {les:?}");
        }
    }
    assert!(failures.is_empty(), "panels without data:\n{}", failures.join("\n"));

    let (code, _) = http("POST", &dispatcher.admin, "/job/stop").await;
    assert_eq!(code, 202, "stop accepted");
    assert_eq!(wait_exit(dispatcher.guard).await.code(), Some(4), "a stopped job exits 4");
}
