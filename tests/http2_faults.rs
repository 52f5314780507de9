//! HTTP/2 targets that misbehave (in-test servers on the `h2` crate, or raw bytes): refused
//! and reset streams, gRPC answers with a wrong length prefix or no `grpc-status`, a server
//! that sends GOAWAY on every connection, and one that answers with a truncated frame. Each
//! is counted under its own error kind, every record is accounted for, and the job ends.

mod common;

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An h2c server whose streams do what their path says: `/ok` answers a whole gRPC message
/// with status 0, `/refuse` and `/reset` reset the stream (REFUSED_STREAM, INTERNAL_ERROR),
/// `/short` answers a message shorter than its length prefix, `/nostatus` ends without a
/// `grpc-status`. With `goaway`, every connection is told to go away as soon as it opens.
async fn misbehaving(goaway: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                if goaway {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                }
                // Accepting drives the connection; each stream is answered by a task of its own.
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(answer(req, respond));
                }
            });
        }
    });
    format!("http://{addr}")
}

async fn answer(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let reset = match path.as_str() {
        "/refuse" => Some(h2::Reason::REFUSED_STREAM),
        "/reset" => Some(h2::Reason::INTERNAL_ERROR),
        _ => None,
    };
    if let Some(reason) = reset {
        respond.send_reset(reason);
        return;
    }
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("response");
    let Ok(mut stream) = respond.send_response(head, false) else { return };
    // A 3-byte message; `/short` claims 9.
    let length: u8 = if path == "/short" { 9 } else { 3 };
    let _ = stream.send_data(Bytes::from(vec![0, 0, 0, 0, length, 1, 2, 3]), path == "/nostatus");
    if path != "/nostatus" {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = stream.send_trailers(trailers);
    }
}

/// `n` gRPC calls to each of `paths`, one after another.
fn calls(dir: &std::path::Path, paths: &[&str], n: usize) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        for j in 0..n {
            lines.push(format!(
                r#"{{"ts":{},"method":"POST","url":"{path}","headers":{{"content-type":"application/grpc"}},"body_base64":"AAAAAAEA"}}"#,
                T0 + i * n + j
            ));
        }
    }
    let rec = dir.join("calls.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");
    rec
}

fn balanced(report: &serde_json::Value, sent: u64) {
    let t = &report["totals"];
    assert_eq!((t["balanced"].as_bool(), t["sent"].as_u64()), (Some(true), Some(sent)), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reset_and_malformed_grpc_answers_are_counted_by_kind() {
    let dir = temp_dir("h2-faults");
    let url = misbehaving(false).await;
    let rec = calls(&dir, &["/ok", "/refuse", "/reset", "/short", "/nostatus"], 4);
    let job =
        write_job(&dir, &url, &rec, "speed = \"max\"", "[replayer]\ntimeout = \"5s\"\nconcurrency = 4\n");
    let report = run_job(&job, &dir, &[]).await;
    balanced(&report, 20);
    assert_eq!(report["total"]["status"], serde_json::json!({"200": 4}), "{:#}", report["total"]);
    assert_eq!(
        report["total"]["errors"],
        serde_json::json!({"refused_stream": 4, "stream_reset": 4, "grpc_framing": 4, "grpc_no_status": 4})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_sends_goaway_on_every_connection_costs_each_request_one_goaway() {
    let dir = temp_dir("h2-goaway");
    let url = misbehaving(true).await;
    let rec = calls(&dir, &["/ok"], 6);
    let job =
        write_job(&dir, &url, &rec, "speed = \"max\"", "[replayer]\ntimeout = \"5s\"\nconcurrency = 2\n");
    let report = run_job(&job, &dir, &[]).await;
    balanced(&report, 6);
    assert_eq!(report["total"]["errors"], serde_json::json!({"goaway": 6}), "{:#}", report["total"]);
}

/// A server that answers the connection preface with a frame cut short and closes: every
/// request fails (as a reset connection or a protocol error), none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_fails_the_requests_and_the_job_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                let _ = tcp.read_exact(&mut preface).await;
                // A SETTINGS frame header that promises 12 bytes, then 3 of them.
                let _ = tcp.write_all(&[0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0]).await;
            });
        }
    });
    let dir = temp_dir("h2-truncated");
    let rec = calls(&dir, &["/ok"], 5);
    let job = write_job(
        &dir,
        &format!("http://{addr}"),
        &rec,
        "speed = \"max\"",
        "[replayer]\nhttp = \"2\"\ntimeout = \"3s\"\nconcurrency = 1\n",
    );
    let report = run_job(&job, &dir, &[]).await;
    balanced(&report, 5);
    let errors = report["total"]["errors"].as_object().expect("errors").clone();
    let failed: u64 = errors.values().filter_map(serde_json::Value::as_u64).sum();
    assert_eq!(failed, 5, "{errors:?}");
    assert!(
        errors.keys().all(|k| ["reset", "other", "connect", "goaway"].contains(&k.as_str())),
        "{errors:?}"
    );
}

/// What a strict server received: each request's path, body and the length of its big
/// header.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>, usize)>>>;

/// A server that allows two streams at a time and 1,000-byte windows: requests with 40 KB
/// bodies and 20 KB of headers (more than one frame: CONTINUATION) arrive whole, byte for
/// byte, with no stream over the limit (none is refused) and each answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_two_streams_and_small_windows_gets_every_byte() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received: Received = Default::default();
    let got = std::sync::Arc::clone(&received);
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let got = std::sync::Arc::clone(&got);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::Builder::new()
                    .max_concurrent_streams(2)
                    .initial_window_size(1_000)
                    .handshake::<_, Bytes>(tcp)
                    .await
                else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let got = std::sync::Arc::clone(&got);
                    tokio::spawn(async move {
                        let path = req.uri().path().to_owned();
                        let big = req.headers().get("x-big").map_or(0, |v| v.len());
                        let mut body = req.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        got.lock().expect("lock").push((path, bytes, big));
                        let head = http::Response::builder().status(200).body(()).expect("response");
                        let _ = respond.send_response(head, true);
                    });
                }
            });
        }
    });
    let dir = temp_dir("h2-strict");
    let big = "b".repeat(20_000);
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let body = format!("{i:05}").repeat(8_000);
            format!(
                r#"{{"ts":{},"method":"POST","url":"/u/{i}","headers":{{"x-big":"{big}"}},"body":"{body}"}}"#,
                T0 + i
            )
        })
        .collect();
    let rec = dir.join("posts.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");
    let job = write_job(
        &dir,
        &format!("http://{addr}"),
        &rec,
        "speed = \"max\"",
        "[replayer]\nhttp = \"2\"\ntimeout = \"10s\"\nconcurrency = 6\nmax_streams = 6\n",
    );
    let report = run_job(&job, &dir, &[]).await;
    server.abort();
    balanced(&report, 12);
    assert_eq!(report["total"]["status"], serde_json::json!({"200": 12}), "{:#}", report["total"]);
    let mut got = received.lock().expect("lock").clone();
    got.sort();
    let want: Vec<(String, Vec<u8>, usize)> =
        (0..12).map(|i| (format!("/u/{i}"), format!("{i:05}").repeat(8_000).into_bytes(), 20_000)).collect();
    let mut want = want;
    want.sort();
    assert_eq!(got.len(), 12);
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "{} got {} body bytes, header {}", w.0, g.1.len(), g.2);
    }
}
