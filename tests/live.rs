//! The live page in a real browser: Debian's Chromium driven by Playwright for Python
//! (tests/servers/live_page.py; scripts/test installs both) against a dispatcher daemon, two
//! replayer daemons and a loopback target. The script does what a person would and reports
//! what it saw; the judging is here.

mod common;

use std::time::Duration;

use common::browser::drive;
use common::*;

/// GETs of /a … /e, 10 ms apart, for `secs` seconds of recorded time.
fn recording(dir: &std::path::Path, secs: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..secs * 100)
        .map(|i| {
            let path = ["/a", "/b", "/c", "/d", "/e"][i % 5];
            format!(r#"{{"ts":{},"method":"GET","url":"{path}/{i}"}}"#, T0 + i * 10)
        })
        .collect();
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_and_steers_a_replay() {
    let target = Capture::start().await;
    let dir = temp_dir("live");
    let job = write_job(&dir, &target.url(), &recording(&dir, 60), "id = \"live\"\nmin_replayers = 2", "");
    let d = serve_dispatcher(&job);
    let _r1 = spawn_replayer(&d.grpc_url, "r1");
    let _r2 = spawn_replayer(&d.grpc_url, "r2");
    let profile = dir.join("profile");
    let shots = std::env::var("REPRISE_KEEP_SCREENSHOT").ok();
    let shot_dir = shots.clone().unwrap_or_else(|| dir.to_str().expect("path").to_owned());
    std::fs::create_dir_all(&shot_dir).expect("screenshot dir");
    let seen = drive(&["steer", &d.admin, profile.to_str().expect("p"), &shot_dir]).await;

    let n = |k: &str| seen[k].as_u64().unwrap_or_else(|| panic!("{k} in {seen}"));
    assert!(n("later") > n("first"), "the sent counter moves: {seen}");
    assert_ne!(seen["rows_first"], seen["rows_later"], "the endpoint table changes");
    let rows = strings(&seen["rows_later"]);
    assert!(rows.iter().any(|r| r.starts_with("GET /a/{id}")), "templated endpoints: {rows:?}");
    assert_eq!(n("paused_after"), n("paused_at"), "pause holds the sent counter for two seconds");
    assert!(n("resumed") > n("paused_after"), "resume moves it again");
    assert!(seen["settings"].as_str().expect("settings").contains("speed 2×"), "{seen}");
    let filtered = strings(&seen["filtered"]);
    let (total, shown) = filtered.split_last().expect("rows");
    assert!(total.starts_with("all endpoints"), "{filtered:?}");
    assert!(shown.len() == 1 && shown[0].starts_with("GET /b/{id}"), "the filter: {filtered:?}");
    assert!(n("phone_width") <= 390, "nothing wider than a phone: {seen}");
    assert_eq!(seen["stopped"], "stopped", "stop ends the job");
    assert!(strings(&seen["dialogs"]).iter().any(|m| m.starts_with("Stop the job?")), "stop asks first");
    assert_eq!(
        strings(&seen["hosts"]),
        std::slice::from_ref(&d.admin),
        "the page talks to the dispatcher only"
    );
    assert!(seen["errors"].as_array().expect("errors").is_empty(), "no script error: {seen}");
    let (_, status) = http("GET", &d.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status");
    assert_eq!(status["state"], "stopped");
    assert!(status["settings"]["speed"] == 2.0, "{}", status["settings"]);
    for shot in ["live-desktop.png", "live-phone.png"] {
        let png = std::fs::read(std::path::Path::new(&shot_dir).join(shot)).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{shot}: {} bytes", png.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_signs_in_and_other_sites_cannot_steer() {
    let dir = temp_dir("live-token");
    let token = "live-page-token-0123456789";
    let job = write_job(&dir, "http://127.0.0.1:9", &gets_every(&dir, 10, 10), "id = \"guarded\"", "");
    let (_d, line) = spawn_daemon_env(
        &[
            "dispatcher",
            "--config",
            job.to_str().expect("p"),
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        &[("REPRISE_ADMIN_TOKEN", token)],
    );
    let admin = field(&line, "http");
    let profile = dir.join("profile");
    let seen = drive(&["secure", &admin, profile.to_str().expect("p"), token]).await;

    assert_eq!(seen["asked_for_token"], true, "{seen}");
    assert_eq!(seen["wrong_token"], "Wrong token.");
    assert_eq!(seen["room_hidden_after_wrong"], true, "a wrong token shows nothing");
    assert_eq!(seen["job"], "guarded");
    assert_eq!(seen["state"], "waiting");
    assert_eq!(seen["cookie"], serde_json::json!({"httpOnly": true, "sameSite": "Strict"}));
    assert_eq!(seen["script_sees_cookie"], false);
    let attacks = seen["cross_site"].as_object().expect("cross_site");
    assert_eq!(attacks.len(), 9, "{seen}");
    for (route, code) in attacks {
        assert_eq!(code, 403, "a form of another site posting to {route}");
    }
    assert_eq!(
        strings(&seen["hosts"]),
        std::slice::from_ref(&admin),
        "the page talks to the dispatcher only"
    );
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut conn = tokio::net::TcpStream::connect(&admin).await.expect("connect");
    let (_, status) = exchange(&mut conn, &request("GET", &admin, "/status", "", &auth)).await;
    assert!(status.contains("\"state\":\"waiting\""), "nothing was started or stopped: {status}");
    assert!(status.contains("\"cross_site\":9"), "each attack counted: {status}");
    assert!(status.contains("\"admin_token\":1"), "the wrong token counted: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_a_standing_dispatcher_lists_compares_and_submits_runs() {
    let target = Capture::start().await;
    let dir = temp_dir("live-runs");
    let kept = dir.join("kept");
    let (_d, grpc, admin) = standing_dispatcher(&kept, &[]);
    let _replayers = [spawn_replayer(&grpc, "r1"), spawn_replayer(&grpc, "r2")];
    for prefix in ["base", "cand"] {
        let (code, body) =
            http_json("POST", &admin, "/jobs", &job_text(&dir, &target.url(), prefix, 30)).await;
        assert_eq!(code, 201, "{body}");
    }
    let finished = wait_until_async(
        || async { http("GET", &admin, "/jobs").await.1.matches("\"state\":\"finished\"").count() == 2 },
        Duration::from_secs(60),
    )
    .await;
    assert!(finished, "{}", http("GET", &admin, "/jobs").await.1);
    let third = dir.join("third.toml");
    std::fs::write(&third, job_text(&dir, &target.url(), "third", 10)).expect("write");
    let seen =
        drive(&["runs", &admin, dir.join("profile").to_str().expect("p"), third.to_str().expect("p")]).await;

    let runs = strings(&seen["runs"]);
    assert!(runs[0].starts_with("2cand") && runs[1].starts_with("1base"), "the newest first: {runs:?}");
    assert_eq!(
        strings(&seen["links"]),
        ["/jobs/2/report.json", "/jobs/2/report.html", "/jobs/1/report.json", "/jobs/1/report.html"]
    );
    assert_eq!(seen["link_status"], serde_json::json!([200, 200, 200, 200]), "the report links work");
    let diff = strings(&seen["diff"]);
    assert!(diff.iter().any(|r| r.starts_with("all endpoints30 → 30")), "side by side: {diff:?}");
    assert!(diff.iter().any(|r| r.starts_with("GET /cand/{id}")), "{diff:?}");
    let bad = strings(&seen["bad"]);
    assert!(
        bad.iter().any(|p| p.starts_with("job.speed")) && bad.iter().any(|p| p.starts_with("nonsense")),
        "{bad:?}"
    );
    assert!(seen["good"].as_str().expect("good").contains("Queued as run 3 (third)"), "{seen}");
    assert_eq!(
        strings(&seen["hosts"]),
        std::slice::from_ref(&admin),
        "the page talks to the dispatcher only"
    );
    let ran = wait_until_async(
        || async { http("GET", &admin, "/jobs").await.1.matches("\"state\":\"finished\"").count() == 3 },
        Duration::from_secs(60),
    )
    .await;
    assert!(ran, "the job submitted from the page ran");
    let shot = std::fs::read(dir.join("third.toml.png")).expect("screenshot of the runs");
    assert!(shot.starts_with(b"\x89PNG"));
    if let Ok(keep) = std::env::var("REPRISE_KEEP_SCREENSHOT") {
        std::fs::write(std::path::Path::new(&keep).join("live-runs.png"), shot).expect("keep the screenshot");
    }
}
