//! HAR recordings from a real capture: mitmproxy's `mitmdump` as a reverse proxy in front of
//! Debian's nginx writes a HAR (`hardump`) of requests curl sent over HTTP/1.1 and over
//! HTTP/2 (TLS, ALPN). Replayed, the HAR sends exactly what was captured; compared with
//! `[compare] baseline = "recorded"` against a build that changed one field of one answer,
//! exactly that field of that answer differs. A HAR with broken entries is counted entry by
//! entry and the rest replays.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Debian's nginx with two servers: the release (every answer `{"path":…,"version":1}`)
/// and a candidate that answers `/c` with version 2. Their ports.
fn nginx_builds(dir: &std::path::Path) -> (Guard, u16, u16) {
    let (release, candidate) = (free_port(), free_port());
    let answer =
        |v: u8| format!("default_type application/json; return 200 '{{\"path\":\"$uri\",\"version\":{v}}}';");
    let http = format!(
        "access_log off;\n\
         server {{ listen 127.0.0.1:{release}; location / {{ {v1} }} }}\n\
         server {{ listen 127.0.0.1:{candidate}; location = /c {{ {v2} }} location / {{ {v1} }} }}",
        v1 = answer(1),
        v2 = answer(2),
    );
    (nginx(dir, &http, &[release, candidate]), release, candidate)
}

async fn listening(port: u16, what: &str) {
    let up = wait_until_async(
        || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
        Duration::from_secs(30),
    )
    .await;
    assert!(up, "{what} did not listen on {port}");
}

/// What curl sends through the proxy: (HTTP version flag, method, path, body, trace id).
const SENT: [(&str, &str, &str, &str, &str); 4] = [
    ("--http1.1", "GET", "/a?x=1", "", "h1-get"),
    ("--http1.1", "POST", "/b", r#"{"n":1}"#, "h1-post"),
    ("--http2", "GET", "/c", "", "h2-get"),
    ("--http2", "PUT", "/d", "plain text, é", "h2-put"),
];

/// Captures SENT through mitmdump in front of `upstream` into `har`: HTTP/1.1 in clear,
/// HTTP/2 over TLS (mitmproxy's own certificate, which curl is told not to check).
async fn capture(dir: &std::path::Path, upstream: u16, har: &std::path::Path) {
    let port = free_port();
    let child = Command::new("mitmdump")
        .args(["--mode", &format!("reverse:http://127.0.0.1:{upstream}")])
        .args(["--listen-host", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(["--set", &format!("hardump={}", har.display())])
        .args(["--set", &format!("confdir={}", dir.join("mitmproxy").display())])
        .stdout(Stdio::null())
        .spawn()
        .expect("mitmdump: scripts/test installs mitmproxy from PyPI");
    let mut proxy = Guard(child);
    listening(port, "mitmdump").await;
    for (version, method, path, body, trace) in SENT {
        let scheme = if version == "--http2" { "https" } else { "http" };
        let mut curl = Command::new("curl");
        curl.args(["-sk", "--fail", version, "-X", method, "-H", &format!("X-Trace: {trace}")]);
        if !body.is_empty() {
            curl.args(["-H", "Content-Type: text/plain; charset=utf-8", "--data-binary", body]);
        }
        let out = curl
            .args(["-o", "/dev/null", "-w", "%{http_version}"])
            .arg(format!("{scheme}://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        let used = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(used, if version == "--http2" { "2" } else { "1.1" }, "{method} {path}");
    }
    // mitmdump writes the HAR as it shuts down.
    let pid = proxy.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    let exited = wait_until(|| matches!(proxy.0.try_wait(), Ok(Some(_))), Duration::from_secs(30)).await;
    assert!(exited && har.is_file(), "mitmdump wrote no HAR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_from_mitmproxy_replays_what_was_captured_and_compares_its_answers() {
    let dir = temp_dir("har");
    let (_nginx, release, candidate) = nginx_builds(&dir);
    let har = dir.join("capture.har");
    capture(&dir, release, &har).await;

    // Replayed to a capture target: the same requests, byte for byte where it matters.
    let target = Capture::start().await;
    let job = write_job(&dir, &target.url(), &har, "speed = \"max\"", "[analyzer]\nformat = \"har\"\n");
    let report = run_job(&job, &dir, &[]).await;
    assert_eq!(report["totals"]["ok"], 4, "{:#}", report["totals"]);
    let mut got: Vec<(String, String, String, String)> = target
        .requests()
        .iter()
        .map(|r| {
            let trace = String::from_utf8_lossy(r.header("x-trace").unwrap_or_default()).into_owned();
            (trace, r.method.clone(), r.path.clone(), String::from_utf8_lossy(&r.body).into_owned())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, String, String)> = SENT
        .iter()
        .map(|(_, m, p, b, t)| (t.to_string(), m.to_string(), p.to_string(), b.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);

    // The recorded answers against the candidate: only /c's version differs.
    let extra = "[analyzer]\nformat = \"har\"\n[compare]\nbaseline = \"recorded\"\n";
    let url = format!("http://127.0.0.1:{candidate}");
    let report = run_job(&write_job(&dir, &url, &har, "speed = \"max\"", extra), &dir, &[]).await;
    let cmp = &report["compare"];
    assert_eq!((cmp["compared"].as_u64(), cmp["differing"].as_u64()), (Some(4), Some(1)), "{cmp:#}");
    let fields: Vec<(String, String)> = cmp["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .flat_map(|e| {
            let name = e["endpoint"].as_str().unwrap_or_default().to_owned();
            e["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(move |f| (name.clone(), f["field"].to_string()))
        })
        .collect();
    assert_eq!(fields, [("GET /c".to_owned(), "\"$.version\"".to_owned())], "{cmp:#}");
}

/// Broken entries (no request, no time, a bad method, broken JSON) are counted by reason;
/// the good ones beside them replay; a file with no `log.entries` is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_har_entries_are_counted_and_the_rest_replays() {
    let dir = temp_dir("har-broken");
    let target = Capture::start().await;
    let good = |path: &str| {
        format!(
            r#"{{"startedDateTime":"2024-05-01T12:00:00.{}Z","request":{{"method":"GET","url":"http://prod{path}","headers":[]}}}}"#,
            path.len()
        )
    };
    let har = format!(
        r#"{{"log":{{"version":"1.2","entries":[{},{{"startedDateTime":"2024-05-01T12:00:00Z"}},{{"request":{{"method":"GET","url":"/x"}}}},{{"startedDateTime":"2024-05-01T12:00:00Z","request":{{"method":"G T","url":"/y"}}}},42,{}]}}}}"#,
        good("/one"),
        good("/three")
    );
    let rec = dir.join("broken.har");
    std::fs::write(&rec, har).expect("har");
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", "[analyzer]\nformat = \"har\"\n");
    let report = run_job(&job, &dir, &[]).await;
    let totals = &report["totals"];
    assert_eq!(
        totals["malformed"],
        serde_json::json!({"har_entry": 2, "har_time": 1, "bad_method": 1}),
        "{totals:#}"
    );
    let mut paths: Vec<String> = target.requests().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/one", "/three"]);

    std::fs::write(&rec, r#"{"entries":[{"request":{}}]}"#).expect("not a har");
    let report = run_job(&job, &dir, &[]).await;
    assert_eq!(report["totals"]["malformed"], serde_json::json!({"har_no_entries": 1}));
}
