//! Every record format end to end, and sources made of several files: GoReplay captures,
//! combined access logs, a glob of gzip files merged by timestamp, and late records.

mod common;

use std::io::Write;

use common::*;

const SEP: &str = "\u{1F435}\u{1F648}\u{1F649}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gor_requests_replay_with_their_bodies_and_responses_are_skipped() {
    let target = Capture::start().await;
    let dir = temp_dir("gor");
    let binary: Vec<u8> = vec![0, 159, 146, 150, b'\n', 255];
    let mut file = Vec::new();
    for i in 0..4u8 {
        let ts = 1_700_000_000_000_000_000u64 + u64::from(i) * 10_000_000;
        file.extend_from_slice(format!("1 id{i} {ts} 0\n").as_bytes());
        file.extend_from_slice(
            format!(
                "PUT /blob/{i} HTTP/1.1\r\nHost: prod\r\nX-N: {i}\r\nContent-Length: {}\r\n\r\n",
                binary.len()
            )
            .as_bytes(),
        );
        file.extend_from_slice(&binary);
        file.extend_from_slice(format!("\n{SEP}\n").as_bytes());
        file.extend_from_slice(format!("2 id{i} {ts} 1000\nHTTP/1.1 200 OK\r\n\r\n\n{SEP}\n").as_bytes());
    }
    let rec = dir.join("capture.gor");
    std::fs::write(&rec, file).expect("write");
    let job = write_job(&dir, &target.url(), &rec, "speed = \"max\"", "[analyzer]\nformat = \"gor\"\n");
    let report = run_job(&job, &dir, &[]).await;
    let mut got = target.requests();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got.len(), 4);
    for (i, c) in got.iter().enumerate() {
        assert_eq!((c.method.as_str(), c.path.as_str()), ("PUT", format!("/blob/{i}").as_str()));
        assert_eq!(c.body, binary, "binary body kept byte for byte");
        assert_eq!(c.header("x-n"), Some(i.to_string().as_bytes()));
    }
    assert_eq!(report["totals"]["skipped"]["gor_response"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_log_lines_replay_with_agent_and_referer() {
    let target = Capture::start().await;
    let dir = temp_dir("combined");
    let rec = dir.join("access.log");
    std::fs::write(
        &rec,
        concat!(
            "10.1.1.1 - - [01/May/2024:12:00:00 +0000] \"GET /a?x=1 HTTP/1.1\" 200 5 \"https://ref/\" \"agent/1\"\n",
            "10.1.1.2 - - [01/May/2024:12:00:01 +0000] \"DELETE /b HTTP/1.1\" 204 0 \"-\" \"agent/2\"\n",
            "this line is not a log line\n",
        ),
    )
    .expect("write");
    let extra = format!("[analyzer]\nformat = \"combined\"\n{}", raw_sink(&dir));
    let job = write_job(&dir, &target.url(), &rec, "speed = 20", &extra);
    let report = run_job(&job, &dir, &[]).await;
    let mut got = target.requests();
    got.sort_by_key(|c| c.at);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("GET", "/a?x=1"));
    assert_eq!(got[0].header("user-agent"), Some(b"agent/1".as_slice()));
    assert_eq!(got[0].header("referer"), Some(b"https://ref/".as_slice()));
    assert_eq!((got[1].method.as_str(), got[1].header("referer")), ("DELETE", None));
    let due = raw_dues(&dir);
    assert_eq!(due[1] - due[0], 50_000, "1 s apart at speed 20: due {due:?} µs");
    assert_eq!(report["totals"]["malformed"]["no_time"], 1);
}

/// Starts Debian's nginx on a free loopback port, writing the combined access log to
/// `dir/access.log`; killed when the guard drops.
fn nginx_logging(dir: &std::path::Path) -> (Guard, u16) {
    let port = free_port();
    let http = format!(
        "access_log {}/access.log combined;\nserver {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}",
        dir.display()
    );
    (nginx(dir, &http, &[port]), port)
}

/// A real nginx's access log replays what its clients sent: nginx writes raw UTF-8, quotes
/// and backslashes as `\xHH`, and the combined reader undoes that (the path percent-encoded
/// as a client sends it, the user agent byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_nginx_log_replays_what_its_clients_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir("nginx-log");
    let (server, port) = nginx_logging(&dir);
    let agent = "Mozilla/5.0 \"quoted\" caf\u{e9} \\ end".as_bytes();
    let sent: [(&[u8], &[u8]); 4] = [
        ("/raw/\u{65e5}\u{672c}?q=\u{e9}".as_bytes(), agent),
        (b"/search?term=\"quoted\"", b"curl/8.5.0"),
        (b"/back\\slash", b"agent \\x41 literal"),
        (b"/plain?a=1&b=%20", b"plain/1"),
    ];
    for (path, agent) in sent {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: staging\r\nUser-Agent: ");
        req.extend_from_slice(agent);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect nginx");
        conn.write_all(&req).await.expect("write");
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    }
    drop(server);
    let log = std::fs::read(dir.join("access.log")).expect("nginx wrote its log");
    assert!(log.windows(4).any(|w| w == b"\\xE6"), "nginx escapes UTF-8: {}", String::from_utf8_lossy(&log));

    let target = Capture::start().await;
    let extra = "[analyzer]\nformat = \"combined\"\n";
    let job = write_job(&dir, &target.url(), &dir.join("access.log"), "speed = \"max\"", extra);
    let report = run_job(&job, &dir, &[]).await;
    assert_eq!(report["totals"]["sent"], 4, "{}", report["totals"]);
    let mut got = target.requests();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = got.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/back%5Cslash",
            "/plain?a=1&b=%20",
            "/raw/%E6%97%A5%E6%9C%AC?q=%C3%A9",
            "/search?term=%22quoted%22"
        ]
    );
    let agents: Vec<&[u8]> = got.iter().map(|c| c.header("user-agent").expect("agent")).collect();
    assert_eq!(agents, [sent[2].1, sent[3].1, sent[0].1, sent[1].1], "agents byte for byte");
}

fn gz(path: &std::path::Path, lines: &[String]) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(lines.join("\n").as_bytes()).expect("gz");
    std::fs::write(path, enc.finish().expect("gz")).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_of_gzip_files_is_merged_in_time_order() {
    let target = Capture::start().await;
    let dir = temp_dir("glob");
    let line = |i: i64| format!(r#"{{"ts":{},"method":"GET","url":"/m/{i}"}}"#, T0 as i64 + 1_000 + i * 30);
    // Three files, records interleaved across them: file k holds i ≡ k (mod 3).
    for k in 0..3 {
        let lines: Vec<String> = (0..60).filter(|i| i % 3 == k).map(line).collect();
        gz(&dir.join(format!("part-{k}.jsonl.gz")), &lines);
    }
    std::fs::write(dir.join("ignored.txt"), "not matched by the glob").expect("write");
    let job = write_job(&dir, &target.url(), &dir.join("part-*.jsonl.gz"), "speed = 1", &raw_sink(&dir));
    let report = run_job(&job, &dir, &[]).await;
    assert_eq!(target.requests().len(), 60);
    let released = raw_endpoints_by_due(&dir);
    assert_eq!(
        released,
        (0..60).map(|i| format!("GET /m/{i}")).collect::<Vec<_>>(),
        "time order across files"
    );
    assert_eq!(report["totals"]["input"], 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_later_than_the_window_are_counted_and_sent_or_dropped() {
    let dir = temp_dir("late");
    let rec = dir.join("r.jsonl");
    // 0, 100, …, 1900 ms, then one at 200 ms: 1.7 s late against a 500 ms window.
    let mut lines: Vec<String> =
        (0..20).map(|i| format!(r#"{{"ts":{},"method":"GET","url":"/t/{i}"}}"#, T0 + i * 100)).collect();
    lines.push(r#"{"ts":1700000000200,"method":"GET","url":"/late"}"#.to_owned());
    std::fs::write(&rec, lines.join("\n")).expect("write");
    for (policy, arrives) in [("send", true), ("drop", false)] {
        let target = Capture::start().await;
        let extra = format!("speed = 10\nreorder_window = \"500ms\"\nlate = \"{policy}\"");
        let job = write_job(&dir, &target.url(), &rec, &extra, "");
        let report = run_job(&job, &dir, &[]).await;
        let got = target.requests();
        assert_eq!(got.iter().any(|c| c.path == "/late"), arrives, "late = {policy}");
        assert_eq!(report["totals"]["late"], 1);
        assert_eq!(report["totals"]["balanced"], true);
        let dropped = report["totals"]["dropped"]["late"].as_u64().unwrap_or(0);
        assert_eq!(dropped, u64::from(!arrives));
        assert_eq!(got.len(), if arrives { 21 } else { 20 });
    }
}
