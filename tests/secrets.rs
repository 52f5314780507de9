//! Recorded secrets (bearer tokens, cookies, configured secret headers, bodies) reach the
//! target and no output: not the logs at debug level, not a malformed line's sample, not
//! any report file or raw row. Credentials a `[[substitute]]` maps reach the target as the
//! staging values of its table, and neither the production nor the staging value shows.

mod common;

use std::path::Path;

use common::*;

/// Every output of a run at debug level, every report file and the raw rows: the recorded
/// secrets reach the target and nothing else, also from a malformed line's sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_secrets_reach_the_target_and_no_output() {
    const SECRETS: [&str; 4] = ["Bearer tok-9f8e7d", "sid=c00k1e", "k3y-v4lue", "pa55w0rd"];
    let target = Capture::start().await;
    let dir = temp_dir("trust-secrets");
    let rec = dir.join("r.jsonl");
    let good = r#"{"ts":1700000000001,"method":"POST","url":"/login","headers":{"Authorization":"Bearer tok-9f8e7d","Cookie":"sid=c00k1e","X-Api-Key":"k3y-v4lue"},"body":"pa55w0rd"}"#;
    let bad = r#"{"ts":"yesterday","method":"GET","url":"/x","headers":{"Authorization":["Bearer tok-9f8e7d"],"Cookie":"sid=c00k1e"},"body":"pa55w0rd"}"#;
    std::fs::write(&rec, [good, bad, good].join("\n")).expect("write");
    let extra = format!("[analyzer]\nsecret_headers = [\"X-Api-Key\"]\n{}", raw_sink(&dir));
    let job = write_job(&dir, &target.url(), &rec, "", &extra);
    let out = run_with_every_report(&job, &dir).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(target.requests().len(), 2);
    assert_eq!(target.requests()[0].header("authorization"), Some(b"Bearer tok-9f8e7d".as_slice()));
    assert!(stderr.contains("malformed input skipped") && stderr.contains("<redacted>"), "{stderr}");
    let outputs = every_output(&out, &dir, &[&rec]);
    assert!(outputs.len() >= 7, "stdout, stderr, json, html, two csv, raw rows: {}", outputs.len());
    for (name, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {name}");
        }
    }
}

/// `reprise run JOB` at debug level, writing the JSON, HTML and CSV reports into `dir`.
async fn run_with_every_report(job: &Path, dir: &Path) -> std::process::Output {
    let (json, html, csv) = (dir.join("report.json"), dir.join("report.html"), dir.join("out"));
    let a = args(&[
        "run",
        job.to_str().expect("path"),
        "--report-json",
        json.to_str().expect("path"),
        "--report-html",
        html.to_str().expect("path"),
        "--report-csv",
        csv.to_str().expect("path"),
    ]);
    reprise_env(a, &[("RUST_LOG", "debug")]).await
}

/// stdout, stderr and every file under `dir` but the `inputs`.
fn every_output(out: &std::process::Output, dir: &Path, inputs: &[&Path]) -> Vec<(String, Vec<u8>)> {
    let mut outputs =
        vec![("stdout".to_owned(), out.stdout.clone()), ("stderr".to_owned(), out.stderr.clone())];
    let mut files = vec![dir.to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).expect("dir").map(|e| e.expect("entry").path()));
        } else if !inputs.contains(&p.as_path()) {
            outputs.push((p.display().to_string(), std::fs::read(&p).expect("read")));
        }
    }
    outputs
}

/// Production credentials mapped to staging ones through CSV and JSON tables, by header
/// (with a pattern), cookie and query parameter: the target gets exactly the staging values,
/// a record whose token the table lacks is left out and counted (`unmapped = "drop"`), and
/// no production or staging value shows in any output, malformed lines' samples included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_credentials_reach_the_target_and_no_output() {
    const PROD: [&str; 4] = ["prod-tok-111", "prod-sess-222", "prod-key-333", "prod-q-444"];
    const STAGING: [&str; 4] = ["stg-tok-aaa", "stg-sess-bbb", "stg-key-ccc", "stg-q-ddd"];
    let target = Capture::start().await;
    let dir = temp_dir("substitute");
    std::fs::write(
        dir.join("tokens.csv"),
        "# production,staging\nprod-tok-111,stg-tok-aaa\nprod-sess-222,stg-sess-bbb\nprod-key-333,stg-key-ccc\n",
    )
    .expect("write");
    std::fs::write(dir.join("query.json"), r#"{"prod-q-444": "stg-q-ddd"}"#).expect("write");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":1700000000001,"method":"GET","url":"/a?token=prod-q-444&x=1","headers":{"Authorization":"Bearer prod-tok-111","Cookie":"theme=dark; sid=prod-sess-222","X-Api-Key":"prod-key-333"}}"#,
        r#"{"ts":1700000000002,"method":"GET","url":"/b","headers":{"Authorization":"Bearer prod-tok-unknown"}}"#,
        r#"{"ts":"late","method":"GET","url":"/c?token=prod-q-444","headers":{"X-Api-Key":"prod-key-333","Cookie":"sid=prod-sess-222"}}"#,
        r#"{"ts":1700000000003,"method":"GET","url":"/d","headers":{"X-Api-Key":"prod-key-unknown"}}"#,
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let rules = format!(
        r#"
[[substitute]]
name = "bearer"
header = "Authorization"
pattern = "^Bearer (.+)$"
table = "tokens.csv"
unmapped = "drop"

[[substitute]]
name = "session"
cookie = "sid"
table = "tokens.csv"

[[substitute]]
name = "api-key"
header = "X-Api-Key"
table = "tokens.csv"
unmapped = "default"
default = "stg-key-ccc"

[[substitute]]
name = "query-token"
query = "token"
table = "query.json"
{}"#,
        raw_sink(&dir)
    );
    let job = write_job(&dir, &target.url(), &rec, "", &rules);
    let out = run_with_every_report(&job, &dir).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let mut got = target.requests();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got.len(), 2, "/b's token is not in the table: dropped");
    assert_eq!(got[0].path, "/a?token=stg-q-ddd&x=1");
    assert_eq!(got[0].header("authorization"), Some(b"Bearer stg-tok-aaa".as_slice()));
    assert_eq!(got[0].header("cookie"), Some(b"theme=dark; sid=stg-sess-bbb".as_slice()));
    assert_eq!(got[0].header("x-api-key"), Some(b"stg-key-ccc".as_slice()));
    assert_eq!(
        (got[1].path.as_str(), got[1].header("x-api-key")),
        ("/d", Some(b"stg-key-ccc".as_slice())),
        "the default"
    );

    let r = read_json(&dir.join("report.json"));
    let c = &r["totals"];
    let by_rule = serde_json::json!({
        "bearer": {"replaced": 1, "unmapped": 1},
        "session": {"replaced": 1, "unmapped": 0},
        "api-key": {"replaced": 1, "unmapped": 1},
        "query-token": {"replaced": 1, "unmapped": 0},
    });
    assert_eq!(c["substitutes"], by_rule, "{c}");
    assert_eq!((c["input"].as_u64(), c["skipped"]["unmapped"].as_u64()), (Some(2), Some(1)), "{c}");
    let malformed: u64 =
        c["malformed"].as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert_eq!(malformed, 1, "{c}");
    assert!(stderr.contains("malformed input skipped"), "the sample is logged: {stderr}");

    let (tokens, query) = (dir.join("tokens.csv"), dir.join("query.json"));
    for (name, bytes) in every_output(&out, &dir, &[&rec, &tokens, &query, &job]) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in PROD.iter().chain(&STAGING) {
            assert!(!text.contains(secret), "{secret} in {name}");
        }
    }
}

/// A table that cannot be read as one stops the job before anything is sent, naming the
/// rule's key, the file and the line, and no value of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_table_is_refused_naming_its_line_and_no_value() {
    let target = Capture::start().await;
    let dir = temp_dir("bad-table");
    std::fs::write(dir.join("t.csv"), "ok,fine\nprod-secret-9,stg,extra\n").expect("write");
    let rec = gets_every(&dir, 2, 5);
    let job =
        write_job(&dir, &target.url(), &rec, "", "[[substitute]]\nheader = \"X-Key\"\ntable = \"t.csv\"\n");
    for cmd in ["validate", "run"] {
        let out = reprise(args(&[cmd, job.to_str().expect("path")])).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("substitute[0].table")
                && err.contains("t.csv")
                && err.contains("line 2 has 3 fields"),
            "{err}"
        );
        assert!(!err.contains("prod-secret-9"), "{err}");
    }
    assert!(target.requests().is_empty(), "nothing replayed");
}
