//! Recorded secrets (bearer tokens, cookies, configured secret headers, bodies) reach the
//! target and no output: not the logs at debug level, not a malformed line's sample, not
//! any report file or raw row.

mod common;

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
    let out = reprise_env(a, &[("RUST_LOG", "debug")]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(target.requests().len(), 2);
    assert_eq!(target.requests()[0].header("authorization"), Some(b"Bearer tok-9f8e7d".as_slice()));
    assert!(stderr.contains("malformed input skipped") && stderr.contains("<redacted>"), "{stderr}");
    let mut outputs =
        vec![("stdout".to_owned(), out.stdout.clone()), ("stderr".to_owned(), out.stderr.clone())];
    let mut files = vec![dir.to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).expect("dir").map(|e| e.expect("entry").path()));
        } else if p != rec {
            outputs.push((p.display().to_string(), std::fs::read(&p).expect("read")));
        }
    }
    assert!(outputs.len() >= 7, "stdout, stderr, json, html, two csv, raw rows: {}", outputs.len());
    for (name, bytes) in &outputs {
        let text = String::from_utf8_lossy(bytes);
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {name}");
        }
    }
}
