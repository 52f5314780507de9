//! https targets: a self-signed staging certificate is refused by default (counted as a tls
//! error, the job goes on and ends) and accepted with `[replayer] insecure_tls = true`; answers
//! over https are compared as over plain HTTP, long bodies by their length and hash.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An https target on 127.0.0.1 with a fresh self-signed certificate; counts requests.
/// Answers `ok`, or for `/big/N` [`BIG`] bytes of `x`, the last one `y` when N is odd.
async fn tls_target() -> (String, Arc<Mutex<Vec<String>>>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, store) = (acceptor.clone(), Arc::clone(&store));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    store.lock().expect("lock").push(path.clone());
                    let body = match path.strip_prefix("/big/") {
                        Some(n) => Bytes::from(big(n.parse::<u32>().is_ok_and(|n| n % 2 == 1))),
                        None => Bytes::from_static(b"ok"),
                    };
                    async { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), seen)
}

/// Bytes of a `/big/N` answer: read in many frames.
const BIG: usize = 3 << 20;

fn big(changed: bool) -> Vec<u8> {
    let mut body = vec![b'x'; BIG];
    if changed {
        body[BIG - 1] = b'y';
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_targets_need_insecure_tls() {
    let (url, seen) = tls_target().await;
    let dir = temp_dir("https");
    let rec = dir.join("r.jsonl");
    let lines: Vec<String> =
        (0..5).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/s/{i}"}}"#, T0 + i)).collect();
    std::fs::write(&rec, lines.join("\n")).expect("write");
    for (insecure, arrive) in [(false, 0), (true, 5)] {
        seen.lock().expect("lock").clear();
        let extra = format!("[replayer]\ninsecure_tls = {insecure}\ntimeout = \"3s\"\n");
        let job = write_job(&dir, &url, &rec, "speed = \"max\"", &extra);
        let report = dir.join("report.json");
        let out =
            reprise(args(&["run", job.to_str().expect("p"), "--report-json", report.to_str().expect("p")]))
                .await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r = read_json(&report);
        assert_eq!(seen.lock().expect("lock").len(), arrive, "insecure_tls = {insecure}");
        if insecure {
            assert_eq!(r["totals"]["ok"], 5);
        } else {
            assert_eq!(r["totals"]["failed"], 5);
            assert_eq!(r["total"]["errors"]["tls"], 5, "{}", r["total"]);
        }
    }
}

/// The recorded baseline over https, from json records' `response` objects: answers are
/// compared as over plain HTTP; 3 MiB bodies, past `max_body`, are read frame by frame and
/// compared by their length and the hash of the whole, so the one whose last byte changed
/// differs and the same one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_are_compared_and_long_bodies_by_length_and_hash() {
    use base64::Engine as _;
    let (url, _) = tls_target().await;
    let dir = temp_dir("https-compare");
    let rec = dir.join("r.jsonl");
    let same = base64::engine::general_purpose::STANDARD.encode(big(false));
    let mut lines: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#"{{"ts":{},"method":"GET","url":"/s/{i}","response":{{"status":200,"body":"ok"}}}}"#,
                T0 + i
            )
        })
        .collect();
    for i in 0..2 {
        lines.push(format!(
            r#"{{"ts":{},"method":"GET","url":"/big/{i}","response":{{"status":200,"body_base64":"{same}"}}}}"#,
            T0 + 10 + i
        ));
    }
    // An answer recorded as 201: the status differs.
    lines.push(format!(
        r#"{{"ts":{},"method":"GET","url":"/s/9","response":{{"status":201,"body":"ok"}}}}"#,
        T0 + 20
    ));
    std::fs::write(&rec, lines.join("\n")).expect("write");
    let extra = "[replayer]\ninsecure_tls = true\ntimeout = \"5s\"\n[compare]\nbaseline = \"recorded\"\nmax_body = \"1KiB\"\n";
    let job = write_job(&dir, &url, &rec, "speed = \"max\"", extra);
    let report = run_job(&job, &dir, &[]).await;
    let cmp = &report["compare"];
    assert_eq!((cmp["compared"].as_u64(), cmp["differing"].as_u64()), (Some(7), Some(2)), "{cmp:#}");
    assert_eq!(cmp["over_max_body"].as_u64(), Some(2), "{cmp:#}");
    let fields: Vec<(String, u64)> = cmp["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .flat_map(|e| e["fields"].as_array().expect("fields").iter())
        .map(|f| (f["field"].as_str().expect("name").to_owned(), f["differing"].as_u64().expect("count")))
        .collect();
    assert_eq!(fields, [("body".to_owned(), 1), ("status".to_owned(), 1)], "{cmp:#}");
    let body = cmp["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["fields"][0]["field"] == "body")
        .expect("the endpoint whose body differs");
    let sample = &body["fields"][0]["samples"][0];
    assert!(
        sample["candidate"].as_str().is_some_and(|s| s.starts_with(&format!("{BIG} bytes, fnv1a "))),
        "{sample}"
    );
}
