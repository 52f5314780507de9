//! Bad input gets a clear error and loses nothing else: bad job files (exit 2, every problem
//! listed), unreachable targets and missing recordings (exit 3), malformed lines (counted by
//! reason, the job goes on), a replayer of another version (refused with both versions).

mod common;

use common::*;

#[tokio::test]
async fn validate_lists_every_problem_with_key_value_and_rule() {
    let dir = temp_dir("validate");
    let job = dir.join("bad.toml");
    std::fs::write(
        &job,
        "[job]\nrate = -1\nspeed = 0\ntargte = \"http://x\"\n[fetcher.file]\npath = \"\"\n[replayer]\nconcurrency = 0\n[proxy]\nhash = \"random\"\n",
    )
    .expect("write");
    let out = reprise(args(&["validate", job.to_str().expect("p")])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // A type error (proxy.hash) stops typed checks; fix it and the rest are listed.
    assert!(err.contains("proxy.hash") || err.contains("random"), "{err}");
    std::fs::write(&job, "[job]\nrate = -1\nspeed = 0\ntargte = \"http://x\"\n[fetcher.file]\npath = \"\"\n[replayer]\nconcurrency = 0\n").expect("write");
    let out = reprise(args(&["validate", job.to_str().expect("p")])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "job.targte: unknown key",
        "job.rate = -1: must be a number > 0",
        "job.speed = 0",
        "fetcher.file.path = \"\"",
        "replayer.concurrency = 0: must be at least 1",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[tokio::test]
async fn every_shipped_config_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir("configs").expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = reprise(args(&["validate", path.to_str().expect("p")])).await;
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            checked += 1;
        }
    }
    assert!(checked >= 2, "configs/ holds example jobs");
}

#[tokio::test]
async fn a_havok_file_validates_with_a_warning_per_unused_key_and_typos_stay_errors() {
    let out = reprise(args(&["validate", "configs/havok.toml"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for key in [
        "fetcher.sls.access_key_id",
        "fetcher.sls.access_key_secret",
        "fetcher.sls.project",
        "fetcher.sls.logstore",
        "fetcher.sls.expression",
        "analyzer.name",
        "analyzer.handler",
        "reporter.style",
    ] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(&format!(" {key}:"))).collect();
        assert_eq!(lines.len(), 1, "one warning for {key}:\n{err}");
        assert!(lines[0].starts_with("warning:") && lines[0].contains("Havok key not used"), "{}", lines[0]);
    }
    assert!(
        !err.contains("fetcher.sls.region") && !err.contains("pre-download"),
        "used keys are not warned of: {err}"
    );

    let dir = temp_dir("havok-typo");
    let text = std::fs::read_to_string("configs/havok.toml")
        .expect("read")
        .replace("[fetcher.sls]\n", "[fetcher.sls]\nlogstor = \"x\"\n");
    let job = dir.join("typo.toml");
    std::fs::write(&job, text.replace("../samples", "samples")).expect("write");
    let out = reprise(args(&["validate", job.to_str().expect("p")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fetcher.sls.logstor: unknown key"), "{err}");
}

#[tokio::test]
async fn a_bad_job_file_exits_2_from_run_and_dispatcher() {
    let dir = temp_dir("badrun");
    let job = dir.join("bad.toml");
    std::fs::write(&job, "[job]\nspeed = \"fast\"\n").expect("write");
    let run = reprise(args(&["run", job.to_str().expect("p")])).await;
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("not a speed"));
    let d = reprise(args(&["dispatcher", "--config", job.to_str().expect("p")])).await;
    assert_eq!(d.status.code(), Some(2));
}

#[tokio::test]
async fn a_thread_count_of_zero_is_refused_before_anything_runs() {
    let dir = temp_dir("threads0");
    let job = dir.join("job.toml");
    std::fs::write(&job, "[job]\ntarget = \"http://127.0.0.1:1\"\n").expect("write");
    for (flag, env) in [(Some("0"), None), (None, Some("0")), (Some("many"), None)] {
        let mut a = args(&["run", job.to_str().expect("p")]);
        a.extend(flag.map(|f| ["--threads".to_string(), f.to_string()]).into_iter().flatten());
        let env: Vec<(&str, &str)> = env.map(|v| ("REPRISE_THREADS", v)).into_iter().collect();
        let out = reprise_env(a, &env).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--threads") && err.contains("invalid value"),
            "says which option and why: {err}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_target_exits_3_before_replaying() {
    let dir = temp_dir("unreachable");
    let rec = dir.join("r.jsonl");
    std::fs::write(&rec, "{\"ts\":1700000000001,\"method\":\"GET\",\"url\":\"/\"}\n").expect("write");
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let job = write_job(&dir, &format!("http://127.0.0.1:{port}"), &rec, "", "");
    let out = reprise(args(&["run", job.to_str().expect("p")])).await;
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable") && err.contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn a_recording_that_matches_nothing_exits_3() {
    let target = Capture::start().await;
    let dir = temp_dir("nofile");
    let job = write_job(&dir, &target.url(), &dir.join("missing-*.jsonl"), "", "");
    let out = reprise(args(&["run", job.to_str().expect("p")])).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file matches"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_counted_by_reason_and_the_rest_replays() {
    let target = Capture::start().await;
    let dir = temp_dir("malformed");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":1700000000001,"method":"GET","url":"/ok/1"}"#,
        r#"{not json"#,
        r#"{"ts":1700000000002,"method":"GET","url":"/ok/2"}"#,
        r#"{"method":"GET","url":"/no-ts"}"#,
        r#"{"ts":1700000000003,"method":"G E T","url":"/bad-method"}"#,
        "\u{0}\u{1}binary garbage",
        r#"{"ts":1700000000004,"method":"POST","url":"/ok/3","body":"x"}"#,
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", "");
    let report = dir.join("report.json");
    let out =
        reprise(args(&["run", job.to_str().expect("p"), "--report-json", report.to_str().expect("p")])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut paths: Vec<String> = target.requests().into_iter().map(|c| c.path).collect();
    paths.sort();
    assert_eq!(paths, ["/ok/1", "/ok/2", "/ok/3"]);
    let r = read_json(&report);
    let m = &r["totals"]["malformed"];
    assert_eq!(m["json_syntax"], 2, "{m}");
    assert_eq!(m["missing_ts"], 1, "{m}");
    assert_eq!(m["bad_method"], 1, "{m}");
    assert_eq!(r["totals"]["input"], 3);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("malformed 4"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayer_of_another_version_is_refused_with_both_versions() {
    let dir = temp_dir("version");
    let rec = dir.join("r.jsonl");
    std::fs::write(&rec, "{\"ts\":1700000000001,\"method\":\"GET\",\"url\":\"/\"}\n").expect("write");
    let job = write_job(&dir, "http://127.0.0.1:9", &rec, "", "");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", None);
    let url = dispatcher.grpc_url.clone();
    let mut client =
        reprise_proto::pb::dispatcher_client::DispatcherClient::connect(url).await.expect("connect");
    let reg = reprise_proto::pb::Registration {
        replayer_id: "old".into(),
        version: "0.0.1-old".into(),
        ..Default::default()
    };
    let err = client.subscribe(reg).await.expect_err("refused");
    assert!(
        err.message().contains("0.0.1-old") && err.message().contains(reprise_proto::VERSION),
        "{}",
        err.message()
    );
    assert!(format!("{:?}", err.code()).contains("FailedPrecondition"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_count_as_timeouts_and_statuses_are_kept() {
    let target = Capture::start().await;
    let dir = temp_dir("timeouts");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":1700000000001,"method":"GET","url":"/slow","headers":{"X-Delay-Ms":"3000"}}"#,
        r#"{"ts":1700000000002,"method":"GET","url":"/fast"}"#,
        r#"{"ts":1700000000003,"method":"GET","url":"/gone","headers":{"X-Status":"503"}}"#,
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", "[replayer]\ntimeout = \"300ms\"\n");
    let report = dir.join("report.json");
    let out =
        reprise(args(&["run", job.to_str().expect("p"), "--report-json", report.to_str().expect("p")])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = read_json(&report);
    let t = &r["total"];
    assert_eq!(t["errors"]["timeout"], 1, "{t}");
    assert_eq!(t["status"]["503"], 1, "{t}");
    assert_eq!((t["status_class"]["5xx"].as_u64(), t["status_class"]["2xx"].as_u64()), (Some(1), Some(1)));
    assert_eq!(t["status"]["200"], 1, "{t}");
    assert_eq!((t["ok"].as_u64(), t["failed"].as_u64()), (Some(1), Some(2)));
    assert!(r["duration_s"].as_f64().expect("duration") < 2.5, "the timeout cut the slow request short");
}

/// A connection's timer is moved only when it fires: still set for the first request's
/// deadline, it fires while the second is in flight, and the second gets its whole timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_its_whole_timeout_after_an_earlier_one_on_its_connection() {
    let target = Capture::start().await;
    let dir = temp_dir("timer");
    let rec = dir.join("r.jsonl");
    let lines = [
        format!(r#"{{"ts":{T0},"method":"GET","url":"/first"}}"#),
        // Sent 200 ms after the first, answered 250 ms later: past the first's deadline
        // (300 ms after it was sent), inside its own.
        format!(r#"{{"ts":{},"method":"GET","url":"/second","headers":{{"X-Delay-Ms":"250"}}}}"#, T0 + 200),
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(
        &dir,
        &target.url(),
        &rec,
        "speed = 1",
        "[replayer]\nconcurrency = 1\ntimeout = \"300ms\"\n",
    );
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 2);
    assert_eq!(r["totals"]["ok"], 2, "{}", r["total"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_target_closes_are_reopened_without_failures() {
    let target = Capture::start().await;
    let dir = temp_dir("close");
    let rec = dir.join("r.jsonl");
    // Every other response closes its connection; records 5 ms apart reuse the one left.
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let close = if i % 2 == 0 { r#","headers":{"X-Close":"1"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"/c/{i}"{close}}}"#, T0 + i * 5)
        })
        .collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "[replayer]\nconcurrency = 2\n");
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 40);
    assert_eq!(r["totals"]["ok"], 40, "{}", r["total"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_while_idle_are_reopened_without_failures() {
    let target = Capture::start_with(Some(std::time::Duration::from_millis(100))).await;
    let dir = temp_dir("idle");
    let rec = dir.join("r.jsonl");
    let lines: Vec<String> =
        (0..4).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/i/{i}"}}"#, T0 + i * 300)).collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = 1", "[replayer]\nconcurrency = 1\n");
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 4);
    assert_eq!(r["totals"]["ok"], 4, "{}", r["total"]);
}

/// A record dated 1969 first and one dated 2100 last: replayed as recorded, the job would
/// wait for decades printing `0 req/s`. Both are malformed `implausible_time`, with the key
/// to set; the job replays the rest, and while it waits through a quiet stretch of the
/// recording the progress line says when the next record is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_times_are_malformed_and_a_quiet_stretch_says_when_it_ends() {
    let target = Capture::start().await;
    let dir = temp_dir("implausible");
    let rec = dir.join("r.jsonl");
    let lines = [
        r#"{"ts":-5,"method":"GET","url":"/1969"}"#.to_owned(),
        format!(r#"{{"ts":{T0},"method":"GET","url":"/first"}}"#),
        format!(r#"{{"ts":{},"method":"GET","url":"/after-a-pause"}}"#, T0 + 5_000),
        r#"{"ts":4102444800000,"method":"GET","url":"/2100"}"#.to_owned(),
    ];
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "", "");
    let report = dir.join("report.json");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let child = std::process::Command::new(BIN)
        .args(["run", job.to_str().expect("p"), "--report-json", report.to_str().expect("p")])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let mut run = Guard(child);
    let ended =
        wait_until(|| run.0.try_wait().expect("wait").is_some(), std::time::Duration::from_secs(30)).await;
    assert!(ended, "the job ends instead of waiting for 2100");
    assert_eq!(run.0.wait().expect("status").code(), Some(0));
    let paths: Vec<String> = target.requests().into_iter().map(|c| c.path).collect();
    assert_eq!(paths, ["/first", "/after-a-pause"]);
    let r = read_json(&report);
    assert_eq!(r["totals"]["malformed"]["implausible_time"], 2, "{}", r["totals"]);
    let stderr = std::fs::read_to_string(&err).expect("stderr");
    assert!(
        stderr.contains("before [analyzer] earliest") && stderr.contains("max_ahead"),
        "the samples say which key to set: {stderr}"
    );
    assert!(stderr.contains("next record due in"), "the quiet stretch is explained: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_why_requests_failed() {
    let dir = temp_dir("error-samples");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let job = write_job(&dir, &closed, &gets_every(&dir, 20, 5), "", "");
    let d = serve_dispatcher(&job);
    let _r = spawn_replayer(&d.grpc_url, "r1");
    let over = wait_until_async(
        || async { http("GET", &d.admin, "/status").await.1.contains("\"state\":\"finished\"") },
        std::time::Duration::from_secs(30),
    )
    .await;
    assert!(over, "the job ends");
    let event = first_event(&d.admin).await;
    let errors = event["frame"]["errors"].as_array().expect("errors").clone();
    let connect = errors.iter().find(|e| e["kind"] == "connect").unwrap_or_else(|| panic!("{errors:?}"));
    assert_eq!(connect["count"], 20, "{connect}");
    let sample = &connect["sample"];
    assert!(sample["message"].as_str().expect("message").contains("refused"), "the cause is shown: {sample}");
    assert_eq!(sample["replayer"], "r1");
}
