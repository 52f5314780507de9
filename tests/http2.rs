//! HTTP/2 targets, real servers over loopback: Debian's h2o, whose access log says which
//! HTTP each request came in over (`auto` speaks 1.1 to a plain target, `"2"` h2c with prior
//! knowledge), and Debian's nghttpd as an h2c target and as an h2 target over TLS, trusted
//! through `[replayer] target_ca` (and refused without it). An https target that offers only
//! HTTP/1.1 is spoken to in 1.1 under `auto`: tests/https.rs replays to one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Files the targets serve, and the recording: 4 of its 6 GETs find a file.
fn site(dir: &Path) -> std::path::PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    for i in 0..4 {
        std::fs::write(www.join(format!("f{i}")), format!("file {i}\n")).expect("file");
    }
    let lines: Vec<String> = ["/f0", "/f1", "/f2", "/f3", "/gone/1", "/gone/2"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(r#"{{"ts":{},"method":"GET","url":"{p}","headers":{{"X-Trace":"t{i}","Connection":"keep-alive"}}}}"#, T0 + i)
        })
        .collect();
    let rec = dir.join("r.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");
    rec
}

/// The report's status counts and error counts.
fn outcomes(report: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    (report["total"]["status"].clone(), report["total"]["errors"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2o_hears_http2_when_asked_and_http1_under_auto() {
    let dir = temp_dir("h2o");
    let rec = site(&dir);
    let port = free_port();
    let log = dir.join("access.log");
    let conf = dir.join("h2o.conf");
    std::fs::write(
        &conf,
        format!(
            "listen:\n  port: {port}\n  host: 127.0.0.1\nhosts:\n  default:\n    paths:\n      /:\n        file.dir: {}\naccess-log:\n  path: {}\n  format: \"%H %U %s\"\nerror-log: {}\n",
            dir.join("www").display(),
            log.display(),
            dir.join("error.log").display()
        ),
    )
    .expect("conf");
    let _h2o = serve("h2o", "h2o", &["-c", conf.to_str().expect("path")], port);
    let url = format!("http://127.0.0.1:{port}");
    for (http, protocol) in [("auto", "HTTP/1.1"), ("2", "HTTP/2")] {
        std::fs::write(&log, "").expect("clear the log");
        let extra = format!("[replayer]\nhttp = \"{http}\"\ntimeout = \"5s\"\nconcurrency = 3\n");
        let report = run_job(&write_job(&dir, &url, &rec, "speed = \"max\"", &extra), &dir, &[]).await;
        let (status, errors) = outcomes(&report);
        assert_eq!(status, serde_json::json!({"200": 4, "404": 2}), "http = {http}: {errors}");
        // h2o writes its log line when the stream ends, before the answer's last byte goes.
        let mut lines = Vec::new();
        let logged = wait_until(
            || {
                lines =
                    std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_owned).collect();
                lines.len() == 6
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(logged, "http = {http}: {lines:?}");
        lines.sort();
        let want: Vec<String> = ["/f0 200", "/f1 200", "/f2 200", "/f3 200", "/gone/1 404", "/gone/2 404"]
            .iter()
            .map(|l| format!("{protocol} {l}"))
            .collect();
        assert_eq!(lines, want, "http = {http}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttpd_answers_over_h2c_and_over_tls_trusted_through_target_ca() {
    let dir = temp_dir("nghttpd");
    let rec = site(&dir);
    let www = dir.join("www");
    let www = www.to_str().expect("path");
    let ca = pki::Authority::new("staging CA");
    let (cert, key) = ca.sign(&dir, "target", &["localhost", "127.0.0.1"]);
    let ca_file = ca.write(&dir, "staging-ca");
    let (plain, tls) = (free_port(), free_port());
    let _h2c = serve("nghttpd", "nghttp2-server", &["--no-tls", "-d", www, &plain.to_string()], plain);
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let _h2 = serve("nghttpd", "nghttp2-server", &["-d", www, &tls.to_string(), key, cert], tls);

    let h2c = format!("http://127.0.0.1:{plain}");
    let job = write_job(&dir, &h2c, &rec, "speed = \"max\"", "[replayer]\nhttp = \"2\"\ntimeout = \"5s\"\n");
    let (status, errors) = outcomes(&run_job(&job, &dir, &[]).await);
    assert_eq!(status, serde_json::json!({"200": 4, "404": 2}), "h2c: {errors}");

    // Over TLS `auto` offers h2 first; nghttpd speaks nothing else.
    let h2 = format!("https://127.0.0.1:{tls}");
    let trusted = format!("[replayer]\ntarget_ca = \"{}\"\ntimeout = \"5s\"\n", ca_file.display());
    let job = write_job(&dir, &h2, &rec, "speed = \"max\"", &trusted);
    let (status, errors) = outcomes(&run_job(&job, &dir, &[]).await);
    assert_eq!(status, serde_json::json!({"200": 4, "404": 2}), "h2 over TLS: {errors}");

    // Without the staging CA the certificate is not trusted: every request is a tls error.
    let job = write_job(&dir, &h2, &rec, "speed = \"max\"", "[replayer]\ntimeout = \"5s\"\n");
    let (status, errors) = outcomes(&run_job(&job, &dir, &[]).await);
    assert_eq!((status, errors), (serde_json::json!({}), serde_json::json!({"tls": 6})));
}

/// A CA file that holds no certificate, and a client certificate without its key, are
/// refused before anything runs, each named with what to fix.
#[tokio::test]
async fn unusable_tls_files_are_refused_with_what_is_wrong() {
    let dir = temp_dir("tls-files");
    let rec = site(&dir);
    std::fs::write(dir.join("ca.pem"), "not a certificate").expect("write");
    let extra = "[replayer]\ntarget_ca = \"ca.pem\"\nclient_cert = \"missing.pem\"\nhttp = \"3\"\n";
    let job = write_job(&dir, "https://127.0.0.1:1", &rec, "", extra);
    let out = reprise(args(&["validate", job.to_str().expect("path")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "replayer.target_ca",
        "must hold PEM certificates",
        "replayer.client_cert",
        "needs client_key too",
        "replayer.http",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

/// A target behind mTLS (nghttpd `--verify-client` ends the handshake of a client without a
/// certificate): with `client_cert` and `client_key` every request is answered, without
/// them every one fails: a tls error, or (TLS 1.3 refuses the certificate after the
/// client's side of the handshake is done) a reset when the server's close overtakes its
/// alert on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_asks_for_a_client_certificate_gets_the_jobs() {
    let dir = temp_dir("mtls");
    let rec = site(&dir);
    let www = dir.join("www");
    let ca = pki::Authority::new("mesh CA");
    let (cert, key) = ca.sign(&dir, "target", &["127.0.0.1"]);
    let (client_cert, client_key) = ca.sign(&dir, "replayer", &["replayer.mesh"]);
    let ca_file = ca.write(&dir, "mesh-ca");
    let port = free_port();
    let args = [
        "-V",
        "-d",
        www.to_str().expect("path"),
        &port.to_string(),
        key.to_str().expect("path"),
        cert.to_str().expect("path"),
    ];
    let _server = serve("nghttpd", "nghttp2-server", &args, port);
    let url = format!("https://127.0.0.1:{port}");
    let trust = format!("[replayer]\ntarget_ca = \"{}\"\ntimeout = \"5s\"\n", ca_file.display());
    let with_cert = format!(
        "{trust}client_cert = \"{}\"\nclient_key = \"{}\"\n",
        client_cert.display(),
        client_key.display()
    );
    let (status, errors) =
        outcomes(&run_job(&write_job(&dir, &url, &rec, "speed = \"max\"", &with_cert), &dir, &[]).await);
    assert_eq!(status, serde_json::json!({"200": 4, "404": 2}), "with a certificate: {errors}");
    let (status, errors) =
        outcomes(&run_job(&write_job(&dir, &url, &rec, "speed = \"max\"", &trust), &dir, &[]).await);
    assert_eq!(status, serde_json::json!({}), "{errors}");
    let errors = errors.as_object().expect("errors").clone();
    let count = |k: &str| errors.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    assert_eq!(count("tls") + count("reset"), 6, "{errors:?}");
    assert!(count("tls") >= 1 && errors.keys().all(|k| k == "tls" || k == "reset"), "{errors:?}");
}

/// The built-in echo target speaks h2c too, so a job can try `http = "2"` with nothing else
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_echo_target_answers_over_http2() {
    let dir = temp_dir("echo-h2");
    let rec = site(&dir);
    let job = write_job(&dir, "builtin:echo", &rec, "speed = \"max\"", "[replayer]\nhttp = \"2\"\n");
    let (status, errors) = outcomes(&run_job(&job, &dir, &[]).await);
    assert_eq!((status, errors), (serde_json::json!({"200": 6}), serde_json::json!({})));
}
