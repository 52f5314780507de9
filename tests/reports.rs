//! Reports a person and a pipeline read: the JSON report's percentiles and per-second
//! history, Locust-style CSV files, and GET /report on a running dispatcher.

mod common;

use std::time::Duration;

use common::*;

fn recording(dir: &std::path::Path, n: usize, gap_ms: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let url = ["/a", "/b,c", "/d"][i % 3];
            let status = if i % 10 == 0 { r#","headers":{"X-Status":"503"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"{url}"{status}}}"#, T0 + i * gap_ms)
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// Splits CSV lines (RFC 4180 quoting).
fn csv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).expect("csv");
    text.lines()
        .map(|line| {
            let mut fields = vec![String::new()];
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                let field = fields.last_mut().expect("a field");
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(String::new()),
                    (c, _) => field.push(c),
                }
            }
            fields
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_reports_agree_and_carry_the_history() {
    let target = Capture::start().await;
    let dir = temp_dir("reports");
    let rec = recording(&dir, 90, 30); // 2.7 s at speed 1: three history seconds or more
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let prefix = dir.join("out");
    let r = run_job(&job, &dir, &["--report-csv", prefix.to_str().expect("p")]).await;

    let total = &r["total"];
    assert_eq!(total["requests"], 90);
    for k in ["min", "p50", "p90", "p95", "p99", "p99.9", "max"] {
        assert!(total["latency_ms"][k].as_f64().is_some(), "latency_ms.{k} in {total}");
    }
    let p = |k: &str| total["latency_ms"][k].as_f64().expect("number");
    assert!(p("p50") <= p("p95") && p("p95") <= p("p99.9") && p("p99.9") <= p("max"), "{total}");
    let history = r["history"].as_array().expect("history");
    assert!(history.len() >= 3, "{history:?}");
    let summed: u64 = history.iter().map(|h| h["requests"].as_u64().expect("n")).sum();
    assert_eq!(summed, 90, "every request is in one second of the history");

    let stats = csv_rows(&dir.join("out_stats.csv"));
    assert_eq!(stats[0][0..4], ["Type", "Name", "Request Count", "Failure Count"]);
    assert_eq!(stats.len(), 1 + 3 + 1, "header, three endpoints, Aggregated");
    let agg = stats.last().expect("aggregated");
    assert_eq!((agg[1].as_str(), agg[2].as_str(), agg[3].as_str()), ("Aggregated", "90", "9"));
    let bc = stats.iter().find(|row| row[1] == "/b,c").expect("a quoted name survives");
    assert_eq!(bc[2], "30");
    assert_eq!(stats[0].len(), agg.len(), "every row has every column");

    let hist = csv_rows(&dir.join("out_stats_history.csv"));
    assert_eq!(hist.len(), history.len() + 1);
    assert_eq!(hist.last().expect("last")[9], "90", "running total of requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_report_serves_the_merged_report_while_the_job_runs() {
    let target = Capture::start().await;
    let dir = temp_dir("report-live");
    let rec = recording(&dir, 100, 30); // 3 s
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", None);
    let _r = spawn_replayer(&dispatcher.grpc_url, "r1");
    assert!(wait_until(|| target.requests().len() >= 50, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(1200)).await; // a statistics report has come in
    let (code, body) = http("GET", &dispatcher.admin, "/report").await;
    assert_eq!(code, 200);
    let live: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(live["state"], "running");
    let sent = live["totals"]["sent"].as_u64().expect("sent");
    assert!(sent > 0 && sent < 100, "merged so far: {sent}");
    assert!(!live["history"].as_array().expect("history").is_empty());
    let exit = wait_exit(dispatcher.guard).await;
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_grouped_by_rules_and_capped() {
    let target = Capture::start().await;
    let dir = temp_dir("grouping");
    let rec = dir.join("r.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let (m, url) = match i % 4 {
                0 => ("GET", format!("/users/{i}")),
                1 => ("POST", format!("/users/{i}")),
                2 => ("GET", format!("/items/sku-{i}?v=1")),
                _ => ("GET", format!("/misc/{i}")),
            };
            format!(r#"{{"ts":{},"method":"{m}","url":"{url}"}}"#, T0 + i)
        })
        .collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let stats = concat!(
        "[stats]\nmax_endpoints = 5\ntemplates = false\nendpoints = [\n",
        "  { pattern = \"^/users/[0-9]+$\", name = \"GET /users/{id}\" },\n",
        "  { pattern = \"^/items/[^/]+$\", name = \"/items/{sku}\" },\n]\n",
        "[thresholds]\n\"GET /users/{id}\" = [\"count == 10\"]\n",
    );
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", stats);
    // Three replayers: the cap holds for the job, whichever replayer sent what.
    let r = run_job(&job, &dir, &["--replayers", "3"]).await;
    assert_eq!(r["endpoints"].as_array().expect("e").len(), 5 + 1, "five kept and other: {}", r["endpoints"]);
    let count = |name: &str| {
        r["endpoints"]
            .as_array()
            .expect("e")
            .iter()
            .find(|e| e["endpoint"] == name)
            .map(|e| e["requests"].clone())
    };
    assert_eq!(count("GET /users/{id}"), Some(10.into()), "{}", r["endpoints"]);
    assert_eq!(count("GET /items/{sku}"), Some(10.into()));
    // POST /users/N (10 paths) and /misc/N (10): 3 slots are left under the cap of 5.
    let others = count("other").and_then(|v| v.as_u64()).expect("other");
    assert_eq!(others, 20 - 3, "past the cap, requests count as other");
    assert_eq!(r["total"]["requests"], 40);
    assert_eq!(r["thresholds_passed"], true, "thresholds address grouped names");
}

/// A recording with ids in its paths (numbers, UUIDs, hex, a pattern of the job's own) gets
/// an endpoint per route by default, and the thresholds address those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_in_paths_make_one_endpoint_per_route() {
    let target = Capture::start().await;
    let dir = temp_dir("templates");
    let rec = dir.join("r.jsonl");
    let uuid = |i: usize| format!("{i:08x}-5f4d-4e7b-9a31-2c8d6f0e4b17");
    let lines: Vec<String> = (0..60)
        .map(|i| {
            let (m, url) = match i % 5 {
                0 => ("GET", format!("/api/users/{}", 1000 + i)),
                1 => ("POST", format!("/api/users/{}/orders/{}", 1000 + i, uuid(i))),
                2 => ("GET", format!("/blobs/{:012x}?size=1", 0x00ab_0000_0000_usize + i)),
                3 => ("GET", format!("/accounts/acct_{i}x/settings")),
                _ => ("GET", "/api/users/me".to_owned()),
            };
            format!(r#"{{"ts":{},"method":"{m}","url":"{url}"}}"#, T0 + i)
        })
        .collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let stats = concat!(
        "[stats]\nid_patterns = [\"acct_[0-9a-z]+\"]\n",
        "[thresholds]\n\"POST /api/users/{id}/orders/{id}\" = [\"count == 12\"]\n",
    );
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", stats);
    let r = run_job(&job, &dir, &[]).await;
    let mut got: Vec<(String, u64)> = r["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| (e["endpoint"].as_str().expect("name").to_owned(), e["requests"].as_u64().expect("n")))
        .collect();
    got.sort();
    let want = [
        ("GET /accounts/{id}/settings", 12),
        ("GET /api/users/me", 12),
        ("GET /api/users/{id}", 12),
        ("GET /blobs/{id}", 12),
        ("POST /api/users/{id}/orders/{id}", 12),
    ];
    assert_eq!(got, want.map(|(n, c)| (n.to_owned(), c)), "{}", r["endpoints"]);
    assert_eq!(r["thresholds_passed"], true, "thresholds address templated names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_results_have_a_line_per_request_rolled_every_n_lines() {
    let target = Capture::start().await;
    let dir = temp_dir("raw");
    let rec = recording(&dir, 120, 5);
    let raw = dir.join("raw");
    let sink = format!("[reporter.raw]\ndir = \"{}\"\nrotate_lines = 50\n", raw.display());
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", &sink);
    let r = run_job(&job, &dir, &["--replayers", "2"]).await;
    let raw_counts = r["sinks"].as_array().expect("sinks").iter().find(|s| s["name"] == "raw").cloned();
    assert_eq!(raw_counts.expect("raw sink")["written"], 120);

    let mut files: Vec<_> = std::fs::read_dir(&raw).expect("dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let rolled: Vec<_> = files.iter().filter(|p| p.to_string_lossy().ends_with(".tsv")).collect();
    assert_eq!(rolled.len(), 2, "{files:?}");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p).expect("read").lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(lines(rolled[0]).len(), 50);
    assert_eq!(lines(&raw.join("current")).len(), 20);
    let all: Vec<String> = files.iter().flat_map(|p| lines(p)).collect();
    assert_eq!(all.len(), 120);
    let mut statuses = std::collections::BTreeMap::new();
    for line in &all {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "{line}");
        let (due, sent): (i64, i64) = (f[0].parse().expect("due"), f[1].parse().expect("sent"));
        assert!(sent >= due && due > 1_700_000_000_000_000, "{line}");
        assert!(["local-1", "local-2"].contains(&f[5]), "{line}");
        *statuses.entry(f[3].to_owned()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get("503"), Some(&12), "{statuses:?}");

    // The next job rolls the `current` it finds before writing its own.
    run_job(&job, &dir, &[]).await;
    let tsv = std::fs::read_dir(&raw)
        .expect("dir")
        .filter(|e| e.as_ref().expect("e").path().to_string_lossy().ends_with(".tsv"))
        .count();
    assert_eq!(tsv, 2 + 1 + 2, "earlier files kept, the old current rolled, two new rolls");
}

/// With many endpoints the terminal table shows the busiest and says where the rest are;
/// requests past the cap are named with the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_the_busiest_endpoints_and_explains_other() {
    let target = Capture::start().await;
    let dir = temp_dir("table");
    let rec = dir.join("r.jsonl");
    let lines: Vec<String> = (0..90)
        .map(|i| {
            let url = if i % 3 == 0 { "/hot".to_owned() } else { format!("/users/{i}") };
            format!(r#"{{"ts":{},"method":"GET","url":"{url}"}}"#, T0 + i)
        })
        .collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(
        &dir,
        &target.url(),
        &rec,
        "speed = \"max\"",
        "[stats]\nmax_endpoints = 40\ntemplates = false\n",
    );
    let out = reprise(args(&["run", job.to_str().expect("path")])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).take_while(|l| !l.starts_with("total")).collect();
    assert_eq!(rows.len(), 20, "{table}");
    assert!(rows[0].starts_with("GET /hot") && rows[1].starts_with("other"), "busiest first: {table}");
    assert!(table.contains("… and 21 more endpoints, with fewer requests"), "{table}");
    // /hot and 39 user paths are kept; the other 21 user paths are past the cap.
    assert!(table.contains("21 requests of endpoints past [stats] max_endpoints"), "{table}");
}

/// A recording of GETs of /fast and /slow, the latter answered after `slow_ms`.
fn fast_and_slow(dir: &std::path::Path, name: &str, slow_ms: u64) -> std::path::PathBuf {
    let lines: Vec<String> = (0..120)
        .map(|i| {
            let (url, delay) = if i % 2 == 0 { ("/fast", 0) } else { ("/slow", slow_ms) };
            format!(
                r#"{{"ts":{},"method":"GET","url":"{url}","headers":{{"X-Delay-Ms":"{delay}"}}}}"#,
                T0 + i
            )
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_flags_a_p99_increase_and_exits_99() {
    let target = Capture::start().await;
    let dir = temp_dir("diff");
    let mut reports = Vec::new();
    for (name, slow_ms) in [("base", 0), ("candidate", 40)] {
        let recording = fast_and_slow(&dir, &format!("{name}.jsonl"), slow_ms);
        let job =
            write_job(&dir, &target.url(), &recording, &format!("id = \"{name}\"\nspeed = \"max\""), "");
        let report = dir.join(format!("{name}.json"));
        run_job(&job, &dir, &[]).await;
        std::fs::rename(dir.join("report.json"), &report).expect("rename");
        reports.push(report.to_str().expect("path").to_owned());
    }
    let diff = |extra: &[&str]| {
        let mut a = args(&["diff", &reports[0], &reports[1]]);
        a.extend(args(extra));
        reprise(a)
    };

    let out = diff(&["--max-p99-increase", "10%", "--min-requests", "20"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let slow = table.lines().find(|l| l.starts_with("FAIL GET /slow")).expect("/slow is flagged");
    assert!(slow.contains("p99 rose") && slow.contains("(limit 10%)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("GET /slow") && l.ends_with('!')), "{table}");

    let out = diff(&["--json"]).await;
    assert_eq!(out.status.code(), Some(0), "no limit given, nothing fails");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row =
        json["rows"].as_array().expect("rows").iter().find(|r| r["endpoint"] == "GET /slow").expect("row");
    assert_eq!(row["base"]["requests"], 60);
    assert!(row["candidate"]["p99_ms"].as_f64().expect("p99") >= 40.0, "{row}");
    assert!(row["p99_change_pct"].as_f64().expect("change") > 100.0, "{row}");

    let same = reprise(args(&["diff", &reports[0], &reports[0], "--max-p99-increase", "0%"])).await;
    assert_eq!(same.status.code(), Some(0), "a run against itself changes nothing");

    std::fs::write(dir.join("bad.json"), "{\"job\": 1}").expect("write");
    let bad = reprise(args(&["diff", &reports[0], dir.join("bad.json").to_str().expect("p")])).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.json is not a reprise JSON report") && err.contains("--report-json"), "{err}");
}
