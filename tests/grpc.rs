//! gRPC calls replayed without a schema to a real gRPC server (Python's grpcio, with the
//! methods of tests/servers/grpc_items.py): unary, server-streaming, client-streaming and
//! bidirectional calls from json records whose bodies are the recorded length-prefixed
//! messages. The server receives exactly the recorded messages, byte for byte and in order
//! within each call; each `grpc-status` is counted exactly under its method's path; the
//! gate judges a gRPC endpoint as any other. Compared live against a build whose answers
//! changed one field, that field is found, named by number without a schema and by name
//! with a protoset compiled by protoc.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::*;

/// Messages framed as a gRPC body: a flag byte, a 4-byte length, the message; base64.
fn framed(messages: &[&[u8]]) -> String {
    let mut body = Vec::new();
    for m in messages {
        body.push(0);
        body.extend_from_slice(&(m.len() as u32).to_be_bytes());
        body.extend_from_slice(m);
    }
    base64::engine::general_purpose::STANDARD.encode(body)
}

fn call(at: usize, method: &str, messages: &[&[u8]]) -> String {
    format!(
        r#"{{"ts":{},"version":"HTTP/2","method":"POST","url":"/test.Items/{method}","headers":{{":authority":"prod:443","content-type":"application/grpc","te":"trailers","x-tenant":"a"}},"body_base64":"{}"}}"#,
        T0 + at,
        framed(messages)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_calls_reach_a_grpc_server_exactly_and_each_status_is_counted() {
    let dir = temp_dir("grpc");
    let log = dir.join("calls.log");
    let (_server, url) = grpc_server(&log);
    let mut lines = Vec::new();
    let mut want = Vec::new();
    // Ten unary calls; those whose message starts with "nf" (4 of them) answer NOT_FOUND.
    for i in 0..10 {
        let m = if i % 3 == 0 { format!("nf{i}") } else { format!("id{i}") };
        lines.push(call(i, "Get", &[m.as_bytes()]));
        want.push(format!("Get {}", hex(m.as_bytes())));
    }
    lines.push(call(20, "List", &[&[3]]));
    want.push("List 03".into());
    lines.push(call(21, "Put", &[b"a", b"bb", b"", b"\x00\xff"]));
    want.push("Put 61,6262,,00ff".into());
    lines.push(call(22, "Chat", &[b"xy", b"z"]));
    want.extend(["Chat 7879".to_owned(), "Chat 7a".to_owned()]);
    // A method the server does not have: UNIMPLEMENTED.
    lines.push(call(23, "Nope", &[b""]));
    let rec = dir.join("calls.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");

    let extra = "[replayer]\ntimeout = \"5s\"\n[thresholds]\n\"/test.Items/Get\" = [\"error_rate < 50%\"]\n\"/test.Items/Put\" = [\"error_rate < 1%\"]\n";
    let job = write_job(&dir, &url, &rec, "speed = \"max\"", extra);
    let report = run_job(&job, &dir, &[]).await;

    let mut got: Vec<String> =
        std::fs::read_to_string(&log).expect("the server's log").lines().map(str::to_owned).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the server received exactly the recorded messages");
    // Within a streaming call the messages keep their recorded order.
    let chat: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .filter(|l| l.starts_with("Chat"))
        .map(str::to_owned)
        .collect();
    assert_eq!(chat, ["Chat 7879", "Chat 7a"]);

    let total = &report["total"];
    assert_eq!(total["status"], serde_json::json!({"200": 9}), "{total}");
    assert_eq!(total["errors"], serde_json::json!({"grpc_not_found": 4, "grpc_unimplemented": 1}));
    let endpoint = |name: &str| {
        report["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["endpoint"] == name)
            .unwrap_or_else(|| panic!("no endpoint {name}: {:#}", report["endpoints"]))
            .clone()
    };
    let get = endpoint("/test.Items/Get");
    assert_eq!((get["requests"].as_u64(), get["failed"].as_u64()), (Some(10), Some(4)));
    for name in ["/test.Items/List", "/test.Items/Put", "/test.Items/Chat"] {
        assert_eq!(endpoint(name)["ok"].as_u64(), Some(1), "{name}");
    }
    assert_eq!(report["thresholds_passed"], true, "{:#}", report["thresholds"]);
}

/// Live comparison of gRPC answers: the candidate (v2) answers Get with stock 8 where the
/// primary and secondary (v1) say 7. Calls that end NOT_FOUND are errors and not compared;
/// the other six Get calls differ in that one field, named `$.2` without a schema and
/// `$.stock` with the protoset; List's answers are the same on every side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_of_grpc_answers_is_found_with_and_without_a_protoset() {
    let dir = temp_dir("grpc-compare");
    let log = dir.join("calls.log");
    let (_p, primary) = grpc_build(&log, "v1");
    let (_s, secondary) = grpc_build(&log, "v1");
    let (_c, candidate) = grpc_build(&log, "v2");
    let mut lines: Vec<String> = (0..10)
        .map(|i| {
            let m = if i % 3 == 0 { format!("nf{i}") } else { format!("id{i}") };
            call(i, "Get", &[m.as_bytes()])
        })
        .collect();
    lines.push(call(20, "List", &[&[3]]));
    let rec = dir.join("calls.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");

    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers");
    let protoset = dir.join("items.protoset");
    let protoc = Command::new(protoc_bin_vendored::protoc_bin_path().expect("protoc"))
        .args(["--include_imports", "-I", proto_dir, "--descriptor_set_out"])
        .arg(&protoset)
        .arg(format!("{proto_dir}/items.proto"))
        .output()
        .expect("protoc");
    assert!(protoc.status.success(), "{}", String::from_utf8_lossy(&protoc.stderr));

    for (schema, field) in [(None, "$.2"), (Some(&protoset), "$.stock")] {
        let protoset = schema.map(|p| format!("protoset = \"{}\"\n", p.display())).unwrap_or_default();
        let extra = format!(
            "[replayer]\ntimeout = \"5s\"\n[compare]\nprimary = \"{primary}\"\nsecondary = \"{secondary}\"\n{protoset}"
        );
        let report = run_job(&write_job(&dir, &candidate, &rec, "speed = \"max\"", &extra), &dir, &[]).await;
        let cmp = &report["compare"];
        assert_eq!((cmp["compared"].as_u64(), cmp["differing"].as_u64()), (Some(7), Some(6)), "{cmp:#}");
        let fields: Vec<(String, String, u64)> = cmp["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .flat_map(|e| {
                e["fields"].as_array().expect("fields").iter().map(move |f| {
                    let name = e["endpoint"].as_str().unwrap_or_default().to_owned();
                    (
                        name,
                        f["field"].as_str().expect("field").to_owned(),
                        f["differing"].as_u64().expect("n"),
                    )
                })
            })
            .collect();
        assert_eq!(fields, [("/test.Items/Get".to_owned(), field.to_owned(), 6)], "{cmp:#}");
    }
}

/// Server streams are read to their end and their messages counted: a replayer daemon's
/// `/metrics` has every message of the answers (3 + 5 + 0 from List, 1 from the Get that
/// was found, none from the one that was not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_a_server_stream_is_read_and_counted() {
    let dir = temp_dir("grpc-stream");
    let (_server, url) = grpc_server(&dir.join("calls.log"));
    let lines = [
        call(0, "List", &[&[3]]),
        call(1, "List", &[&[5]]),
        call(2, "List", &[&[0]]),
        call(3, "Get", &[b"id"]),
        call(4, "Get", &[b"nf"]),
    ];
    let rec = dir.join("calls.jsonl");
    std::fs::write(&rec, lines.join("\n")).expect("recording");
    let job = write_job(&dir, &url, &rec, "speed = \"max\"", "[replayer]\ntimeout = \"5s\"\n");
    let report = dir.join("report.json");
    let dispatcher = start_dispatcher(&job, "127.0.0.1:0", Some(&report));
    let (_replayer, line) = spawn_daemon(&[
        "replayer",
        "--dispatcher",
        &dispatcher.grpc_url,
        "--id",
        "r",
        "--http",
        "127.0.0.1:0",
    ]);
    let metrics = field(&line, "http");
    let sample = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
    };
    let mut last = String::new();
    let done = wait_until_async(
        || {
            let metrics = metrics.clone();
            async move {
                sample(&http("GET", &metrics, "/metrics").await.1, "reprise_replayer_jobs_total") == Some(1)
            }
        },
        std::time::Duration::from_secs(30),
    )
    .await;
    if done {
        last = http("GET", &metrics, "/metrics").await.1;
    }
    assert!(done, "the job ended at the replayer");
    assert_eq!(sample(&last, "reprise_replayer_grpc_messages_received_total"), Some(9), "{last}");
    assert_eq!(sample(&last, "reprise_replayer_requests_sent_total"), Some(5), "{last}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
