//! https targets: a self-signed staging certificate is refused by default (counted as a tls
//! error, the job goes on and ends) and accepted with `[replayer] insecure_tls = true`.

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
                    store.lock().expect("lock").push(req.uri().path().to_owned());
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), seen)
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
