//! Job after job on a standing fleet: `reprise dispatcher` without `--config` takes job files
//! with POST /jobs, runs them one after another on the same replayer daemons, lists them at
//! GET /jobs and keeps each finished job's reports.

mod common;

use std::time::Duration;

use common::pki;
use common::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn jobs(admin: &str) -> Vec<serde_json::Value> {
    let (code, body) = http("GET", admin, "/jobs").await;
    assert_eq!(code, 200, "{body}");
    json(&body)["jobs"].as_array().expect("jobs").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_one_after_another_on_the_same_replayers() {
    let target = Capture::start().await;
    let dir = temp_dir("jobs");
    let jobs_dir = dir.join("kept");
    let (_d, grpc, admin) = standing_dispatcher(&jobs_dir, &["--keep-jobs", "2"]);
    let mut replayers = [spawn_replayer(&grpc, "r1"), spawn_replayer(&grpc, "r2")];
    let (_, status) = http("GET", &admin, "/status").await;
    assert_eq!(json(&status)["state"], "idle", "no job yet");
    assert!(jobs(&admin).await.is_empty());

    let bad = "[job]\nspeed = -1\nreplayers = \"two\"\n[fetcher.file]\npath = \"\"\n[nonsense]\n";
    let (code, body) = http_json("POST", &admin, "/jobs", bad).await;
    assert_eq!(code, 422, "{body}");
    let problems = json(&body)["problems"].as_array().expect("problems").clone();
    let keys: Vec<&str> = problems.iter().map(|p| p["key"].as_str().expect("key")).collect();
    for key in ["job.speed", "job.replayers", "nonsense"] {
        assert!(keys.iter().any(|k| k.starts_with(key)), "{key} is listed: {body}");
    }

    let mut ids = Vec::new();
    for prefix in ["a", "b", "c"] {
        let (code, body) =
            http_json("POST", &admin, "/jobs", &job_text(&dir, &target.url(), prefix, 40)).await;
        assert_eq!(code, 201, "{body}");
        let entry = json(&body);
        assert_eq!(entry["name"], prefix);
        ids.push(entry["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids, ["1", "2", "3"]);
    let done = wait_until_async(
        || async { jobs(&admin).await.iter().filter(|j| j["state"] == "finished").count() == 3 },
        Duration::from_secs(60),
    )
    .await;
    assert!(done, "three jobs finish: {:?}", jobs(&admin).await);

    // One after another: every request of a job reached the target before the next job's.
    let order: Vec<String> = target.requests().iter().map(|c| c.path[1..2].to_owned()).collect();
    assert_eq!(order.len(), 120, "every request once");
    let firsts: Vec<usize> =
        ["a", "b", "c"].iter().map(|p| order.iter().position(|o| o == p).expect("sent")).collect();
    let lasts: Vec<usize> =
        ["a", "b", "c"].iter().map(|p| order.iter().rposition(|o| o == p).expect("sent")).collect();
    assert!(lasts[0] < firsts[1] && lasts[1] < firsts[2], "jobs ran in turn: {order:?}");
    for r in &mut replayers {
        assert!(r.0.try_wait().expect("wait").is_none(), "the replayers were not restarted");
    }

    let listed = jobs(&admin).await;
    let names: Vec<&str> = listed.iter().map(|j| j["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["c", "b", "a"], "the newest first");
    assert!(listed[2]["report_json"].is_null(), "only the last two keep their reports: {:?}", listed[2]);
    assert!(!jobs_dir.join("1").exists(), "the oldest report's files are removed");
    let (code, _) = http("GET", &admin, "/jobs/1/report.json").await;
    assert_eq!(code, 404);
    for (entry, prefix) in listed[..2].iter().zip(["c", "b"]) {
        assert_eq!(entry["sent"], 40, "{entry}");
        let (code, body) = http("GET", &admin, entry["report_json"].as_str().expect("link")).await;
        assert_eq!(code, 200, "{body}");
        let report = json(&body);
        assert_eq!(report["job"], prefix);
        assert_eq!(report["totals"]["sent"], 40);
        assert_eq!(report["totals"]["balanced"], true);
        let replayer_ids: Vec<&str> = report["replayers"]
            .as_array()
            .expect("replayers")
            .iter()
            .map(|r| r["id"].as_str().expect("id"))
            .collect();
        assert!(replayer_ids.contains(&"r1") && replayer_ids.contains(&"r2"), "{replayer_ids:?}");
        let (code, html) = http("GET", &admin, entry["report_html"].as_str().expect("link")).await;
        assert!(code == 200 && html.contains("<svg"), "the HTML report: {code}");
    }
    let (code, _) = http("POST", &admin, "/shutdown").await;
    assert_eq!(code, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_with_one_job_takes_no_other() {
    let dir = temp_dir("jobs-one");
    let job = write_job(&dir, "http://127.0.0.1:9", &gets_every(&dir, 5, 5), "", "");
    let d = serve_dispatcher(&job);
    let (code, body) = http_json("POST", &d.admin, "/jobs", "[job]\n").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("without --config"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_dispatcher_serves_tls_and_tokens_from_its_service_file() {
    let target = Capture::start().await;
    let dir = temp_dir("jobs-tls");
    let ca = pki::Authority::new("reprise-jobs-ca");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = ca.sign(&dir, "dispatcher", &["localhost"]);
    let service = dir.join("service.toml");
    std::fs::write(
        &service,
        format!(
            "[service]\nmetrics_auth = true\n[service.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("write");
    let tokens =
        [("REPRISE_ADMIN_TOKEN", "admin-token-5f2c7a"), ("REPRISE_REPLAYER_TOKEN", "replayer-token-9b41d0")];
    let (_d, line) = spawn_daemon_env(
        &[
            "dispatcher",
            "--service",
            service.to_str().expect("p"),
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--jobs-dir",
            dir.join("kept").to_str().expect("p"),
        ],
        &tokens,
    );
    let (grpc, admin) = (field(&line, "grpc"), field(&line, "http"));
    let grpc_url = format!("https://localhost:{}", grpc.rsplit(':').next().expect("port"));
    let _replayers: Vec<Guard> = ["r1", "r2"]
        .iter()
        .map(|id| {
            let a =
                ["replayer", "--dispatcher", &grpc_url, "--id", id, "--tls-ca", ca_file.to_str().expect("p")];
            let mut child = std::process::Command::new(BIN);
            child.args(a).env("RUST_LOG", "warn").envs(tokens[1..].iter().copied());
            Guard(child.spawn().expect("replayer"))
        })
        .collect();
    let (code, _) = pki::https("GET", &admin, "localhost", "/metrics", &ca_file, "wrong").await;
    assert_eq!(code, 401, "metrics_auth of the service file");
    let job = job_text(&dir, &target.url(), "secure", 20);
    let (code, body) = pki::https_body("POST", &admin, "localhost", "/jobs", &ca_file, "wrong", &job).await;
    assert_eq!(code, 401, "submitting needs the admin token: {body}");
    let (code, body) =
        pki::https_body("POST", &admin, "localhost", "/jobs", &ca_file, tokens[0].1, &job).await;
    assert_eq!(code, 201, "{body}");
    let mut finished = false;
    for _ in 0..300 {
        let (_, body) = pki::https("GET", &admin, "localhost", "/jobs", &ca_file, tokens[0].1).await;
        if body.contains("\"state\":\"finished\"") {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(finished, "the job ran on replayers connected over TLS with the replayer token");
    assert_eq!(target.requests().len(), 20);

    // deploy/ci/submit.sh, the CI gate on a standing fleet, against this dispatcher.
    let gate = Gate { dir: &dir, admin: &admin, ca: &ca_file, token: tokens[0].1 };
    let (ran, out) = gate.submit(&job_text(&dir, &target.url(), "gate", 20), "gate").await;
    let said = format!("{}{}", String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert_eq!(ran.status.code(), Some(0), "{said}");
    assert_eq!(read_json(&out.join("report.json"))["totals"]["sent"], 20, "{said}");
    assert!(std::fs::read_to_string(out.join("report.html")).expect("html").contains("<svg"));
    let failing = job_text(&dir, &target.url(), "strict", 20) + "[thresholds]\n\"*\" = [\"p99 < 1us\"]\n";
    let (ran, out) = gate.submit(&failing, "strict").await;
    assert_eq!(ran.status.code(), Some(99), "{}", String::from_utf8_lossy(&ran.stderr));
    assert!(out.join("report.json").exists(), "the reports of a failed gate are copied too");
    let (ran, _) = gate.submit("[job]\nspeed = 0\n", "bad").await;
    let err = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(ran.status.code(), Some(2), "{err}");
    assert!(err.contains("job.speed"), "every problem is printed: {err}");
}

/// deploy/ci/submit.sh against a standing dispatcher served over TLS.
struct Gate<'a> {
    dir: &'a std::path::Path,
    admin: &'a str,
    ca: &'a std::path::Path,
    token: &'a str,
}

impl Gate<'_> {
    /// Submits `job` (written to DIR/NAME.toml), its reports copied to DIR/NAME: how the
    /// script ended, and that directory.
    async fn submit(&self, job: &str, name: &str) -> (std::process::Output, std::path::PathBuf) {
        let file = self.dir.join(format!("{name}.toml"));
        std::fs::write(&file, job).expect("write");
        let out = self.dir.join(name);
        let port = self.admin.rsplit(':').next().expect("port");
        let mut command =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ci/submit.sh"));
        command
            .arg(&file)
            .arg(&out)
            .env("REPRISE_ADMIN_URL", format!("https://localhost:{port}"))
            .env("REPRISE_CA", self.ca)
            .env("REPRISE_ADMIN_TOKEN", self.token)
            .env("REPRISE_TIMEOUT", "60");
        let ran =
            tokio::task::spawn_blocking(move || command.output().expect("submit.sh")).await.expect("join");
        (ran, out)
    }
}
