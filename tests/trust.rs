//! A dispatcher that obeys only its owner, through the real binary: tokens on both ports, TLS
//! on both ports with client certificates for replayers, and no serving beyond loopback
//! unauthenticated. Certificates are made in the test (rcgen).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pki::{self, Authority};
use common::*;

const REPLAYER_TOKEN: &str = "replayer-token-4f1c9a7e";
const ADMIN_TOKEN: &str = "admin-token-b83d02c5";

fn recording(dir: &Path, n: usize) -> PathBuf {
    gets_every(dir, n, 5)
}

/// A dispatcher on loopback with both tokens set, writing its report to `report`.
fn dispatcher_with_tokens(job: &Path, report: &Path) -> (Guard, String) {
    let env = [("REPRISE_REPLAYER_TOKEN", REPLAYER_TOKEN), ("REPRISE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let a = ["--config", job.to_str().expect("path"), "--report-json", report.to_str().expect("path")];
    let mut args = vec!["dispatcher", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    args.extend(a);
    spawn_daemon_env(&args, &env)
}

async fn admin(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    exchange(&mut stream, &request("GET", addr, path, "", &auth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_both_ports_and_are_never_printed() {
    let target = Capture::start().await;
    let dir = temp_dir("trust-tokens");
    let job = write_job(&dir, &target.url(), &recording(&dir, 20), "", "");
    let report = dir.join("report.json");
    let (guard, line) = dispatcher_with_tokens(&job, &report);
    let (grpc, http) = (format!("http://{}", field(&line, "grpc")), field(&line, "http"));

    // The admin API: the token is asked for everywhere but /healthz and /metrics.
    assert_eq!(admin(&http, "/status", None).await.0, 401);
    let (code, body) = admin(&http, "/job/start", Some("admin-token-wrong")).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("REPRISE_ADMIN_TOKEN"), "the refusal says what to set: {body}");
    assert_eq!(admin(&http, "/healthz", None).await.0, 200);
    assert_eq!(admin(&http, "/metrics", None).await.0, 200);
    let (code, status) = admin(&http, "/status", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200, "{status}");
    assert!(status.contains(r#""state":"waiting""#), "{status}");

    // Replayers without the token, or with another, are refused and give up.
    for token in [None, Some("replayer-token-guessed")] {
        let a = args(&["replayer", "--dispatcher", &grpc, "--id", "intruder", "--once"]);
        let env: Vec<(&str, &str)> = token.iter().map(|t| ("REPRISE_REPLAYER_TOKEN", *t)).collect();
        let out = reprise_env(a, &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("replayer token") && stderr.contains("REPRISE_REPLAYER_TOKEN"), "{stderr}");
        assert!(!stderr.contains("replayer-token-guessed"), "a token is never printed: {stderr}");
    }
    assert!(target.requests().is_empty(), "nothing was replayed for a refused replayer");

    // The replayer with the token runs the job.
    let a = args(&["replayer", "--dispatcher", &grpc, "--id", "owner", "--once"]);
    let out = reprise_env(a, &[("REPRISE_REPLAYER_TOKEN", REPLAYER_TOKEN)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_exit(guard).await.success());
    assert_eq!(target.requests().len(), 20);
    let r = read_json(&report);
    assert_eq!(r["refused"]["admin_token"], 2, "{}", r["refused"]);
    assert_eq!(r["refused"]["replayer_token"], 2, "{}", r["refused"]);
    assert_eq!(r["refused"]["tls_handshake"], 0, "{}", r["refused"]);
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(!text.contains(REPLAYER_TOKEN) && !text.contains(ADMIN_TOKEN));
}

/// A raw POST as a browser sends it for a page: `headers` are its extra lines.
async fn post_from_page(
    addr: &str,
    path: &str,
    content_type: &str,
    body: &str,
    headers: &str,
) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    exchange(&mut stream, &req).await
}

/// A page of another site cannot steer a job on loopback, with or without the admin token:
/// a form posted to /job/stop, a script's /job/config and a cross-site /job/start are
/// refused (403) and counted, and the job goes on; the same origin and curl-like clients
/// still can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_steer_a_job() {
    let dir = temp_dir("trust-cross-site");
    let job = write_job(&dir, "http://127.0.0.1:9", &recording(&dir, 5), "min_replayers = 1", "");
    let report = dir.join("report.json");
    for token in [None, Some(ADMIN_TOKEN)] {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let env: Vec<(&str, &str)> = token.iter().map(|t| ("REPRISE_ADMIN_TOKEN", *t)).collect();
        let a = ["dispatcher", "--config", job.to_str().expect("path"), "--grpc", "127.0.0.1:0"];
        let mut a = a.to_vec();
        a.extend(["--http", "127.0.0.1:0", "--report-json", report.to_str().expect("path")]);
        let (guard, line) = spawn_daemon_env(&a, &env);
        let http = field(&line, "http");
        let evil = format!("Origin: http://evil.example\r\n{auth}");
        let form = "application/x-www-form-urlencoded";
        let refused = [
            post_from_page(&http, "/job/stop", form, "x=1", &evil).await,
            post_from_page(
                &http,
                "/job/start",
                "text/plain",
                "",
                &format!("Sec-Fetch-Site: cross-site\r\n{auth}"),
            )
            .await,
            post_from_page(&http, "/job/config", "application/json", r#"{"speed": 100}"#, &evil).await,
            post_from_page(&http, "/job/pause", form, "", &format!("Origin: null\r\n{auth}")).await,
        ];
        for (code, body) in &refused {
            assert_eq!(*code, 403, "{token:?}: {body}");
            assert!(body.contains("another site"), "the refusal says why: {body}");
        }
        let (code, status) = admin(&http, "/status", token).await;
        assert_eq!(code, 200, "{status}");
        let s: serde_json::Value = serde_json::from_str(&status).expect("json");
        assert_eq!(s["state"], "waiting", "nothing changed: {s}");
        assert_eq!(s["settings"]["speed"], 1.0, "{}", s["settings"]);
        assert_eq!(s["refused"]["cross_site"], 4, "{}", s["refused"]);
        // The admin API's own origin may.
        let same = format!("Origin: http://{http}\r\nSec-Fetch-Site: same-origin\r\n{auth}");
        let (code, body) = post_from_page(&http, "/job/stop", form, "", &same).await;
        assert_eq!(code, 202, "{body}");
        assert_eq!(wait_exit(guard).await.code(), Some(4), "a stopped job exits 4");
        let r = read_json(&report);
        assert_eq!(r["state"], "stopped", "stopped by its own page");
        assert_eq!(r["totals"]["sent"], 0, "{}", r["totals"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_beyond_loopback_without_tokens_refuses_to_start() {
    let dir = temp_dir("trust-exposed");
    let job = write_job(&dir, "http://127.0.0.1:9", &recording(&dir, 1), "", "");
    let job = job.to_str().expect("path");
    // The check comes before binding: nothing listens beyond loopback in this test.
    let cases = [
        ("0.0.0.0:0", "127.0.0.1:0", vec![], "REPRISE_REPLAYER_TOKEN", "REPRISE_ADMIN_TOKEN"),
        ("127.0.0.1:0", "0.0.0.0:0", vec![], "REPRISE_ADMIN_TOKEN", "REPRISE_REPLAYER_TOKEN"),
        (
            "0.0.0.0:0",
            "0.0.0.0:0",
            vec![("REPRISE_ADMIN_TOKEN", ADMIN_TOKEN)],
            "REPRISE_REPLAYER_TOKEN",
            "ADMIN",
        ),
    ];
    for (grpc, http, env, named, not_named) in cases {
        let out =
            reprise_env(args(&["dispatcher", "--config", job, "--grpc", grpc, "--http", http]), &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{grpc} {http}: {stderr}");
        assert!(stderr.contains(named) && stderr.contains("--insecure"), "{stderr}");
        assert!(!stderr.contains(not_named), "{stderr}");
    }
}

fn spawn_replayer_tls(url: &str, id: &str, tls: &[&str]) -> Guard {
    let mut a = vec!["replayer", "--dispatcher", url, "--id", id, "--once"];
    a.extend(tls);
    Guard(
        std::process::Command::new(env!("CARGO_BIN_EXE_reprise"))
            .args(&a)
            .env("RUST_LOG", "error")
            .env("REPRISE_REPLAYER_TOKEN", REPLAYER_TOKEN)
            .spawn()
            .expect("replayer"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_ports_admits_only_replayers_with_a_certificate_of_its_ca() {
    let target = Capture::start().await;
    let dir = temp_dir("trust-tls");
    let ca = Authority::new("reprise test CA");
    let (cert, key) = ca.sign(&dir, "dispatcher", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = ca.sign(&dir, "replayer", &["replayer-1"]);
    let stranger = Authority::new("another CA");
    let (bad_cert, bad_key) = stranger.sign(&dir, "stranger", &["replayer-x"]);
    let ca_pem = ca.write(&dir, "ca");
    let tls = format!(
        "[service.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        cert.display(),
        key.display(),
        ca_pem.display()
    );
    let job = write_job(&dir, &target.url(), &recording(&dir, 20), "", &tls);
    let report = dir.join("report.json");
    let (guard, line) = dispatcher_with_tokens(&job, &report);
    let (grpc, http) = (field(&line, "grpc"), field(&line, "http"));
    let (https, plain) = (format!("https://{grpc}"), format!("http://{grpc}"));

    // The admin API answers over TLS with the same certificate; plain text gets no answer.
    let (code, status) = pki::https("GET", &http, "127.0.0.1", "/status", &ca_pem, ADMIN_TOKEN).await;
    assert_eq!(code, 200, "{status}");
    let mut raw = tokio::net::TcpStream::connect(&http).await.expect("connect");
    let mut nothing = Vec::new();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    raw.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let _ = raw.read_to_end(&mut nothing).await;
    assert!(!String::from_utf8_lossy(&nothing).contains("HTTP/1.1 200"), "plain HTTP is not served");

    // Refused: a plain client, a client without a certificate, one with a stranger's.
    let ca_arg = ca_pem.to_str().expect("path");
    let (bad_c, bad_k) = (bad_cert.to_str().expect("path"), bad_key.to_str().expect("path"));
    let intruders = [
        spawn_replayer_tls(&plain, "plain", &[]),
        spawn_replayer_tls(&https, "no-cert", &["--tls-ca", ca_arg]),
        spawn_replayer_tls(
            &https,
            "stranger",
            &["--tls-ca", ca_arg, "--tls-cert", bad_c, "--tls-key", bad_k],
        ),
    ];
    let mut refused = 0;
    for _ in 0..100 {
        let (_, status) = pki::https("GET", &http, "127.0.0.1", "/status", &ca_pem, ADMIN_TOKEN).await;
        let s: serde_json::Value = serde_json::from_str(&status).expect("status json");
        assert_eq!(
            s["replayers"].as_array().map(Vec::len),
            Some(0),
            "no intruder joined: {}",
            s["replayers"]
        );
        refused = s["refused"]["tls_handshake"].as_u64().expect("count");
        if refused >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused >= 4, "the plain admin client and three replayers refused: {refused}");
    drop(intruders);
    assert!(target.requests().is_empty());

    // The replayer with a certificate of the CA runs the job.
    let (c, k) = (client_cert.to_str().expect("path"), client_key.to_str().expect("path"));
    let owner = spawn_replayer_tls(&https, "owner", &["--tls-ca", ca_arg, "--tls-cert", c, "--tls-key", k]);
    assert!(wait_exit(guard).await.success());
    assert!(wait_exit(owner).await.success());
    assert_eq!(target.requests().len(), 20);
    let r = read_json(&report);
    assert_eq!(r["totals"]["sent"], 20, "{}", r["totals"]);
    assert_eq!(r["replayers"][0]["id"], "owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_certificate_file_is_named_with_what_is_wrong() {
    let dir = temp_dir("trust-files");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let ca = Authority::new("reprise test CA");
    let (cert, _) = ca.sign(&dir, "dispatcher", &["127.0.0.1"]);
    let tls = format!("[service.tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), garbage.display());
    let job = write_job(&dir, "http://127.0.0.1:9", &recording(&dir, 1), "", &tls);
    let out = reprise(args(&[
        "dispatcher",
        "--config",
        job.to_str().expect("path"),
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("[service.tls] key") && stderr.contains("garbage.pem"), "{stderr}");
    assert!(stderr.contains("private key"), "{stderr}");

    let out = reprise(args(&[
        "replayer",
        "--dispatcher",
        "https://127.0.0.1:9",
        "--tls-ca",
        garbage.to_str().expect("path"),
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("--tls-ca") && stderr.contains("garbage.pem") && stderr.contains("no certificate"),
        "{stderr}"
    );
}

/// A subscribed replayer turned hostile, over the real gRPC port: a report forged for
/// another replayer (its subscription guessed), one for another job, a flood of acks and a 17 MiB
/// message are refused, each counted under its reason, and the job of the honest replayer
/// goes on with its books balanced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flooding_and_oversized_reports_are_refused_and_counted() {
    use reprise_proto::pb;
    let target = Capture::start().await;
    let dir = temp_dir("trust-hostile");
    let job = write_job(&dir, &target.url(), &gets_every(&dir, 150, 20), "", "");
    let report = dir.join("report.json");
    let d = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let _honest = spawn_replayer(&d.grpc_url, "honest");
    assert!(wait_until(|| target.requests().len() >= 5, Duration::from_secs(10)).await);
    let mut client =
        pb::dispatcher_client::DispatcherClient::connect(d.grpc_url.clone()).await.expect("connect");
    let reg = pb::Registration {
        replayer_id: "intruder".into(),
        version: reprise_proto::VERSION.into(),
        ..Default::default()
    };
    let mut events = client.subscribe(reg).await.expect("subscribes").into_inner();
    let cfg = match events.message().await.expect("an event") {
        Some(pb::DispatcherEvent { event: Some(pb::dispatcher_event::Event::Job(cfg)) }) => cfg,
        other => panic!("the job's configuration first: {other:?}"),
    };
    let own = |subscription: u64, job_id: &str| pb::StatsReport {
        replayer_id: "intruder".into(),
        job_id: job_id.into(),
        subscription,
        ..Default::default()
    };
    let code = |r: Result<tonic::Response<pb::ReportReturn>, tonic::Status>| match r {
        Ok(_) => "Ok".to_owned(),
        Err(e) => format!("{:?}", e.code()),
    };
    // Another replayer's reports, its subscription guessed: subscriptions are not 1, 2, 3 ….
    for guess in 1..=3 {
        let mut forged = own(guess, &cfg.job_id);
        forged.replayer_id = "honest".into();
        assert_eq!(code(client.report(forged).await), "FailedPrecondition");
    }
    assert_eq!(code(client.report(own(cfg.subscription, "another-job")).await), "FailedPrecondition");
    let mut huge = own(cfg.subscription, &cfg.job_id);
    huge.refusal = "x".repeat(17 << 20);
    assert_eq!(code(client.report(huge).await), "OutOfRange");
    // A flood: 16 senders at once on one HTTP/2 connection, far past 1,000 reports a second
    // even on a loaded machine (4 sequential senders were not, once, in CI beside a build);
    // each stops at its first refusal or after 5,000.
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (mut c, r) = (client.clone(), own(cfg.subscription, &cfg.job_id));
        senders.spawn(async move {
            for _ in 0..5000 {
                if c.report(r.clone()).await.is_err() {
                    return 1;
                }
            }
            0
        });
    }
    let refused: u32 = senders.join_all().await.into_iter().sum();
    assert!(refused > 0, "a flood is cut off");
    drop(events);
    assert!(wait_exit(d.guard).await.success());
    let r = read_json(&report);
    assert!(r["refused"]["foreign_report"].as_u64() >= Some(4), "{}", r["refused"]);
    assert_eq!(r["refused"]["report_flood"].as_u64(), Some(u64::from(refused)), "{}", r["refused"]);
    assert_eq!(r["refused"]["oversized"], 1, "{}", r["refused"]);
    assert_eq!(r["totals"]["balanced"], true, "{}", r["totals"]);
    let honest = r["replayers"].as_array().expect("rows").iter().find(|m| m["id"] == "honest").cloned();
    let honest = honest.expect("honest row");
    assert_eq!(honest["lost_in_flight"], 0, "{honest}");
}

/// A coordinator whose `client_ca` asks callers for a certificate admits a shard that shows
/// one of that CA (`--coordinator-cert`), as it admits replayers. A shard without one is
/// refused and ends saying so: it does not wait for a coordinator that will never take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_joins_a_coordinator_that_asks_for_certificates_with_its_own() {
    let target = Capture::start().await;
    let dir = temp_dir("trust-shard-mtls");
    let ca = Authority::new("reprise test CA");
    let (cert, key) = ca.sign(&dir, "dispatcher", &["127.0.0.1", "localhost"]);
    let (shard_cert, shard_key) = ca.sign(&dir, "shard-1", &["shard-1"]);
    let (replayer_cert, replayer_key) = ca.sign(&dir, "replayer", &["replayer-0"]);
    let ca_pem = ca.write(&dir, "ca");
    let path = |p: &Path| p.to_str().expect("path").to_owned();
    let tls = format!(
        "[service.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        cert.display(),
        key.display(),
        ca_pem.display()
    );
    let (dir0, dir1) = (dir.join("0"), dir.join("1"));
    for d in [&dir0, &dir1] {
        std::fs::create_dir(d).expect("dir");
    }
    let job0 = write_job(&dir0, &target.url(), &recording(&dir0, 20), "", &tls);
    let job1 = write_job(&dir1, &target.url(), &recording(&dir1, 20), "", "");
    let report = dir0.join("report.json");
    let tokens = [("REPRISE_REPLAYER_TOKEN", REPLAYER_TOKEN), ("REPRISE_ADMIN_TOKEN", ADMIN_TOKEN)];
    let shard = |job: &Path, i: &str, extra: &[&str]| {
        let mut a = vec!["dispatcher", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--shard", i];
        a.extend(["--config", job.to_str().expect("path")]);
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let (coordinator, line) = spawn_daemon_env(
        &shard(&job0, "0/2", &["--report-json", &path(&report)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &tokens,
    );
    let url = format!("https://{}", field(&line, "grpc"));
    let joining = ["--coordinator", &url, "--coordinator-ca", &path(&ca_pem)];

    // Without a certificate, and trusting another CA than the coordinator's: once its
    // replayer is there it joins, is refused, and ends saying what to check (it must not
    // wait on: a refused handshake is refused again on every try).
    let stranger = Authority::new("another CA").write(&dir, "stranger");
    let strangers = ["--coordinator", &url, "--coordinator-ca", &path(&stranger)];
    for (args, hint) in [(&joining, "--coordinator-cert"), (&strangers, "--coordinator-ca")] {
        let said = refused_shard(&shard(&job1, "1/2", args), &tokens).await;
        assert!(said.contains(hint), "the error says what to check ({hint}): {said}");
    }

    // With one of the CA's certificates: joins, and the job runs on both shards.
    let (c, k) = (path(&shard_cert), path(&shard_key));
    let with_cert: Vec<&str> =
        joining.iter().copied().chain(["--coordinator-cert", &c, "--coordinator-key", &k]).collect();
    let (shard1, line1) = spawn_daemon_env(
        &shard(&job1, "1/2", &with_cert).iter().map(String::as_str).collect::<Vec<_>>(),
        &tokens,
    );
    let (rc, rk) = (path(&replayer_cert), path(&replayer_key));
    let replayers = [
        spawn_replayer_tls(&url, "r0", &["--tls-ca", &path(&ca_pem), "--tls-cert", &rc, "--tls-key", &rk]),
        spawn_replayer_tls(&format!("http://{}", field(&line1, "grpc")), "r1", &[]),
    ];
    assert!(wait_exit(shard1).await.success(), "shard 1 ran its share");
    assert!(wait_exit(coordinator).await.success(), "the coordinator ran the job");
    for r in replayers {
        assert!(wait_exit(r).await.success());
    }
    assert_eq!(target.requests().len(), 20, "each record once, from one shard or the other");
    let r = read_json(&report);
    assert_eq!(r["totals"]["sent"], 20, "{}", r["totals"]);
    let shards = r["shards"].as_array().expect("the coordinator lists its shards");
    assert_eq!(shards.len(), 1, "{shards:?}");
    assert_eq!(shards[0]["state"], "finished", "{}", shards[0]);
}

/// Runs a shard with `args` and a replayer of its own until the shard ends (within a
/// minute), which must be a failure: what it printed on stderr.
async fn refused_shard(args: &[String], env: &[(&str, &str)]) -> String {
    let mut shard = tokio::process::Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the shard");
    let mut stdout = tokio::io::BufReader::new(shard.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first).await.expect("listening line");
    let _replayer = spawn_replayer_tls(&format!("http://{}", field(&first, "grpc")), "r-refused", &[]);
    let out = tokio::time::timeout(Duration::from_secs(60), shard.wait_with_output())
        .await
        .expect("a refused shard ends")
        .expect("run the shard");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{said}");
    said
}
