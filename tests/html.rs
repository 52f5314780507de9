//! The HTML report opened in headless Chromium (Debian's package, installed by scripts/test):
//! it fetches nothing, its charts are in the rendered page, and a screenshot is taken.

mod common;

use std::process::Command;

use common::*;

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed: scripts/test installs it (apt-get install chromium)")
}

/// Runs headless Chromium, offline, on `page` with extra arguments; its stdout.
fn headless(page: &std::path::Path, profile: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_its_charts_offline() {
    let target = Capture::start().await;
    let dir = temp_dir("html");
    let lines: Vec<String> = (0..150)
        .map(|i| {
            let url = ["/home", "/search?q=<x>", "/cart"][i % 3];
            let status = if i % 9 == 0 { r#","headers":{"X-Status":"502"}"# } else { "" };
            format!(r#"{{"ts":{},"method":"GET","url":"{url}"{status}}}"#, T0 + i * 20)
        })
        .collect();
    std::fs::write(dir.join("r.jsonl"), lines.join("\n")).expect("write");
    let gate = "[thresholds]\n\"*\" = [\"p99 < 5s\", \"error_rate < 5%\"]\n";
    let job = write_job(&dir, &target.url(), &dir.join("r.jsonl"), "id = \"html-demo\"\nspeed = 1", gate);
    let page = dir.join("report.html");
    let out =
        reprise(args(&["run", job.to_str().expect("p"), "--report-html", page.to_str().expect("p")])).await;
    assert_eq!(
        out.status.code(),
        Some(99),
        "error_rate 10% fails the gate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let html = std::fs::read_to_string(&page).expect("report.html");
    for external in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(external), "the page must not fetch anything: found {external}");
    }
    assert!(html.contains("/search") && !html.contains("<x>"), "endpoint names are escaped");

    let profile = dir.join("chromium-profile");
    let dom = headless(&page, &profile, &["--dump-dom"]);
    assert_eq!(dom.matches("<svg").count(), 2, "two charts in the rendered page");
    assert!(dom.matches("<polyline").count() >= 5, "requests, errors and three percentiles");
    assert!(dom.contains("FAIL") && dom.contains("error_rate &lt; 5%"), "the failed threshold is shown");
    assert!(dom.contains("GET /cart") && dom.contains("502"), "endpoints and status codes");
    assert!(!dom.contains("<h2>Errors</h2>"), "no request failed without a response");
    let encoded = target.requests().iter().filter(|c| c.path == "/search?q=%3Cx%3E").count();
    assert_eq!(encoded, 50, "a recorded path a URI refuses is replayed percent-encoded");

    let shot = dir.join("report.png");
    headless(&page, &profile, &[&format!("--screenshot={}", shot.display()), "--window-size=1240,1500"]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a screenshot with content: {} bytes", png.len());
    // To look at the page: REPRISE_KEEP_SCREENSHOT=path/to/report.png.
    if let Some(keep) = std::env::var_os("REPRISE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("copy the screenshot");
    }
}
