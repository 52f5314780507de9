//! Response comparison (`[compare]`, issue 13) through the real binary: `reprise run` with
//! three loopback JSON targets, the candidate (the job's target) and the current release
//! twice (primary, secondary).

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback target answering each GET with JSON: a random `ts` and `id` (its own stream:
/// no two targets agree on them) and `price` 10. As the candidate, it also answers `/a/N`
/// with price 11 when N is a multiple of 4, and `/b/N` with status 500 when N is a multiple
/// of 5. `/big/N` is 100 bytes of text, the last one changed by the candidate for even N.
/// Ends with the test.
async fn json_target(seed: u64, candidate: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut n = seed;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            n = n.wrapping_add(1_000_003);
            let mut state = n;
            tokio::spawn(async move {
                let (mut buf, mut pending) = ([0u8; 4096], Vec::new());
                loop {
                    let Ok(got) = sock.read(&mut buf).await else { return };
                    if got == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..got]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                        pending.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        let index: u64 = path.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(1);
                        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed | 1);
                        let changed = candidate && path.starts_with("/a/") && index.is_multiple_of(4);
                        let failed = candidate && path.starts_with("/b/") && index.is_multiple_of(5);
                        let price = if changed { 11 } else { 10 };
                        let status = if failed { 500 } else { 200 };
                        let body = if path.starts_with("/big/") {
                            let last = if candidate && index.is_multiple_of(2) { "y" } else { "x" };
                            format!("{}{last}", "x".repeat(99))
                        } else {
                            format!(r#"{{"ts":{},"id":"{:x}","price":{price}}}"#, state >> 40, state >> 8)
                        };
                        let kind = if path.starts_with("/big/") { "text/plain" } else { "application/json" };
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// 40 GETs of `/a/1` … `/a/40` and 40 of `/b/…`, 2 ms apart.
fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let lines: Vec<String> = (1..=40)
        .flat_map(|i| [format!("/a/{i}"), format!("/b/{i}")])
        .enumerate()
        .map(|(k, url)| {
            format!(r#"{{"ts":{},"method":"GET","url":"{url}"}}"#, 1_714_564_800_000u64 + 2 * k as u64)
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

fn endpoint<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["compare"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["endpoint"] == name)
        .expect(name)
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array().expect("list").iter().map(|f| f["field"].as_str().expect("field").to_owned()).collect()
}

/// The candidate changes a field on one endpoint for 1 request in 4 and a status on another
/// for 1 in 5: the report flags exactly those, with their counts and rates; the random
/// fields are found noisy and not counted; `ignore` removes a field; a `diff_rate`
/// threshold fails the run with exit 99, and one that holds passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_flags_real_changes_and_finds_random_fields_noisy() {
    let (candidate, c) = json_target(1, true).await;
    let (primary, p) = json_target(2, false).await;
    let (secondary, s) = json_target(3, false).await;
    let dir = temp_dir("compare");
    let rec = recording(&dir);
    let section = |ignore: &str| {
        format!(
            "[compare]\nprimary = \"http://{primary}\"\nsecondary = \"http://{secondary}\"\nheaders = [\"Content-Type\"]\nignore = [{ignore}]\n"
        )
    };
    // A changed answer fails the gate like a slow one: exit 99, the report written.
    let gate = "[thresholds]\n\"*\" = [\"diff_rate < 0.1%\"]\n";
    let job = write_job(&dir, &format!("http://{candidate}"), &rec, "replayers = 2", &(section("") + gate));
    let path = dir.join("report.json");
    let out =
        reprise(args(&["run", job.to_str().expect("path"), "--report-json", path.to_str().expect("path")]))
            .await;
    assert_eq!(out.status.code(), Some(99), "{}", String::from_utf8_lossy(&out.stderr));
    let report = read_json(&path);
    assert_eq!(report["thresholds"][0]["measured"].as_f64(), Some(22.5), "{:#}", report["thresholds"]);
    let (compared, differing) = (&report["compare"]["compared"], &report["compare"]["differing"]);
    assert_eq!((compared.as_u64(), differing.as_u64()), (Some(80), Some(18)), "{:#}", report["compare"]);
    assert_eq!(report["compare"]["uncompared"].as_u64(), Some(0));
    let a = endpoint(&report, "GET /a/{id}");
    assert_eq!((a["compared"].as_u64(), a["differing"].as_u64()), (Some(40), Some(10)), "{a:#}");
    assert_eq!(a["diff_rate"].as_f64(), Some(0.25));
    assert_eq!(names(&a["fields"]), ["$.price"]);
    assert_eq!(a["fields"][0]["samples"][0]["baseline"], "10");
    assert_eq!(a["fields"][0]["samples"][0]["candidate"], "11");
    assert_eq!(names(&a["noisy"]), ["$.id", "$.ts"]);
    let b = endpoint(&report, "GET /b/{id}");
    assert_eq!((b["compared"].as_u64(), b["differing"].as_u64()), (Some(40), Some(8)), "{b:#}");
    assert_eq!(names(&b["fields"]), ["status"]);
    assert_eq!(b["fields"][0]["samples"][0]["candidate"], "500");
    // The candidate's own statistics are the candidate's: 8 of its answers were 500s.
    assert_eq!(report["totals"]["ok"].as_u64(), Some(72));

    // `ignore` removes the changed field: that endpoint no longer differs.
    // … and a gate it meets passes: exit 0.
    let gate = "[thresholds]\n\"*\" = [\"diff_rate < 15%\"]\n\"GET /a/{id}\" = [\"diff_rate < 0.1%\"]\n";
    let job = write_job(
        &dir,
        &format!("http://{candidate}"),
        &rec,
        "replayers = 2",
        &(section("\"$.price\"") + gate),
    );
    let html = dir.join("r2.html");
    let out = reprise(args(&[
        "run",
        job.to_str().expect("path"),
        "--report-json",
        dir.join("r2.json").to_str().expect("path"),
        "--report-html",
        html.to_str().expect("path"),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("responses compared to the primary: 80 compared, 8 differing (10.00 %)"),
        "{stdout}"
    );
    assert!(stdout.contains("noisy fields, not counted: $.id, $.ts"), "{stdout}");
    // The table's last column: each endpoint's diff rate, and all traffic's.
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} row in {stdout}"))
            .to_owned()
    };
    assert!(stdout.lines().next().is_some_and(|l| l.trim_end().ends_with("diff %")), "{stdout}");
    assert!(row("GET /a/{id}").trim_end().ends_with(" 0.00"), "{stdout}");
    assert!(row("GET /b/{id}").trim_end().ends_with(" 20.00"), "{stdout}");
    assert!(row("total").trim_end().ends_with(" 10.00"), "{stdout}");
    // The HTML report: a section per differing endpoint, values side by side.
    let page = std::fs::read_to_string(&html).expect("html");
    for part in [
        "<h2>Responses compared to the primary</h2>",
        "<h3>GET /b/{id}: 8 of 40 differ</h3>",
        "<td><code>200</code></td><td><code>500</code></td>",
    ] {
        assert!(page.contains(part), "{part} in the HTML report");
    }
    assert!(!page.contains("<h3>GET /a/{id}"), "an endpoint that does not differ has no section");
    let report = read_json(&dir.join("r2.json"));
    assert_eq!(endpoint(&report, "GET /a/{id}")["differing"].as_u64(), Some(0));
    for t in [c, p, s] {
        t.abort();
    }
}

/// The same across a fleet, over gRPC: a dispatcher daemon and two replayer daemons; the
/// settings reach the replayers and their counts come back, into the report and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_compares_over_grpc_and_exports_the_counts() {
    let (candidate, c) = json_target(1, true).await;
    let (primary, p) = json_target(2, false).await;
    let (secondary, s) = json_target(3, false).await;
    let dir = temp_dir("compare-fleet");
    let rec = recording(&dir);
    let section = format!("[compare]\nprimary = \"http://{primary}\"\nsecondary = \"http://{secondary}\"\n");
    let job = write_job(&dir, &format!("http://{candidate}"), &rec, "min_replayers = 2", &section);
    let dispatcher = serve_dispatcher(&job);
    let (admin, grpc) = (dispatcher.admin.clone(), dispatcher.grpc_url.clone());
    let (_a, _b) = (spawn_replayer(&grpc, "a"), spawn_replayer(&grpc, "b"));
    let done = wait_until_async(
        || async { http("GET", &admin, "/status").await.1.contains("\"state\":\"finished\"") },
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(done, "the job finished");
    let r: serde_json::Value = serde_json::from_str(&http("GET", &admin, "/report").await.1).expect("report");
    assert_eq!(r["compare"]["compared"].as_u64(), Some(80), "{:#}", r["compare"]);
    assert_eq!(r["compare"]["differing"].as_u64(), Some(18));
    let (_, metrics) = http("GET", &admin, "/metrics").await;
    for line in [
        "reprise_compare_requests{job_id=\"job\",endpoint=\"GET /a/{id}\",outcome=\"differing\"} 10",
        "reprise_compare_requests{job_id=\"job\",endpoint=\"GET /a/{id}\",outcome=\"same\"} 30",
        "reprise_compare_requests{job_id=\"job\",endpoint=\"GET /b/{id}\",outcome=\"differing\"} 8",
        "reprise_compare_uncompared_total{job_id=\"job\",endpoint=\"GET /b/{id}\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    for t in [c, p, s] {
        t.abort();
    }
}

/// A comparison without its baselines, or with a pattern that is no field, is refused
/// before anything runs, each problem named.
#[tokio::test]
async fn a_comparison_without_baselines_is_refused_with_what_to_write() {
    let dir = temp_dir("compare-bad");
    let rec = recording(&dir);
    let job = write_job(&dir, "http://127.0.0.1:9", &rec, "", "[compare]\nignore = [\"timestamp\"]\n");
    let out = reprise(args(&["validate", job.to_str().expect("path")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for says in
        ["compare.primary", "compare.secondary", "compare.ignore[0]", "JSON path such as `$.items[*].id`"]
    {
        assert!(err.contains(says), "{says} in {err}");
    }
}

/// A GoReplay recording with the service's answers (type 2 units after their requests):
/// `/a/1` … `/a/20` answered `{"ts":1,"id":"x","price":10}`, `/big/1` … `/big/6` answered
/// 100 bytes of text, and `/b/1` … `/b/4` with no answer recorded; a replayed response
/// (type 3) and an answer to no request in between.
fn gor_recording(dir: &std::path::Path) -> std::path::PathBuf {
    let sep = "\u{1F435}\u{1F648}\u{1F649}";
    let mut units = Vec::new();
    let mut ts = 1_714_564_800_000_000_000u64;
    let mut request = |units: &mut Vec<String>, id: &str, path: &str| {
        ts += 2_000_000;
        units.push(format!("1 {id} {ts} 0\nGET {path} HTTP/1.1\r\nHost: prod.example\r\n\r\n"));
    };
    let answer = |id: &str, kind: u8, content_type: &str, body: &str| {
        format!(
            "{kind} {id} 1 1\nHTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for i in 1..=20 {
        request(&mut units, &format!("a{i}"), &format!("/a/{i}"));
        units.push(answer(&format!("a{i}"), 2, "application/json", r#"{"ts":1,"id":"x","price":10}"#));
    }
    for i in 1..=6 {
        request(&mut units, &format!("big{i}"), &format!("/big/{i}"));
        units.push(answer(&format!("big{i}"), 2, "text/plain", &"x".repeat(100)));
    }
    units.push(answer("a1", 3, "application/json", "{}"));
    units.push(answer("nobody", 2, "application/json", "{}"));
    for i in 1..=4 {
        request(&mut units, &format!("b{i}"), &format!("/b/{i}"));
    }
    let path = dir.join("r.gor");
    std::fs::write(&path, units.iter().map(|u| format!("{u}\n{sep}\n")).collect::<String>()).expect("write");
    path
}

/// The recorded baseline: each replayed answer is compared to the one the GoReplay file
/// holds for its request. The changed price is flagged with its count (the random fields are
/// left out by `ignore`: with no second baseline nothing else is noise); bodies over
/// `max_body` are compared by length and hash and counted as such; requests with no
/// recorded answer are counted as not compared; and a diff threshold exits 99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_baseline_flags_a_changed_body_of_a_goreplay_file() {
    let (candidate, c) = json_target(1, true).await;
    let dir = temp_dir("compare-recorded");
    let rec = gor_recording(&dir);
    let extra = "[analyzer]\nformat = \"gor\"\n[compare]\nbaseline = \"recorded\"\nheaders = [\"Content-Type\"]\nignore = [\"$.ts\", \"$.id\"]\nmax_body = 64\n[thresholds]\n\"*\" = [\"diff_rate < 0.1%\"]\n";
    let job = write_job(&dir, &format!("http://{candidate}"), &rec, "replayers = 2", extra);
    let path = dir.join("report.json");
    let html = dir.join("report.html");
    let out = reprise(args(&[
        "run",
        job.to_str().expect("path"),
        "--report-json",
        path.to_str().expect("path"),
        "--report-html",
        html.to_str().expect("path"),
    ]))
    .await;
    c.abort();
    assert_eq!(out.status.code(), Some(99), "{}", String::from_utf8_lossy(&out.stderr));
    let report = read_json(&path);
    let cmp = &report["compare"];
    assert_eq!(cmp["baseline"], "recorded");
    assert_eq!((cmp["compared"].as_u64(), cmp["differing"].as_u64()), (Some(26), Some(8)), "{cmp:#}");
    assert_eq!((cmp["over_max_body"].as_u64(), cmp["uncompared"].as_u64()), (Some(6), Some(4)));
    let a = endpoint(&report, "GET /a/{id}");
    assert_eq!((a["compared"].as_u64(), a["differing"].as_u64()), (Some(20), Some(5)), "{a:#}");
    assert_eq!(names(&a["fields"]), ["$.price"]);
    assert_eq!(a["fields"][0]["samples"][0]["baseline"], "10");
    assert_eq!(a["fields"][0]["samples"][0]["candidate"], "11");
    assert_eq!(names(&a["noisy"]), Vec::<String>::new(), "no second baseline: nothing is noise");
    let big = endpoint(&report, "GET /big/{id}");
    assert_eq!(
        (big["compared"].as_u64(), big["differing"].as_u64(), big["over_max_body"].as_u64()),
        (Some(6), Some(3), Some(6)),
        "{big:#}"
    );
    assert_eq!(names(&big["fields"]), ["body"]);
    let sample = &big["fields"][0]["samples"][0];
    assert!(sample["baseline"].as_str().is_some_and(|s| s.starts_with("100 bytes, fnv1a ")), "{sample}");
    assert_ne!(sample["baseline"], sample["candidate"]);
    let b = endpoint(&report, "GET /b/{id}");
    assert_eq!((b["compared"].as_u64(), b["uncompared"].as_u64()), (Some(0), Some(4)), "{b:#}");
    // The recording's answers are input that is not replayed, counted: 26 paired, one
    // replayed response (type 3), one answer to no request.
    let skipped = &report["totals"]["skipped"];
    assert_eq!(
        (skipped["gor_response"].as_u64(), skipped["gor_response_unpaired"].as_u64()),
        (Some(27), Some(1)),
        "{:#}",
        report["counts"]
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("responses compared to the recording: 26 compared, 8 differing (30.77 %), 6 over max_body, 4 not compared"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("<h2>Responses compared to the recording</h2>"), "{page}");
}

/// `reprise echo-server --json`, the targets bench (v) compares: three of them, the
/// candidate changing a price for one path in 4. The comparison finds exactly the paths the
/// candidate changed (by the server's rule, worked out here), with the price and the total
/// as the fields that differ, and the request id and the time found noisy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_echo_servers_give_a_comparison_real_noise_and_a_known_regression() {
    let serve = |extra: &[&str]| {
        let mut a = vec!["echo-server", "--listen", "127.0.0.1:0"];
        a.extend_from_slice(extra);
        let (guard, line) = spawn_daemon(&a);
        (guard, line.trim_start_matches("listening addr=").to_owned())
    };
    let (_c, candidate) = serve(&["--json", "1", "--json-differ", "4"]);
    let (_p, primary) = serve(&["--json", "2"]);
    let (_s, secondary) = serve(&["--json", "3"]);
    let dir = temp_dir("compare-echo");
    let rec = recording(&dir);
    let section = format!("[compare]\nprimary = \"http://{primary}\"\nsecondary = \"http://{secondary}\"\n");
    let job = write_job(&dir, &format!("http://{candidate}"), &rec, "replayers = 2", &section);
    let report = run_job(&job, &dir, &[]).await;
    // The server's rule: FNV-1a of the path, bits 20 and up, a multiple of 4.
    let changed = |path: String| {
        let h = path
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        (h >> 20).is_multiple_of(4)
    };
    for prefix in ["a", "b"] {
        let want = (1..=40).filter(|i| changed(format!("/{prefix}/{i}"))).count() as u64;
        let e = endpoint(&report, &format!("GET /{prefix}/{{id}}"));
        assert_eq!((e["compared"].as_u64(), e["differing"].as_u64()), (Some(40), Some(want)), "{e:#}");
        let mut fields = names(&e["fields"]);
        fields.sort();
        let expected: Vec<String> =
            if want == 0 { vec![] } else { vec!["$.items[*].price".into(), "$.total".into()] };
        assert_eq!(fields, expected, "{e:#}");
        assert_eq!(names(&e["noisy"]), ["$.request_id", "$.served_at"], "{e:#}");
    }
    let all =
        (1..=40).flat_map(|i| [format!("/a/{i}"), format!("/b/{i}")]).filter(|p| changed(p.clone())).count();
    assert!(all > 5 && all < 40, "the rule changes some paths, not all: {all}");
}
