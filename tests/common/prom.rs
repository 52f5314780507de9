//! A real Prometheus (Debian's package, installed by scripts/test) scraping the daemons of a
//! test every second, with its query API.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Guard, free_port};

pub struct Prometheus {
    pub addr: String,
    _server: Guard,
}

/// Starts Prometheus on a free loopback port, its storage and configuration in `dir`,
/// scraping `targets` ("ADDR" of a /metrics endpoint) every second; returns once it is ready.
pub async fn prometheus(dir: &Path, targets: &[&str]) -> Prometheus {
    let bin = which("prometheus")
        .expect("prometheus is not installed: scripts/test installs it (apt-get install prometheus)");
    let addr = format!("127.0.0.1:{}", free_port());
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reprise\n    static_configs:\n      - targets: [{list}]\n"),
    )
    .expect("prometheus config");
    let server = Guard(
        Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let prom = Prometheus { addr, _server: server };
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while prom.get("/-/ready").await.0 != 200 {
        assert!(std::time::Instant::now() < end, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    prom
}

impl Prometheus {
    /// A GET over HTTP/1.0 (a body to the close, never chunked): (status, body); status 0
    /// while nothing listens.
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(&self.addr).await else {
            return (0, String::new());
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await.expect("read");
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// An API call's `data`; panics with Prometheus' own error when the call fails (a query
    /// that does not parse is an error of the test or the dashboard, never "no data").
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path).await;
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {code} {body}"));
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// An instant query's first series' value, if any.
    pub async fn query(&self, q: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(q))).await;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// A range query's series (each with `metric` and `values`), from `start` to `end`
    /// (seconds since the epoch) at `step` seconds.
    pub async fn query_range(&self, q: &str, start: f64, end: f64, step: f64) -> Vec<serde_json::Value> {
        let path =
            format!("/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}", encode(q));
        let data = self.api(&path).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
