//! `reprise record`, the capture proxy, through the real binary over loopback: curl and
//! h2load send traffic through it to real servers (Debian's h2o, over HTTP/1.1 and h2c, and
//! the in-test capture target). What the clients get must be byte for byte what the
//! upstream sent; the recording must hold every exchange and replay as the requests that
//! were sent; its answers must serve as a comparison's baseline; a sink that stalls or
//! fails must cost recordings, counted, never answers; and hostile clients are refused and
//! counted while others are served.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use common::*;

/// A running `reprise record`, its proxy and probe addresses.
struct Recording {
    guard: Guard,
    addr: String,
    http: String,
}

fn record(upstream: &str, out: &Path, extra: &[&str]) -> Recording {
    let mut a = vec!["--out", out.to_str().expect("path")];
    a.extend_from_slice(extra);
    record_with(upstream, &a)
}

/// `reprise record` with its sink (and anything else) in `extra`.
fn record_with(upstream: &str, extra: &[&str]) -> Recording {
    record_env(upstream, extra, &[])
}

/// [`record_with`] with environment variables.
fn record_env(upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> Recording {
    let mut a = vec!["record", "--listen", "127.0.0.1:0", "--upstream", upstream, "--http", "127.0.0.1:0"];
    a.extend_from_slice(extra);
    let (guard, line) = spawn_daemon_env(&a, env);
    Recording { guard, addr: field(&line, "addr"), http: field(&line, "http") }
}

impl Recording {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A value of the proxy's `/metrics` (the whole series name, labels included).
    async fn metric(&self, series: &str) -> u64 {
        let (_, text) = http("GET", &self.http, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    /// Waits until `series` reaches `n` (the writer flushes every 200 ms).
    async fn wait_for(&self, series: &str, n: u64) {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while self.metric(series).await < n {
            assert!(
                std::time::Instant::now() < until,
                "{series} stayed at {}, not {n}",
                self.metric(series).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the proxy as a signal does, and waits for it to exit cleanly.
    async fn stop(self) {
        interrupt(&self.guard);
        let status = wait_exit(self.guard).await;
        assert!(status.success(), "reprise record exited with {status}");
    }
}

/// Runs a client to its end, off the async threads.
async fn client(program: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program} ({e}): install it as scripts/test does"))
    })
    .await
    .expect("join")
}

/// What a client got: the status line and headers (all but `date`, which the upstream
/// sets per answer, and `connection`, each hop's own) and the body's bytes.
async fn fetch(url: &str, http: &str, dir: &Path) -> (Vec<String>, Vec<u8>) {
    let (head, body) = (dir.join("head"), dir.join("body"));
    let a = args(&["-s", http, "-D", head.to_str().expect("path"), "-o", body.to_str().expect("path"), url]);
    let out = client("curl", a).await;
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let head = std::fs::read_to_string(head).expect("head");
    let lines = head
        .lines()
        .map(str::trim)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !(l.is_empty() || l.starts_with("date:") || l.starts_with("connection:"))
        })
        .map(str::to_owned)
        .collect();
    (lines, std::fs::read(body).expect("body"))
}

/// h2o serving `www` over HTTP/1.1 and h2c on `port`.
fn h2o(dir: &Path, www: &Path, port: u16) -> Guard {
    let conf = dir.join(format!("h2o-{port}.conf"));
    let text = format!(
        "listen:\n  port: {port}\n  host: 127.0.0.1\nhosts:\n  default:\n    paths:\n      /:\n        file.dir: {}\naccess-log: /dev/null\nerror-log: {}\n",
        www.display(),
        dir.join(format!("error-{port}.log")).display()
    );
    std::fs::write(&conf, text).expect("conf");
    serve("h2o", "h2o", &["-c", conf.to_str().expect("path")], port)
}

/// Bytes that compress badly and are not UTF-8.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("the recording")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// curl over HTTP/1.1 and h2c and h2load over h2c, through the proxy to h2o: each answer
/// (status, headers, body) is what h2o gives directly; the recording holds every exchange,
/// and a body over --max-body keeps its head, its whole length and its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_pass_unchanged_and_every_exchange_is_recorded() {
    let dir = temp_dir("record-pass");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let blob = noise(200_000);
    std::fs::write(www.join("blob.bin"), &blob).expect("blob");
    std::fs::write(www.join("text.txt"), "a line of text\n".repeat(50)).expect("text");
    std::fs::write(www.join("page.json"), r#"{"id":7,"price":10}"#).expect("json");
    let port = free_port();
    let _h2o = h2o(&dir, &www, port);
    let upstream = format!("http://127.0.0.1:{port}");
    let out = dir.join("capture.jsonl");
    let proxy = record(&upstream, &out, &["--max-body", "64KiB"]);

    let paths = ["/text.txt", "/blob.bin", "/page.json", "/missing"];
    for http in ["--http1.1", "--http2-prior-knowledge"] {
        for p in paths {
            let direct = fetch(&format!("{upstream}{p}"), http, &dir).await;
            let proxied = fetch(&format!("{}{p}", proxy.url()), http, &dir).await;
            assert_eq!(proxied.0, direct.0, "{http} {p}: headers");
            assert!(proxied.1 == direct.1, "{http} {p}: the body differs");
        }
    }
    let load =
        client("h2load", args(&["-n", "100", "-c", "2", "-m", "4", &format!("{}/text.txt", proxy.url())]))
            .await;
    let said = String::from_utf8_lossy(&load.stdout);
    assert!(said.contains("100 succeeded, 0 failed"), "{said}");
    proxy.wait_for("reprise_record_recorded_total", 108).await;
    assert_eq!(proxy.metric("reprise_record_exchanges_total").await, 108);
    proxy.stop().await;

    let recorded = lines(&out);
    assert_eq!(recorded.len(), 108);
    let version = |v: &str| recorded.iter().filter(|r| r["version"] == v).count();
    assert_eq!((version("HTTP/1.1"), version("HTTP/2")), (4, 104));
    let blobs: Vec<_> = recorded.iter().filter(|r| r["url"] == "/blob.bin").collect();
    assert_eq!(blobs.len(), 2);
    for r in blobs {
        let answer = &r["response"];
        assert_eq!(answer["status"], 200);
        assert_eq!(answer["body_length"], 200_000);
        assert_eq!(answer["body_fnv1a"], format!("{:016x}", fnv1a(&blob)));
        let head = base64::engine::general_purpose::STANDARD
            .decode(answer["body_base64"].as_str().expect("base64"))
            .expect("decodes");
        assert!(head == blob[..64 * 1024], "the first 64 KiB are kept");
    }
    let json = recorded.iter().find(|r| r["url"] == "/page.json").expect("page.json");
    assert_eq!(json["response"]["body"], r#"{"id":7,"price":10}"#);
    assert_eq!(json["method"], "GET");
    assert!(json["headers"]["user-agent"].as_str().is_some_and(|u| u.starts_with("curl/")), "{json}");
    let missing = recorded.iter().find(|r| r["url"] == "/missing").expect("missing");
    assert_eq!(missing["response"]["status"], 404);
}

/// Requests of every kind (a query, cookies, a bearer token, a JSON body, a binary body,
/// a DELETE) recorded on their way to one target replay to another as the same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_as_the_requests_that_were_sent() {
    let dir = temp_dir("record-replay");
    let (first, second) = (Capture::start().await, Capture::start().await);
    let out = dir.join("capture.jsonl");
    let proxy = record(&first.url(), &out, &[]);
    let binary: Vec<u8> = (0..=255).collect();
    let bin = dir.join("bin");
    std::fs::write(&bin, &binary).expect("bin");
    let url = |p: &str| format!("{}{p}", proxy.url());
    let sent = [
        args(&[
            "-H",
            "Cookie: session=abc; theme=dark",
            "-H",
            "Authorization: Bearer tok123",
            "-H",
            "User-Agent: shop-app/2.1",
            "-H",
            "X-Trace-Id: 4bf92f35",
            &url("/search?q=a%20b&x=1"),
        ]),
        args(&[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"sku":"A-1","qty":2}"#,
            &url("/cart"),
        ]),
        args(&["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .into_iter()
            .chain([format!("@{}", bin.display()), url("/blob")])
            .collect(),
        args(&["-X", "DELETE", &url("/item/7")]),
    ];
    for a in sent {
        let mut a = a;
        a.extend(args(&["-s", "-o", "/dev/null", "--http1.1"]));
        assert!(client("curl", a).await.status.success());
    }
    proxy.wait_for("reprise_record_recorded_total", 4).await;
    proxy.stop().await;

    let job = write_job(&dir, &second.url(), &out, "speed = \"max\"", "");
    let report = run_job(&job, &dir, &[]).await;
    assert_eq!(report["total"]["status"], serde_json::json!({"200": 4}), "{}", report["totals"]);
    let shown = |c: &Captured| {
        let kept = ["cookie", "authorization", "user-agent", "x-trace-id", "content-type"];
        let mut headers: Vec<(String, Vec<u8>)> = c
            .headers
            .iter()
            .filter(|(n, _)| kept.contains(&n.to_ascii_lowercase().as_str()))
            .cloned()
            .collect();
        headers.sort();
        (c.method.clone(), c.path.clone(), headers, c.body.clone())
    };
    let mut original: Vec<_> = first.requests().iter().map(shown).collect();
    let mut replayed: Vec<_> = second.requests().iter().map(shown).collect();
    original.sort();
    replayed.sort();
    assert_eq!(original.len(), 4);
    assert_eq!(replayed, original);
    assert!(original.iter().any(|r| r.3 == binary), "the binary body went through");
}

/// The recorded answers are the baseline of a comparison: against a candidate that
/// changed one price, exactly that answer differs, in that field; the cut binary body
/// compares by its length and hash, and is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_answers_flag_exactly_a_known_change_in_a_candidate() {
    let dir = temp_dir("record-baseline");
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    for (www, changed) in [(&v1, 10), (&v2, 11)] {
        std::fs::create_dir_all(www.join("p")).expect("www");
        for i in 1..=5 {
            let price = if i == 3 { changed } else { 10 };
            std::fs::write(www.join(format!("p/{i}")), format!(r#"{{"id":{i},"price":{price}}}"#))
                .expect("json");
        }
        std::fs::write(www.join("blob"), noise(100_000)).expect("blob");
    }
    let (p1, p2) = (free_port(), free_port());
    let (_h1, _h2) = (h2o(&dir, &v1, p1), h2o(&dir, &v2, p2));
    let out = dir.join("capture.jsonl");
    let proxy = record(&format!("http://127.0.0.1:{p1}"), &out, &["--max-body", "16KiB"]);
    for p in ["/p/1", "/p/2", "/p/3", "/p/4", "/p/5", "/blob"] {
        let got = client("curl", args(&["-s", "-o", "/dev/null", &format!("{}{p}", proxy.url())])).await;
        assert!(got.status.success());
    }
    proxy.wait_for("reprise_record_recorded_total", 6).await;
    proxy.stop().await;

    let compare = "[compare]\nbaseline = \"recorded\"\nheaders = [\"content-type\"]\n";
    let job = write_job(&dir, &format!("http://127.0.0.1:{p2}"), &out, "speed = \"max\"", compare);
    let report = run_job(&job, &dir, &[]).await;
    let cmp = &report["compare"];
    assert_eq!((cmp["compared"].as_u64(), cmp["differing"].as_u64()), (Some(6), Some(1)), "{cmp:#}");
    let differing: Vec<_> = cmp["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["differing"].as_u64() > Some(0))
        .flat_map(|e| e["fields"].as_array().expect("fields").iter().map(|f| f["field"].clone()))
        .collect();
    assert_eq!(differing, [serde_json::json!("$.price")], "{cmp:#}");
    assert!(cmp["over_max_body"].as_u64() >= Some(1), "the cut body compared by hash: {cmp:#}");
}

/// A sink that stalls (a pipe nobody reads) fills the queue to its bound: exchanges are
/// dropped and counted as `queue_full` while every client gets its answer. A sink that
/// fails (`/dev/full`) drops and counts each as `write_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_failing_sink_drops_and_counts_and_clients_are_answered() {
    let dir = temp_dir("record-stall");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("page"), noise(4096)).expect("page");
    let port = free_port();
    let _h2o = h2o(&dir, &www, port);
    let upstream = format!("http://127.0.0.1:{port}");

    let fifo = dir.join("stalled");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    // Held open for reading (so the proxy can open it) and never read.
    let _held = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).expect("the fifo");
    let proxy = record(&upstream, &fifo, &["--queue", "256KiB"]);
    let load =
        client("h2load", args(&["-n", "2000", "-c", "4", "-m", "8", &format!("{}/page", proxy.url())])).await;
    let said = String::from_utf8_lossy(&load.stdout);
    assert!(said.contains("2000 succeeded, 0 failed"), "{said}");
    let dropped = proxy.metric("reprise_record_dropped_total{reason=\"queue_full\"}").await;
    let queued = proxy.metric("reprise_record_queue_bytes").await;
    assert!(dropped >= 1000, "most of 9 MB cannot pass a stalled pipe: {dropped} dropped");
    assert!(queued <= 256 * 1024, "the queue holds at most its bound: {queued}");
    assert_eq!(proxy.metric("reprise_record_exchanges_total").await, 2000);
    proxy.stop().await;

    let proxy = record(&upstream, Path::new("/dev/full"), &[]);
    for _ in 0..20 {
        let (head, body) = fetch(&format!("{}/page", proxy.url()), "--http1.1", &dir).await;
        assert_eq!((head[0].as_str(), body.len()), ("HTTP/1.1 200 OK", 4096));
    }
    proxy.wait_for("reprise_record_dropped_total{reason=\"write_failed\"}", 20).await;
    assert_eq!(proxy.metric("reprise_record_recorded_total").await, 0);
    proxy.stop().await;
}

/// A client that sends its head too slowly, one whose head is too large, and one that
/// sends broken HTTP/2 frames are each refused and counted; a well-behaved client is
/// answered meanwhile, and only its exchanges are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_and_counted_and_others_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir("record-hostile");
    let target = Capture::start().await;
    let out = dir.join("capture.jsonl");
    let proxy = record(&target.url(), &out, &["--header-timeout", "1s"]);

    // Slowloris: half a head, then nothing. The proxy closes the connection.
    let mut slow = tokio::net::TcpStream::connect(&proxy.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n").await.expect("write");
    // Oversized: a 100 KB header.
    let mut big = tokio::net::TcpStream::connect(&proxy.addr).await.expect("connect");
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    let _ = big.write_all(head.as_bytes()).await;
    // Broken HTTP/2: the preface, then a DATA frame on stream 0 (a protocol error).
    let mut broken = tokio::net::TcpStream::connect(&proxy.addr).await.expect("connect");
    broken.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("write");
    broken.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
    broken.write_all(&[0, 0, 2, 0, 0, 0, 0, 0, 0, b'h', b'i']).await.expect("data");

    let served = client(
        "curl",
        args(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/ok", proxy.url())]),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&served.stdout), "200");
    for (name, mut stream) in [("slow", slow), ("big", big), ("broken", broken)] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{name}: the proxy keeps the connection open");
    }
    for reason in ["header_timeout", "too_large", "malformed"] {
        proxy.wait_for(&format!("reprise_record_refused_total{{reason=\"{reason}\"}}"), 1).await;
    }
    proxy.wait_for("reprise_record_recorded_total", 1).await;
    assert_eq!(proxy.metric("reprise_record_exchanges_total").await, 1);
    proxy.stop().await;
    assert_eq!(target.requests().len(), 1, "only the well-behaved request went up");
    assert_eq!(lines(&out).len(), 1);
}

/// The gRPC client's lines, run against `addr` (HOST:PORT).
async fn grpc_calls(addr: &str) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/grpc_client.py");
    let out = client("python3", args(&[script, addr])).await;
    assert!(out.status.success(), "grpc_client.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// gRPC calls of every kind (unary, an error, server-, client- and bidirectional
/// streaming) pass through the proxy as they do without it; the recording holds each call
/// with its messages and `grpc-status`, replays to the server as the same messages, and as
/// a baseline finds the one field a new build changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_and_their_recording_replays_and_compares() {
    let dir = temp_dir("record-grpc");
    let (log1, log2) = (dir.join("v1.log"), dir.join("v2.log"));
    let (_v1, url) = grpc_build(&log1, "v1");
    let out = dir.join("capture.jsonl");
    let proxy = record(&url, &out, &[]);
    let direct = grpc_calls(url.trim_start_matches("http://")).await;
    let proxied = grpc_calls(&proxy.addr).await;
    assert_eq!(direct.len(), 5);
    assert!(direct.iter().any(|l| l.contains("NOT_FOUND")), "{direct:?}");
    assert_eq!(proxied, direct);
    proxy.wait_for("reprise_record_recorded_total", 5).await;
    proxy.stop().await;

    let recorded = lines(&out);
    assert_eq!(recorded.len(), 5);
    for r in &recorded {
        assert_eq!((r["version"].as_str(), r["method"].as_str()), (Some("HTTP/2"), Some("POST")), "{r}");
        assert!(
            r["headers"]["content-type"].as_str().is_some_and(|c| c.starts_with("application/grpc")),
            "{r}"
        );
        let a = &r["response"];
        let status = a["trailers"]["grpc-status"].as_str().or(a["headers"]["grpc-status"].as_str());
        let want = if r["body_base64"].as_str() == Some("AAAAAANuZjI=") { "5" } else { "0" };
        assert_eq!(status, Some(want), "{r}");
    }

    let (_v2, candidate) = grpc_build(&log2, "v2");
    let compare = "[replayer]\nhttp = \"2\"\n[compare]\nbaseline = \"recorded\"\n";
    let job = write_job(&dir, &candidate, &out, "speed = \"max\"", compare);
    let report = run_job(&job, &dir, &[]).await;
    let cmp = &report["compare"];
    // The NOT_FOUND call failed, as recorded: a failed call is counted, not compared.
    let counts = ["compared", "differing", "uncompared"].map(|k| cmp[k].as_u64());
    assert_eq!(counts, [Some(4), Some(1), Some(1)], "{cmp:#}");
    let mut sent: Vec<String> =
        std::fs::read_to_string(&log1).expect("v1 log").lines().map(str::to_owned).collect();
    let mut replayed: Vec<String> =
        std::fs::read_to_string(&log2).expect("v2 log").lines().map(str::to_owned).collect();
    sent.sort();
    replayed.sort();
    // The v1 server saw each call twice: once directly, once through the proxy.
    sent.dedup();
    assert_eq!(replayed, sent);
}

/// Over TLS with the user's certificate the proxy speaks h2 or HTTP/1.1 as ALPN chose,
/// to a plain upstream, and records which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_get_h2_or_http1_and_are_recorded() {
    let dir = temp_dir("record-tls");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("page.json"), r#"{"id":1}"#).expect("page");
    let port = free_port();
    let _h2o = h2o(&dir, &www, port);
    let ca = pki::Authority::new("shop CA");
    let (cert, key) = ca.sign(&dir, "shop", &["localhost", "127.0.0.1"]);
    let ca_file = ca.write(&dir, "ca");
    let out = dir.join("capture.jsonl");
    let tls = ["--tls-cert", cert.to_str().expect("path"), "--tls-key", key.to_str().expect("path")];
    let proxy = record(&format!("http://127.0.0.1:{port}"), &out, &tls);
    let url = format!("https://{}/page.json", proxy.addr);
    for http in ["--http2", "--http1.1"] {
        let a =
            args(&["-s", http, "--cacert", ca_file.to_str().expect("path"), "-w", " %{http_version}", &url]);
        let got = client("curl", a).await;
        let want = if http == "--http2" { r#"{"id":1} 2"# } else { r#"{"id":1} 1.1"# };
        assert_eq!(String::from_utf8_lossy(&got.stdout), want, "{http}");
    }
    let plain =
        client("curl", args(&["-s", "-o", "/dev/null", &format!("http://{}/page.json", proxy.addr)])).await;
    assert!(!plain.status.success() || plain.stdout.is_empty(), "plain HTTP is not served on a TLS port");
    proxy.wait_for("reprise_record_recorded_total", 2).await;
    proxy.wait_for("reprise_record_refused_total{reason=\"tls\"}", 1).await;
    proxy.stop().await;
    let versions: Vec<_> = lines(&out).iter().map(|r| r["version"].as_str().map(str::to_owned)).collect();
    assert_eq!(versions, [Some("HTTP/2".to_owned()), Some("HTTP/1.1".to_owned())]);
}

/// Every message of `topic` (3 partitions) from its start, once `n` have come (or 30 s):
/// (partition, key, value).
async fn consume(brokers: &str, topic: &str, n: usize) -> Vec<(i32, String, serde_json::Value)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message as _;
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "record-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            list.add_partition_offset(&topic, p, rdkafka::Offset::Beginning).expect("partition");
        }
        consumer.assign(&list).expect("assign");
        let mut got = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < n && std::time::Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("a json record");
                got.push((m.partition(), key, value));
            }
        }
        got
    })
    .await
    .expect("join")
}

/// With Kafka as the sink each exchange is one message, its json record keyed by the
/// chosen header, so a session's exchanges share a partition; a broker that does not
/// answer costs recordings, dropped and counted, never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_gets_each_exchange_keyed_and_a_dead_broker_costs_only_recordings() {
    let k = kafka::kafka().await;
    let topic = k.topic("record").await;
    let target = Capture::start().await;
    let sink =
        ["--kafka-brokers", k.brokers.as_str(), "--kafka-topic", topic.as_str(), "--kafka-key", "x-session"];
    let proxy = record_with(&target.url(), &sink);
    for i in 0..30 {
        let session = format!("X-Session: s{}", i % 3);
        let url = format!("{}/item/{i}", proxy.url());
        assert!(
            client("curl", args(&["-s", "-o", "/dev/null", "-H", &session, &url])).await.status.success()
        );
    }
    proxy.wait_for("reprise_record_recorded_total", 30).await;
    proxy.stop().await;
    let got = consume(&k.brokers, &topic, 30).await;
    assert_eq!(got.len(), 30);
    let mut urls: Vec<String> =
        got.iter().map(|(_, _, v)| v["url"].as_str().expect("url").to_owned()).collect();
    urls.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("/item/{i}")).collect();
    want.sort();
    assert_eq!(urls, want);
    for (partition, key, value) in &got {
        assert_eq!(value["headers"]["x-session"].as_str(), Some(key.as_str()), "keyed by the header");
        let mut same = got.iter().filter(|(_, k, _)| k == key).map(|(p, _, _)| *p);
        assert!(same.all(|p| p == *partition), "session {key} in one partition");
    }

    let dead = format!("127.0.0.1:{}", free_port());
    let sink = ["--kafka-brokers", dead.as_str(), "--kafka-topic", "nowhere", "--queue", "64KiB"];
    let proxy = record_with(&target.url(), &sink);
    let body = "x".repeat(1024);
    for i in 0..200 {
        let url = format!("{}/dead/{i}", proxy.url());
        let got =
            client("curl", args(&["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", &body, &url])).await;
        assert_eq!(String::from_utf8_lossy(&got.stdout), "200", "request {i}");
    }
    let full = proxy.metric("reprise_record_dropped_total{reason=\"queue_full\"}").await;
    assert!(full >= 100, "64 KiB of 1 KiB bodies waiting for no broker: {full} dropped");
    assert_eq!(proxy.metric("reprise_record_recorded_total").await, 0);
    proxy.stop().await;
}

/// What is kept is chosen at capture time: a job file's `[[filter]]` rule leaves health
/// checks out, `--sample` keyed by a session header records whole sessions or none, and
/// `--redact` records each token as a keyed hash, the same token as the same hash. What
/// is forwarded is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_sampling_and_redaction_choose_what_is_kept() {
    let dir = temp_dir("record-privacy");
    let target = Capture::start().await;
    let rules = dir.join("job.toml");
    let job = "[job]\ntarget = \"http://x\"\n[[filter]]\nname = \"health\"\naction = \"deny\"\npath = \"^/health\"\n";
    std::fs::write(&rules, job).expect("rules");
    let out = dir.join("capture.jsonl");
    let flags = [
        "--out",
        out.to_str().expect("path"),
        "--filter",
        rules.to_str().expect("path"),
        "--sample",
        "0.5",
        "--sample-key",
        "x-session",
        "--redact",
        "authorization",
    ];
    let proxy = record_env(&target.url(), &flags, &[("REPRISE_REDACT_KEY", "a key of sixteen+ chars")]);
    for i in 0..120 {
        let session = format!("X-Session: s{}", i % 40);
        let token = format!("Authorization: Bearer tok{}", i % 5);
        let url = format!("{}/cart/{i}", proxy.url());
        assert!(
            client("curl", args(&["-s", "-o", "/dev/null", "-H", &session, "-H", &token, &url]))
                .await
                .status
                .success()
        );
    }
    for i in 0..10 {
        let url = format!("{}/health/{i}", proxy.url());
        assert!(client("curl", args(&["-s", "-o", "/dev/null", &url])).await.status.success());
    }
    assert_eq!(proxy.metric("reprise_record_filtered_total{rule=\"health\"}").await, 10);
    let sampled_out = proxy.metric("reprise_record_sampled_out_total").await;
    proxy.wait_for("reprise_record_recorded_total", 120 - sampled_out).await;
    proxy.stop().await;

    let recorded = lines(&out);
    assert_eq!(recorded.len() as u64, 120 - sampled_out);
    assert!((30..=90).contains(&recorded.len()), "about half of 40 sessions: {} exchanges", recorded.len());
    let mut per_session = std::collections::BTreeMap::<String, usize>::new();
    let mut hashes = std::collections::BTreeMap::<usize, String>::new();
    for r in &recorded {
        let url = r["url"].as_str().expect("url");
        assert!(url.starts_with("/cart/"), "health checks are filtered: {url}");
        *per_session.entry(r["headers"]["x-session"].as_str().expect("session").to_owned()).or_default() += 1;
        let i: usize = url["/cart/".len()..].parse().expect("index");
        let hash = r["headers"]["authorization"].as_str().expect("authorization").to_owned();
        assert!(hash.starts_with("redacted:") && !hash.contains("tok"), "{hash}");
        assert_eq!(
            hashes.entry(i % 5).or_insert_with(|| hash.clone()),
            &hash,
            "token {} hashes alike",
            i % 5
        );
    }
    assert!(per_session.values().all(|n| *n == 3), "whole sessions only: {per_session:?}");
    let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
    assert_eq!(distinct.len(), hashes.len(), "different tokens, different hashes");
    let sent = target.requests();
    assert_eq!(sent.len(), 130, "everything is forwarded");
    assert!(
        sent.iter()
            .filter(|r| r.path.starts_with("/cart/"))
            .all(|r| { r.header("authorization").is_some_and(|v| v.starts_with(b"Bearer tok")) })
    );
}

/// `reprise run` with `args`, and the address of its live page (its first line on stderr);
/// the rest of its stderr is drained.
fn running(args: &[&str]) -> (Guard, String) {
    use std::io::BufRead as _;
    let mut child = Command::new(common::BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("reprise run");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let guard = Guard(child);
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first.split("live page at http://").nth(1).map(|a| a.trim_end_matches('/').to_owned());
    let addr = addr.unwrap_or_else(|| panic!("reprise run did not start: {first}"));
    std::thread::spawn(move || lines.for_each(drop));
    (guard, addr)
}

/// A value of a Prometheus exposition (`series` with its labels, exactly as written).
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Four JSON answers under `www/p/`, each with this price.
fn prices(www: &Path, price: u32) {
    std::fs::create_dir_all(www.join("p")).expect("www");
    for i in 1..=4 {
        std::fs::write(www.join(format!("p/{i}.json")), format!(r#"{{"id":{i},"price":{price}}}"#))
            .expect("json");
    }
}

/// The shadow's job file: follow `topic`, replay to the candidate, compare with the
/// recorded answers in 2 s windows, gate on the last window's diff rate.
fn shadow_job(dir: &Path, candidate: u16, brokers: &str, topic: &str) -> std::path::PathBuf {
    let job = format!(
        "[job]\nid = \"shadow\"\ntarget = \"http://127.0.0.1:{candidate}\"\nreplayers = 2\n\
         [fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"shadow\"\nfollow = true\n\
         [compare]\nbaseline = \"recorded\"\nwindow = \"2s\"\n\
         [thresholds]\n\"*\" = [\"window_diff_rate < 10%\"]\n"
    );
    let path = dir.join("shadow.toml");
    std::fs::write(&path, job).expect("job");
    path
}

/// Production traffic through the proxy at `addr`, GETs of the four answers, 20 a second,
/// until cancelled.
fn steady_traffic(addr: String) -> (tokio::task::JoinHandle<()>, tokio_util::sync::CancellationToken) {
    let stop = tokio_util::sync::CancellationToken::new();
    let sending = tokio::spawn({
        let stop = stop.clone();
        async move {
            for i in 0..2_000 {
                let path = format!("/p/{}.json", i % 4 + 1);
                if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                    exchange(&mut s, &request("GET", &addr, &path, "", "")).await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    });
    (sending, stop)
}

/// Each window's diff rate (`None` where nothing was compared), oldest first.
fn window_rates(windows: &serde_json::Value) -> Vec<Option<f64>> {
    let w = windows.as_array().expect("windows");
    w.iter()
        .map(|w| {
            let (n, d) = (w["total"]["compared"].as_u64()?, w["total"]["differing"].as_u64()?);
            (n > 0).then(|| d as f64 / n as f64)
        })
        .collect()
}

/// The live page's frame once it shows the last window differing whole (a frame is up to
/// a second old: the window it shows may be the one before), or the last frame seen.
async fn frame_of_a_differing_window(admin: &str) -> serde_json::Value {
    let mut frame = first_event(admin).await["frame"].clone();
    for _ in 0..20 {
        if frame["total"]["window_diff_rate"] == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        frame = first_event(admin).await["frame"].clone();
    }
    frame
}

/// The page in Chromium shows the last window differing whole, the job's rate diluted,
/// every endpoint's window column, and a line of windows.
async fn the_page_shows_a_differing_window(admin: &str, profile: &Path) {
    let page = common::browser::drive(&["compare", admin, profile.to_str().expect("path")]).await;
    assert_eq!(page["errors"], serde_json::json!([]), "{page:#}");
    assert_eq!(page["window"], "100.00%", "the last window differs whole: {page:#}");
    assert_eq!(page["window_label"], "diff rate (last 2 s)");
    let job_rate: f64 = page["job"].as_str().and_then(|t| t.trim_end_matches('%').parse().ok()).expect("%");
    assert!(job_rate > 0.0 && job_rate < 100.0, "the job's rate, diluted: {page:#}");
    let rows = page["rows"].as_array().expect("rows");
    assert!(rows.iter().all(|r| r.as_str().is_some_and(|r| r.ends_with("100.00%"))), "{page:#}");
    assert!(page["points"][0].as_str().is_some_and(|p| p.contains(' ')), "a line of windows: {page:#}");
}

/// The standing shadow (the recipe of docs/capture.md): `reprise record` sends each exchange
/// to Kafka, and a job following the topic replays it against a candidate and compares the
/// answer with the recorded one, window by window (2 s here, a minute by default). While
/// the candidate answers as production does, the last window's diff rate is 0 and the gate
/// (`window_diff_rate`) passes; once it starts answering another price, the window's rate
/// rises to all of it, the gate fails on /metrics (an alert's condition) while the job's
/// cumulative rate, diluted by the agreeing past, stays lower; the live page's frame and
/// the report chart the windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_shadow_shows_when_its_candidate_starts_to_differ() {
    let dir = temp_dir("record-shadow");
    let (prod, cand) = (dir.join("prod"), dir.join("cand"));
    prices(&prod, 10);
    prices(&cand, 10);
    let (up, candidate) = (free_port(), free_port());
    let _prod = h2o(&dir, &prod, up);
    let port = candidate.to_string();
    let cand_dir = cand.to_str().expect("path");
    let serve_args = ["-m", "http.server", "--bind", "127.0.0.1", "--directory", cand_dir, &port];
    let _candidate = serve("python3", "python3", &serve_args, candidate);
    let k = kafka::kafka().await;
    let topic = k.topic("shadow").await;
    let sink = ["--kafka-brokers", k.brokers.as_str(), "--kafka-topic", topic.as_str()];
    let proxy = record_with(&format!("http://127.0.0.1:{up}"), &sink);
    let job_file = shadow_job(&dir, candidate, &k.brokers, &topic);
    let report = dir.join("report.json");
    let run = ["run", job_file.to_str().expect("path"), "--report-json", report.to_str().expect("path")];
    let (shadow, admin) = running(&run);
    let (sending, stop) = steady_traffic(proxy.addr.clone());

    let gate = "{job_id=\"shadow\",endpoint=\"*\",expression=\"window_diff_rate < 10%\"}";
    let metrics = || async { http("GET", &admin, "/metrics").await.1 };
    let window = "reprise_compare_window_diff_rate{job_id=\"shadow\",endpoint=\"*\"}";
    let agreeing = wait_until_async(
        || async {
            let m = metrics().await;
            gauge(&m, window) == Some(0.0)
                && gauge(&m, &format!("reprise_threshold_passing{gate}")) == Some(1.0)
        },
        Duration::from_secs(60),
    )
    .await;
    assert!(agreeing, "a window compared, none differing, the gate passing:\n{}", metrics().await);

    prices(&cand, 11);
    let differing =
        wait_until_async(|| async { gauge(&metrics().await, window) == Some(1.0) }, Duration::from_secs(60))
            .await;
    let m = metrics().await;
    assert!(differing, "a whole window differing once the candidate changed:\n{m}");
    assert_eq!(gauge(&m, &format!("reprise_threshold_passing{gate}")), Some(0.0), "the gate fails:\n{m}");
    assert_eq!(gauge(&m, &format!("reprise_threshold_measured{gate}")), Some(100.0));
    let same = "reprise_compare_requests{job_id=\"shadow\",endpoint=\"GET /p/1.json\",outcome=\"same\"}";
    assert!(gauge(&m, same) > Some(0.0), "the job's counts keep the agreeing past:\n{m}");
    let frame = frame_of_a_differing_window(&admin).await;
    assert_eq!(frame["total"]["window_diff_rate"], 1.0, "the page shows the window: {frame:#}");
    assert!(frame["total"]["diff_rate"].as_f64() < Some(1.0), "the job's rate is diluted: {frame:#}");
    assert_eq!(frame["compare"]["window_s"], 2);
    the_page_shows_a_differing_window(&admin, &dir.join("profile")).await;
    let charted = window_rates(&frame["compare"]["windows"]);
    let first_zero = charted.iter().position(|r| *r == Some(0.0));
    let first_all = charted.iter().position(|r| *r == Some(1.0));
    assert!(first_zero < first_all && first_zero.is_some(), "agreement, then a rise: {charted:?}");

    stop.cancel();
    sending.await.expect("traffic");
    proxy.stop().await;
    interrupt(&shadow);
    let status = wait_exit(shadow).await;
    let report = read_json(&report);
    assert_eq!(status.code(), Some(99), "stopped with its gate failing on the last window");
    let reported = window_rates(&report["compare"]["windows"]);
    assert!(reported.len() >= charted.len(), "the report holds every window: {reported:?}");
    let listed = report["compare"]["windows"].as_array().expect("windows");
    assert!(
        listed.iter().rev().skip(1).all(|w| w.get("open").is_none()),
        "only the last may be open: {listed:?}"
    );
}

/// Over HTTP/1.1 a client connection keeps its own upstream connection; when the upstream
/// closes it (after an answer, or idle as keep-alive timeouts do), the client's next
/// request on the same connection goes up on a new one: every answer arrives, every
/// exchange is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_its_connections_costs_no_answer() {
    let target = Capture::start_with(Some(Duration::from_millis(100))).await;
    let dir = temp_dir("record-reconnect");
    let out = dir.join("capture.jsonl");
    let proxy = record(&target.url(), &out, &[]);
    let script = "import http.client, sys, time\n\
                  c = http.client.HTTPConnection(sys.argv[1])\n\
                  seen = []\n\
                  for path, headers, pause in [('/a', {'x-close': '1'}, 0), ('/b', {}, 0.4), ('/c', {}, 0)]:\n\
                  \x20   c.request('GET', path, headers=headers)\n\
                  \x20   r = c.getresponse(); r.read(); seen.append(str(r.status))\n\
                  \x20   sock = c.sock; time.sleep(pause)\n\
                  print(' '.join(seen), 'one connection' if c.sock is sock else 'reconnected')\n";
    let got = client("python3", args(&["-c", script, &proxy.addr])).await;
    let text = String::from_utf8_lossy(&got.stdout);
    assert_eq!(text.trim(), "200 200 200 one connection", "{}", String::from_utf8_lossy(&got.stderr));
    let paths: Vec<String> = target.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    proxy.wait_for("reprise_record_recorded_total", 3).await;
    proxy.stop().await;
    assert_eq!(lines(&out).len(), 3);
    assert!(lines(&out).iter().all(|l| l["response"]["status"] == 200));
}

/// `--upstream-http` sets the version requests go up in, whatever the client speaks: 1.1
/// for a service that knows no HTTP/2 (a client's concurrent streams each on an upstream
/// connection of its own at a time), 2 for one that speaks h2c only. An HTTP/2 upstream
/// that ends its connections every 10 requests (a GOAWAY, as nginx's `keepalive_requests`),
/// with 4 streams in flight, costs no answer: what it refused unprocessed goes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_is_spoken_to_in_the_version_chosen() {
    let dir = temp_dir("record-upstream-http");
    let (h1, h2) = (free_port(), free_port());
    // Each answer says the version it came in and its path.
    let http = format!(
        "access_log off;\nkeepalive_requests 10;\n\
         server {{ listen 127.0.0.1:{h1}; listen 127.0.0.1:{h2} http2; \
         location / {{ return 200 \"$server_protocol $request_uri\\n\"; }} }}"
    );
    let _nginx = nginx(&dir, &http, &[h1, h2]);
    let upstream = format!("http://127.0.0.1:{h1}");
    let wrong =
        ["record", "--listen", "127.0.0.1:0", "--upstream", &upstream, "--out", "x", "--upstream-http", "3"];
    let wrong = reprise(args(&wrong)).await;
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(wrong.status.code() == Some(2) && said.contains("write same, 1.1 or 2"), "{said}");
    // (--upstream-http, upstream port, the client's version as curl and h2load choose it,
    // as recorded, and as the upstream saw it)
    let cases = [
        ("1.1", h1, ["--http2-prior-knowledge", "-m4"], "HTTP/2", "HTTP/1.1"),
        ("2", h2, ["--http1.1", "--h1"], "HTTP/1.1", "HTTP/2.0"),
        ("same", h2, ["--http2-prior-knowledge", "-m4"], "HTTP/2", "HTTP/2.0"),
    ];
    for (choice, port, [curl_flag, h2load_flag], recorded, seen) in cases {
        let out = dir.join(format!("capture-{choice}.jsonl"));
        let proxy = record(&format!("http://127.0.0.1:{port}"), &out, &["--upstream-http", choice]);
        let url = format!("{}/v/{choice}", proxy.url());
        let load = client("h2load", args(&["-n", "40", "-c", "1", h2load_flag, &url])).await;
        let said = String::from_utf8_lossy(&load.stdout);
        assert!(said.contains("40 succeeded, 0 failed") && said.contains("40 2xx"), "{choice}: {said}");
        let got = client("curl", args(&["-s", curl_flag, &url])).await;
        assert_eq!(String::from_utf8_lossy(&got.stdout), format!("{seen} /v/{choice}\n"), "{choice}");
        proxy.wait_for("reprise_record_recorded_total", 41).await;
        proxy.stop().await;
        let lines = lines(&out);
        assert_eq!(lines.len(), 41, "{choice}");
        for l in &lines {
            assert_eq!(
                (l["version"].as_str(), l["response"]["status"].as_u64()),
                (Some(recorded), Some(200)),
                "{l}"
            );
        }
    }
}

/// Reads an HTTP/1.1 head (to its blank line, with what came after it in the same read) as
/// text, giving up after 10 s.
async fn raw_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("a read");
            assert!(n > 0, "closed before a whole head: {}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a head within 10 s");
    String::from_utf8_lossy(&head).into_owned()
}

/// HTTP/1.1 header names pass in their case, both ways: a peer that matches names by case
/// (wrongly, but such peers exist) sees what it would without the proxy. Real servers
/// normalise names, so both ends here are raw sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_header_names_pass_in_their_case() {
    use tokio::io::AsyncWriteExt as _;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", upstream.local_addr().expect("an address"));
    let dir = temp_dir("record-case");
    let proxy = record(&url, &dir.join("capture.jsonl"), &[]);
    let served = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.expect("the proxy connects");
        let head = raw_head(&mut s).await;
        let answer = b"HTTP/1.1 200 OK\r\nX-Answer-Case: Yes\r\ncontent-LENGTH: 2\r\n\r\nok";
        s.write_all(answer).await.expect("the answer is written");
        head
    });
    let mut client = tokio::net::TcpStream::connect(&proxy.addr).await.expect("the proxy accepts");
    let request = b"GET /case HTTP/1.1\r\nHost: shop\r\nX-Mixed-Case: v\r\nACCEPT: */*\r\n\r\n";
    client.write_all(request).await.expect("the request is written");
    let answer = raw_head(&mut client).await;
    let head = served.await.expect("the upstream task");
    assert!(head.contains("\r\nX-Mixed-Case: v\r\n") && head.contains("\r\nACCEPT: */*\r\n"), "{head}");
    assert!(answer.contains("\r\nX-Answer-Case: Yes\r\n"), "{answer}");
    assert!(answer.contains("\r\ncontent-LENGTH: 2\r\n"), "{answer}");
    proxy.stop().await;
}

/// HTTP/1.1 answers come back byte for byte whatever ends their body: chunks (with an
/// extension and trailers), a HEAD's answer with a length and no body, an informational
/// answer before the final one, and a body that ends when the upstream closes (then the
/// client's connection closes after it, saying so). Requests sent at once (pipelined) go
/// up one by one on one connection, and each exchange is recorded with its body's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_answers_pass_as_sent_whatever_ends_their_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}", upstream.local_addr().expect("an address"));
    let dir = temp_dir("record-framing");
    let out = dir.join("capture.jsonl");
    let proxy = record(&url, &out, &[]);
    let answers: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Kind: close\r\n\r\nuntil close",
    ];
    let served = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.expect("the proxy connects");
        let mut heads = Vec::new();
        for answer in answers {
            heads.push(raw_head(&mut s).await);
            s.write_all(answer).await.expect("the answer is written");
        }
        heads
    });
    let mut client = tokio::net::TcpStream::connect(&proxy.addr).await.expect("the proxy accepts");
    let requests = "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nHEAD /head HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /early HTTP/1.1\r\nHost: x\r\n\r\nGET /close HTTP/1.1\r\nHost: x\r\n\r\n";
    client.write_all(requests.as_bytes()).await.expect("the requests are written");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("the proxy closes the connection after the last answer")
        .expect("a read");
    let mut expected = answers[..3].concat();
    expected.extend_from_slice(b"HTTP/1.1 200 OK\r\nX-Kind: close\r\nconnection: close\r\n\r\nuntil close");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    let heads = served.await.expect("the upstream task");
    let targets: Vec<&str> = heads.iter().map(|h| h.split(' ').nth(1).unwrap_or("")).collect();
    assert_eq!(targets, ["/chunked", "/head", "/early", "/close"]);
    proxy.wait_for("reprise_record_recorded_total", 4).await;
    proxy.stop().await;
    let lines = lines(&out);
    let seen: Vec<(&str, &serde_json::Value, &serde_json::Value)> = lines
        .iter()
        .map(|l| (l["url"].as_str().unwrap_or(""), &l["response"]["status"], &l["response"]["body"]))
        .collect();
    let null = serde_json::Value::Null;
    assert_eq!(
        seen,
        [
            ("/chunked", &serde_json::json!(200), &serde_json::json!("hello world")),
            ("/head", &serde_json::json!(200), &null),
            ("/early", &serde_json::json!(200), &serde_json::json!("ok")),
            ("/close", &serde_json::json!(200), &serde_json::json!("until close")),
        ]
    );
    assert_eq!(lines[0]["response"]["trailers"]["x-sum"], "11");
}
