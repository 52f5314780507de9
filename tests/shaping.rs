//! Traffic shaped for staging, through the real binary against a real HTTP target:
//! `[[filter]]` rules leave out exactly the records they deny (by method, path, host,
//! header, header value, query parameter), the first rule that matches decides, and every
//! record left out is counted under its rule's name, never as input lost; `[[rewrite]]` and
//! `[[substitute]]` rules make the bytes the target receives exactly what they say, counted
//! by rule, and the credentials they map show in no output.

mod common;

use common::*;

/// One recorded request: (method, url, headers as JSON object members).
fn line(i: usize, method: &str, url: &str, headers: &str) -> String {
    format!(r#"{{"ts":{},"method":"{method}","url":"{url}","headers":{{{headers}}}}}"#, T0 + i * 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_leave_out_what_they_deny_and_count_it_by_rule() {
    let target = Capture::start().await;
    let dir = temp_dir("filters");
    let recorded = [
        ("POST", "/payments/17", ""),
        ("POST", "/payments/18", r#""X-Replay-Anyway":"1""#),
        ("GET", "/payments/17", ""),
        ("GET", "/health", ""),
        ("GET", "/health?full=1", ""),
        ("GET", "/healthz", ""),
        ("GET", "http://admin.example.com/users", ""),
        ("GET", "http://api.example.com/users", ""),
        ("GET", "/search?q=a&dryrun=yes", ""),
        ("GET", "/search?q=a&dryrun=no", ""),
        ("GET", "/debug", r#""X-Debug":"true""#),
        ("GET", "/debug", r#""X-Debug":"0""#),
        ("DELETE", "/users/4", ""),
        ("PUT", "/users/4", ""),
    ];
    let lines: Vec<String> = recorded.iter().enumerate().map(|(i, (m, u, h))| line(i, m, u, h)).collect();
    let rec = dir.join("r.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let filters = r#"
[[filter]]
name = "replay-anyway"
action = "allow"
header = "x-replay-anyway"

[[filter]]
name = "no-payments"
action = "deny"
method = ["POST", "PUT"]
path = "^/payments/"

[[filter]]
name = "no-health"
action = "deny"
path = "^/health$"

[[filter]]
action = "deny"
host = "^admin\\."

[[filter]]
name = "no-dry-runs"
action = "deny"
query = "dryrun"
query_value = "^yes$"

[[filter]]
name = "no-debug"
action = "deny"
header = "X-Debug"
header_value = "^(1|true)$"

[[filter]]
name = "no-deletes"
action = "deny"
method = "DELETE"
"#;
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", filters);
    let r = run_job(&job, &dir, &[]).await;

    let mut got: Vec<String> = target.requests().iter().map(|c| format!("{} {}", c.method, c.path)).collect();
    got.sort();
    let mut want = vec![
        "POST /payments/18",
        "GET /payments/17",
        "GET /healthz",
        "GET /users",
        "GET /search?q=a&dryrun=no",
        "GET /debug",
        "PUT /users/4",
    ];
    want.sort();
    assert_eq!(got, want, "what reached the target");
    let c = &r["totals"];
    assert_eq!(c["input"], 7, "records left out are not input: {c}");
    assert_eq!(c["skipped"]["filtered"], 7, "{c}");
    let by_rule = serde_json::json!({
        "replay-anyway": 0, "no-payments": 1, "no-health": 2, "filter[3]": 1,
        "no-dry-runs": 1, "no-debug": 1, "no-deletes": 1
    });
    assert_eq!(c["filtered"], by_rule, "a count per rule, by name");
    assert_eq!(r["totals"]["balanced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_cannot_work_is_refused_with_its_key() {
    let target = Capture::start().await;
    let dir = temp_dir("bad-filters");
    let rec = gets_every(&dir, 3, 5);
    let filters = "[[filter]]\naction = \"deny\"\npath = \"^/(a\"\n[[filter]]\nheader_value = \"x\"\n";
    let job = write_job(&dir, &target.url(), &rec, "", filters);
    let out = reprise(args(&["run", job.to_str().expect("path")])).await;
    assert_eq!(out.status.code(), Some(2), "a bad job file");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "filter[0].path",
        "is not a regex",
        "filter[1].action",
        "\"allow\" or \"deny\"",
        "filter[1].header_value",
        "needs header",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
    assert!(target.requests().is_empty(), "nothing replayed");
}

/// A request as the target saw it, without the headers the replayer writes itself.
fn seen(c: &Captured) -> (String, String, Vec<(String, String)>, String) {
    let headers = c
        .headers
        .iter()
        .filter(|(n, _)| n != "content-length")
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    (c.method.clone(), c.path.clone(), headers, String::from_utf8_lossy(&c.body).into_owned())
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_reach_the_target_byte_for_byte_and_are_counted_by_rule() {
    let target = Capture::start().await;
    let dir = temp_dir("rewrites");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":1700000000000,"method":"POST","url":"/v1/orders/42?utm_source=mail&page=2","headers":{"X-Forwarded-For":"10.0.0.1","X-Old":"o","Accept":"*/*"},"body":"{\"user\": {\"email\": \"a@prod\"}, \"card\": {\"number\": \"4111\", \"exp\": \"12/30\"}, \"total\": 10.50}"}"#,
        r#"{"ts":1700000000005,"method":"POST","url":"/v1/upload","headers":{"Content-Type":"text/plain"},"body":"not json"}"#,
        r#"{"ts":1700000000010,"method":"GET","url":"/static/app.js?utm_source=x","headers":{}}"#,
        r#"{"ts":1700000000015,"method":"PUT","url":"/v1/strict","headers":{},"body":"<xml/>"}"#,
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let rules = r#"
[[rewrite]]
name = "v2"
when = { path = "^/v1/orders/" }
path = { from = "^/v1/(\\w+)/(\\d+)$", to = "/v2/${1}/$2/items" }
set_host = "api.staging.example"

[[rewrite]]
name = "headers"
remove_headers = ["X-Forwarded-For"]
rename_headers = { "X-Old" = "X-New" }
set_headers = { "Accept" = "application/json", "X-Env" = "staging" }

[[rewrite]]
name = "no-tracking"
remove_query = ["utm_source"]
set_query = { debug = "1" }

[[rewrite]]
name = "scrub-card"
when = { method = ["POST", "PUT"], path = "^/v(1|2)/" }
remove_json = ["/card/number"]
set_json = { "/user/email" = "qa@staging.example", "/test" = true }

[[rewrite]]
name = "strict"
when = { path = "^/v1/strict$" }
remove_json = ["/secret"]
on_failure = "skip"
"#;
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", rules);
    let r = run_job(&job, &dir, &[]).await;

    let mut got: Vec<_> = target.requests().iter().map(seen).collect();
    got.sort();
    let target_host = target.url().trim_start_matches("http://").to_owned();
    let want = vec![
        (
            "GET".to_owned(),
            "/static/app.js?debug=1".to_owned(),
            owned(&[("accept", "application/json"), ("x-env", "staging"), ("host", &target_host)]),
            String::new(),
        ),
        (
            "POST".to_owned(),
            "/v1/upload?debug=1".to_owned(),
            owned(&[
                ("content-type", "text/plain"),
                ("accept", "application/json"),
                ("x-env", "staging"),
                ("host", &target_host),
            ]),
            "not json".to_owned(),
        ),
        (
            "POST".to_owned(),
            "/v2/orders/42/items?page=2&debug=1".to_owned(),
            owned(&[
                ("x-new", "o"),
                ("accept", "application/json"),
                ("x-env", "staging"),
                ("host", "api.staging.example"),
            ]),
            r#"{"user":{"email":"qa@staging.example"},"card":{"exp":"12/30"},"total":10.50,"test":true}"#
                .to_owned(),
        ),
    ];
    assert_eq!(got, want, "what reached the target");
    let c = &r["totals"];
    let by_rule = serde_json::json!({
        "v2": {"applied": 1, "failed": 0},
        "headers": {"applied": 4, "failed": 0},
        "no-tracking": {"applied": 4, "failed": 0},
        "scrub-card": {"applied": 1, "failed": 2},
        "strict": {"applied": 0, "failed": 1},
    });
    assert_eq!(c["rewrites"], by_rule, "{c}");
    assert_eq!(c["skipped"]["rewrite_failed"], 1, "only the strict rule skips: {c}");
    assert_eq!(c["input"], 3, "{c}");
    assert_eq!(c["balanced"], true);
}
