//! `deploy/`: every kustomize overlay renders and each object validates strictly against the
//! schema of Kubernetes 1.32 (kubernetes-validate), and the manifests' wiring is real. The
//! wiring test renders the fleet overlay and runs its containers as local processes: each
//! one's args and env as written (Secrets and ConfigMaps resolved, the Secrets made here as
//! `deploy/secrets.sh` makes them), its volumes as directories, the Service's name and ports
//! and the target's host mapped to loopback ports. A replay from the job file of the
//! ConfigMap (its recording in a real S3 server, moto) must run to its end through them,
//! and every probe path in the manifests must answer 200. The sharded overlay's pods run the
//! same way: three shards of the Indexed Job (each with its JOB_COMPLETION_INDEX) and two
//! replayers per shard replay the recording once between them, and shard 0 reports it whole.
//! No cluster is involved: what a kubelet does beyond this (scheduling, the network
//! policies, the security context) is proven only by the schema.

mod cluster;
#[path = "../common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{Cluster, Named};
use common::pki::{self, Authority};
use common::s3::{S3, s3};
use common::*;
use serde_json::Value;

/// The Kubernetes version the manifests are written for and validated against.
const KUBERNETES: &str = "1.32.0";

/// `kubectl kustomize deploy/DIR`.
fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("deploy/{dir}")])
        .output()
        .expect("kubectl is not installed (the test command needs it on the machine)");
    assert!(out.status.success(), "kubectl kustomize deploy/{dir}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// kubernetes-validate --strict on `yaml`: (passed, what it said).
fn validate(yaml: &str, dir: &Path) -> (bool, String) {
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES, file.to_str().expect("path")])
        .output()
        .expect("kubernetes-validate is not installed: scripts/test installs it (pip install kubernetes-validate)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// The objects of a rendered overlay, as JSON (PyYAML, which kubernetes-validate brings).
fn objects(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "PyYAML could not read the rendered manifests");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn kinds(objs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> =
        objs.iter().map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or(""), name(o))).collect();
    k.sort();
    k
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().expect("name")
}

#[test]
fn every_overlay_renders_and_each_object_validates_strictly() {
    let dir = temp_dir("deploy-validate");
    let both =
        ["NetworkPolicy/reprise-dispatcher", "NetworkPolicy/reprise-replayer", "Service/reprise-dispatcher"];
    for (overlay, own) in [
        (
            "overlays/fleet",
            [
                "Deployment/reprise-dispatcher",
                "Deployment/reprise-replayer",
                "HorizontalPodAutoscaler/reprise-replayer",
                "PodDisruptionBudget/reprise-replayer",
            ]
            .as_slice(),
        ),
        ("overlays/ci", ["Job/reprise-dispatcher", "Job/reprise-replayer"].as_slice()),
        (
            "overlays/sharded",
            [
                "Job/reprise-dispatcher",
                "Service/reprise-shards",
                "Job/reprise-replayer-0",
                "Job/reprise-replayer-2",
            ]
            .as_slice(),
        ),
        ("base", ["Deployment/reprise-dispatcher", "Deployment/reprise-replayer"].as_slice()),
        ("overlays/shadow", ["Deployment/reprise-dispatcher", "Deployment/reprise-replayer"].as_slice()),
    ] {
        let yaml = render(overlay);
        let (ok, said) = validate(&yaml, &dir);
        assert!(ok, "{overlay} is not valid for Kubernetes {KUBERNETES}:\n{said}");
        let found = kinds(&objects(&yaml));
        for k in both.iter().chain(own) {
            assert!(found.contains(&k.to_string()), "{overlay} lacks {k}: {found:?}");
        }
        // The ConfigMaps carry a hash of their content in their names, and the pods name them.
        assert!(found.iter().any(|k| k.starts_with("ConfigMap/reprise-job-")), "{found:?}");
        if overlay == "overlays/ci" {
            assert!(!found.iter().any(|k| k.starts_with("Deployment/")), "the Jobs replace the Deployments");
        }
    }
    sharded_wiring(&objects(&render("overlays/sharded")));
    let capture = render("overlays/capture");
    let (ok, said) = validate(&capture, &dir);
    assert!(ok, "overlays/capture is not valid for Kubernetes {KUBERNETES}:\n{said}");
    assert_eq!(kinds(&objects(&capture)), ["Deployment/shop", "Service/shop"]);
    // Strict: a misspelt field is refused, not ignored.
    let typo = render("overlays/fleet").replacen("readOnlyRootFilesystem:", "readOnlyRootFilesytem:", 1);
    let (ok, said) = validate(&typo, &dir);
    assert!(!ok, "a misspelt field passed: {said}");
}

/// The sharded overlay's names agree: as many shard pods as `--shards`, the coordinator's
/// host is shard 0's pod name under the headless Service its pods are a subdomain of, each
/// replayer Job reaches its own shard, and the admin Service is the coordinator's.
fn sharded_wiring(objs: &[Value]) {
    let find =
        |kind: &str, n: &str| objs.iter().find(|o| o["kind"] == kind && name(o) == n).expect(n).clone();
    let job = find("Job", "reprise-dispatcher");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let args: Vec<&str> = spec["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).expect(flag) + 1];
    let shards: u64 = after("--shards").parse().expect("a count");
    assert_eq!((spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some(shards), Some(shards)));
    let headless = find("Service", "reprise-shards");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(spec["template"]["spec"]["subdomain"], "reprise-shards");
    assert_eq!(after("--coordinator"), "https://reprise-dispatcher-0.reprise-shards:9090");
    for i in 0..shards {
        let replayers = find("Job", &format!("reprise-replayer-{i}"));
        let args = replayers["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains(&format!("https://reprise-dispatcher-{i}.reprise-shards:9090")), "{args}");
    }
    let admin = find("Service", "reprise-dispatcher");
    assert_eq!(admin["spec"]["selector"]["batch.kubernetes.io/job-completion-index"], "0");
}

/// The suite's S3 server (or this binary's own) with the recording the job file names.
async fn s3_with_recording(records: usize) -> (S3, u64) {
    let s3 = s3().await;
    // The job file's bucket and key pattern; the suite's other tests use buckets of their own.
    let _ = s3.client.create_bucket().bucket("recordings").send().await;
    let t0: u64 = 1_793_534_400_000; // 2026-11-01T12:00:00Z, the job file's begin
    let body: String = (0..records)
        .map(|i| format!("{{\"ts\":{},\"method\":\"GET\",\"url\":\"/deploy/{i}\"}}\n", t0 + i as u64 * 10))
        .collect();
    let size = body.len() as u64;
    s3.client
        .put_object()
        .bucket("recordings")
        .key("reprise/2026/11/01/12/part.jsonl")
        .body(body.into_bytes().into())
        .send()
        .await
        .expect("put the recording");
    (s3, size)
}

/// The container port named `port` (or numbered) of a probe, and the local port it maps to.
fn probe_port(container: &Value, port: &Value, ports: &HashMap<u64, u16>) -> u16 {
    let number = match port {
        Value::Number(n) => n.as_u64().expect("port"),
        Value::String(name) => container["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == name.as_str()))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port named {name}")),
        other => panic!("a probe port {other}"),
    };
    ports[&number]
}

/// The rendered object of that kind and name.
fn object(objs: &[Value], kind: &str, n: &str) -> Value {
    objs.iter().find(|o| o["kind"] == kind && name(o) == n).unwrap_or_else(|| panic!("no {kind}/{n}")).clone()
}

/// The Secrets, as deploy/secrets.sh makes them (the server certificate for the names the
/// pods reach a dispatcher by, here all `localhost`), and the rendered ConfigMaps: name →
/// key → value.
fn secrets_and_maps(objs: &[Value], ca: &Authority, admin_token: &str, s3: &str) -> (Named, Named) {
    let (cert, key) =
        ca.sign_pem(&["reprise-dispatcher", "reprise-dispatcher.default.svc", "localhost", "127.0.0.1"]);
    let secrets: Named = [
        ("reprise-tokens", vec![("replayer-token", "replayer-3a5f0b"), ("admin-token", admin_token)]),
        ("reprise-tls", vec![("tls.crt", cert.as_str()), ("tls.key", key.as_str()), ("ca.crt", &ca.pem())]),
        ("reprise-s3", vec![("access-key-id", "test"), ("secret-access-key", "test"), ("endpoint", s3)]),
    ]
    .into_iter()
    .map(|(n, kv)| (n.to_owned(), kv.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()))
    .collect();
    let configmaps = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| {
            let data = o["data"].as_object().expect("data").iter();
            (
                name(o).to_owned(),
                data.map(|(k, v)| (k.clone(), v.as_str().expect("text").to_owned())).collect(),
            )
        })
        .collect();
    (secrets, configmaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_manifests_run_a_replay_to_its_end_as_local_processes() {
    const RECORDS: usize = 40;
    let target = Capture::start().await;
    let (server, size) = s3_with_recording(RECORDS).await;
    let s3 = server.endpoint.clone();
    let objs = objects(&render("overlays/fleet"));
    let find = |kind: &str, n: &str| object(&objs, kind, n);
    let dir = temp_dir("deploy-wiring");

    let ca = Authority::new("reprise-ca-test");
    let admin_token = "admin-7d1e9c";
    let service = find("Service", "reprise-dispatcher");
    let (cluster, container_ports) =
        loopback_cluster(&objs, &service, &ca, admin_token, &s3, &dir, &target.addr.to_string());

    // The dispatcher: its job file's listen ports must be the container's and the Service's.
    let deployment = find("Deployment", "reprise-dispatcher");
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let mut pod = cluster.clone();
    pod.mount("dispatcher", spec, container);
    let job_cm =
        spec["volumes"].as_array().expect("volumes").iter().find_map(|v| v["configMap"]["name"].as_str());
    let job_text = cluster.configmaps[job_cm.expect("the job's ConfigMap")]["job.toml"].clone();
    the_job_listens_where_the_service_sends(&job_text, container, &service);
    let mut args = pod.args(container);
    let service_file = PathBuf::from(arg_after(&args, "--service"));
    assert_eq!(
        std::fs::read_to_string(&service_file).expect("the job file"),
        job_text,
        "the ConfigMap's job file gives the dispatcher its [service]"
    );
    let kept = PathBuf::from(arg_after(&args, "--jobs-dir"));
    args.extend([
        "--grpc".to_owned(),
        format!("127.0.0.1:{}", container_ports[&9090]),
        "--http".to_owned(),
        format!("127.0.0.1:{}", container_ports[&8080]),
    ]);
    let env = pod.env(container);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (dispatcher, _) = spawn_daemon_env(&arg_refs, &env_refs);
    let admin = format!("127.0.0.1:{}", container_ports[&8080]);
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let get = |path: &'static str| pki::https("GET", &admin, "localhost", path, &ca_file, admin_token);
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &container[probe]["httpGet"];
        assert_eq!(p["scheme"], "HTTPS", "the admin port is behind TLS");
        assert_eq!(probe_port(container, &p["port"], &container_ports), container_ports[&8080]);
        let (code, _) =
            pki::https("GET", &admin, "localhost", p["path"].as_str().expect("path"), &ca_file, "").await;
        assert_eq!(code, 200, "dispatcher {probe} {p}");
    }

    // The replayers, as many as the Deployment's replicas, each with its own ports.
    let (_replayers, replicas) = start_replayers(&find("Deployment", "reprise-replayer"), &cluster).await;

    // The standing dispatcher takes the ConfigMap's job file, and runs it to its end.
    let (code, body) =
        pki::https_body("POST", &admin, "localhost", "/jobs", &ca_file, admin_token, &job_text).await;
    assert_eq!(code, 201, "{body}");
    let status = poll(
        || async { serde_json::from_str::<Value>(&get("/status").await.1).expect("status") },
        |s| s["state"] == "finished",
    )
    .await;
    assert_eq!(status["state"], "finished", "{status}");
    let t = &status["totals"];
    assert_eq!(t["sent"], RECORDS, "{t}");
    assert_eq!(t["balanced"], true, "{t}");
    assert_eq!(target.requests().len(), RECORDS);
    assert_eq!(status["source"]["kind"], "s3", "{}", status["source"]);
    assert_eq!(
        (status["source"]["parts_done"].as_u64(), status["source"]["bytes"].as_u64()),
        (Some(1), Some(size))
    );
    assert_eq!(status["replayers"].as_array().map(Vec::len), Some(replicas as usize));
    let (code, html) = poll(|| get("/jobs/1/report.html"), |(code, _)| *code == 200).await;
    assert!(code == 200 && html.starts_with("<!doctype html>"), "{code}: {}", &html[..html.len().min(200)]);

    // POST /shutdown lets it go; the job's reports stay where the manifest keeps them.
    let (code, _) = pki::https("POST", &admin, "localhost", "/shutdown", &ca_file, admin_token).await;
    assert_eq!(code, 202);
    assert!(wait_exit(dispatcher).await.success());
    assert_eq!(read_json(&kept.join("1").join("report.json"))["totals"]["sent"], RECORDS);
}

/// The fleet's cluster as local processes see it: its Secrets and ConfigMaps, the
/// dispatcher Service's name and ports mapped to loopback ports (returned by port), and the
/// target's host to `target`.
fn loopback_cluster(
    objs: &[Value],
    service: &Value,
    ca: &Authority,
    admin_token: &str,
    s3: &str,
    dir: &Path,
    target: &str,
) -> (Cluster, HashMap<u64, u16>) {
    let (secrets, configmaps) = secrets_and_maps(objs, ca, admin_token, s3);
    let mut container_ports: HashMap<u64, u16> = HashMap::new();
    let mut names = Vec::new();
    for p in service["spec"]["ports"].as_array().expect("ports") {
        let local = free_port();
        let port = p["port"].as_u64().expect("port");
        container_ports.insert(port, local);
        names.push((format!("reprise-dispatcher:{port}"), format!("localhost:{local}")));
    }
    let targets = configmaps.iter().find(|(n, _)| n.starts_with("reprise-target-")).expect("target map").1;
    let allowed = targets["allow-targets"].clone();
    assert!(targets["target"].contains(&allowed), "the target is inside the allowlist: {targets:?}");
    names.push((allowed, target.to_owned()));
    (Cluster { root: dir.to_path_buf(), secrets, configmaps, names }, container_ports)
}

/// The dispatcher's job file listens on the container's ports, the ones its Service sends to.
fn the_job_listens_where_the_service_sends(job_text: &str, container: &Value, service: &Value) {
    let job: toml::Table = toml::from_str(job_text).expect("job.toml");
    for (key, named) in [("grpc", "grpc"), ("http", "admin")] {
        let listen = job["service"][key].as_str().expect("listen address");
        let declared = container["ports"].as_array().expect("ports").iter().find(|p| p["name"] == named);
        let port = declared.and_then(|p| p["containerPort"].as_u64()).expect("container port");
        assert_eq!(listen, format!(":{port}"), "[service] {key} is the container's port {named}");
        let svc =
            service["spec"]["ports"].as_array().expect("ports").iter().find(|p| p["targetPort"] == named);
        assert_eq!(svc.and_then(|p| p["port"].as_u64()), Some(port), "the Service exposes {named}");
    }
}

/// `read` every 100 ms, for 30 s at most, until `done` holds; the last value read.
async fn poll<T, F, Fut>(mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut value = read().await;
    for _ in 0..300 {
        if done(&value) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        value = read().await;
    }
    value
}

/// Runs the pods of a replayer Deployment (its replicas) or Job (its parallelism) as local
/// processes, each on ports of its own, and waits until every probe in the manifest answers
/// 200: the processes and their count.
async fn start_replayers(deployment: &Value, cluster: &Cluster) -> (Vec<Guard>, u64) {
    let spec = &deployment["spec"];
    let replicas = spec["replicas"].as_u64().or(spec["parallelism"].as_u64()).expect("replicas");
    let spec = &spec["template"]["spec"];
    let container = &spec["containers"][0];
    let mut replayers = Vec::new();
    for i in 0..replicas {
        let mut pod = cluster.clone();
        pod.mount(&format!("replayer-{i}"), spec, container);
        let local = free_port();
        let own_port = container["ports"][0]["containerPort"].as_u64().expect("port");
        // Its own listen address (`--http :8081`) is the container port's.
        let own = format!(":{own_port}");
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg"))
            .map(|a| if a == own { format!("127.0.0.1:{local}") } else { pod.local(a) })
            .collect();
        let env = pod.env(container);
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (guard, line) = spawn_daemon_env(&arg_refs, &env_refs);
        assert_eq!(field(&line, "http"), format!("127.0.0.1:{local}"));
        replayers.push((guard, HashMap::from([(own_port, local)])));
    }
    let probes = ["livenessProbe", "readinessProbe"].into_iter().filter(|p| !container[*p].is_null());
    let probes: Vec<&str> = probes.collect();
    assert!(!probes.is_empty(), "a replayer without a probe");
    for (_, ports) in &replayers {
        for &probe in &probes {
            let p = &container[probe]["httpGet"];
            let addr = format!("127.0.0.1:{}", probe_port(container, &p["port"], ports));
            let path = p["path"].as_str().expect("path").to_owned();
            let mut code = 0;
            for _ in 0..100 {
                code = http("GET", &addr, &path).await.0;
                if code == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(code, 200, "replayer {probe} {p}");
        }
    }
    (replayers.into_iter().map(|(guard, _)| guard).collect(), replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharded_manifests_run_one_replay_on_three_shards_as_local_processes() {
    const RECORDS: usize = 40;
    let target = Capture::start().await;
    let (server, _) = s3_with_recording(RECORDS).await;
    let objs = objects(&render("overlays/sharded"));
    let find = |kind: &str, n: &str| object(&objs, kind, n);
    let dir = temp_dir("deploy-sharded");
    let ca = Authority::new("reprise-ca-test");
    let (secrets, configmaps) = secrets_and_maps(&objs, &ca, "admin-5c2a7e", &server.endpoint);

    // Each shard's pod name (reprise-dispatcher-I.reprise-shards) maps to its own ports.
    let job = find("Job", "reprise-dispatcher");
    let shards = job["spec"]["completions"].as_u64().expect("completions");
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(shards), "every shard runs at once");
    let ports: Vec<(u16, u16)> = (0..shards).map(|_| (free_port(), free_port())).collect();
    let mut names: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, (grpc, _))| {
            (format!("reprise-dispatcher-{i}.reprise-shards:9090"), format!("localhost:{grpc}"))
        })
        .collect();
    let targets = configmaps.iter().find(|(n, _)| n.starts_with("reprise-target-")).expect("target map").1;
    names.push((targets["allow-targets"].clone(), target.addr.to_string()));
    let cluster = Cluster { root: dir.to_path_buf(), secrets, configmaps, names };

    // The Indexed Job's pods: the same args, each with its JOB_COMPLETION_INDEX.
    let spec = &job["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let mut pods = Vec::new();
    for (i, (grpc, admin)) in ports.iter().enumerate() {
        let mut pod = cluster.clone();
        pod.mount(&format!("dispatcher-{i}"), spec, container);
        let mut args = pod.args(container);
        let report = args.iter().position(|a| a == "--report-json").map(|i| PathBuf::from(&args[i + 1]));
        args.extend([
            "--grpc".into(),
            format!("127.0.0.1:{grpc}"),
            "--http".into(),
            format!("127.0.0.1:{admin}"),
        ]);
        let mut env = pod.env(container);
        env.push(("JOB_COMPLETION_INDEX".into(), i.to_string()));
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (guard, _) = spawn_daemon_env(&arg_refs, &env_refs);
        pods.push((guard, report.expect("--report-json")));
    }

    // Each shard's replayer Job: its pods reach their own shard.
    let mut replayers = Vec::new();
    for i in 0..shards {
        let (guards, n) = start_replayers(&find("Job", &format!("reprise-replayer-{i}")), &cluster).await;
        assert_eq!(n, 2, "the job file's min_replayers per shard");
        replayers.push(guards);
    }

    // Every shard ends by itself; shard 0's report is the whole job's.
    let mut reports = Vec::new();
    for (i, (guard, report)) in pods.into_iter().enumerate() {
        let status = wait_exit(guard).await;
        assert!(status.success(), "shard {i} exits 0: {status:?}");
        reports.push(read_json(&report));
    }
    let mut got: Vec<String> = target.requests().iter().map(|c| c.path.clone()).collect();
    got.sort();
    let mut want: Vec<String> = (0..RECORDS).map(|i| format!("/deploy/{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every record once, whichever shard read it");
    let whole = &reports[0];
    assert_eq!(whole["totals"]["sent"], RECORDS, "{}", whole["totals"]);
    let joined = whole["shards"].as_array().expect("the shards that joined");
    assert_eq!(joined.len() as u64, shards - 1, "{joined:?}");
    assert!(joined.iter().all(|s| s["state"] == "finished"), "{joined:?}");
    let own: u64 = reports[1..].iter().map(|r| r["totals"]["sent"].as_u64().unwrap_or_default()).sum();
    assert!(own > 0 && own < RECORDS as u64, "shards 1 and 2 replayed their share: {own}");
}

/// The value after `flag` in a container's args.
fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[i + 1]
}

/// What the capture overlay's sidecar says of the app it fronts, checked against the
/// manifests: the Service sends to the sidecar's `capture` port, the sidecar listens there,
/// serves its probes on `record-http` and forwards to the app's port.
struct Sidecar {
    container: Value,
    app_port: u64,
    brokers: String,
    topic: String,
}

fn sidecar_wiring(dir: &Path) -> Sidecar {
    let objs = objects(&render("overlays/capture"));
    let deployment = object(&objs, "Deployment", "shop");
    let spec = &deployment["spec"]["template"]["spec"];
    let (shop, sidecar) = (&spec["containers"][0], &spec["containers"][1]);
    assert_eq!(sidecar["name"], "reprise-record");
    let port = |c: &Value, n: &str| {
        c["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == n))
            .and_then(|p| p["containerPort"].as_u64())
    };
    let service = object(&objs, "Service", "shop");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "capture", "the Service sends to the sidecar");
    let rendered =
        Cluster { root: dir.to_path_buf(), secrets: Named::new(), configmaps: Named::new(), names: vec![] };
    let args = rendered.args(sidecar);
    assert_eq!(arg_after(&args, "--listen"), format!(":{}", port(sidecar, "capture").expect("capture")));
    assert_eq!(
        arg_after(&args, "--http"),
        format!(":{}", port(sidecar, "record-http").expect("record-http"))
    );
    let app_port = port(shop, "http").expect("the app's port");
    assert_eq!(
        arg_after(&args, "--upstream"),
        format!("http://127.0.0.1:{app_port}"),
        "the sidecar fronts the app"
    );
    Sidecar {
        container: sidecar.clone(),
        app_port,
        brokers: arg_after(&args, "--kafka-brokers").to_owned(),
        topic: arg_after(&args, "--kafka-topic").to_owned(),
    }
}

/// The shadow overlay's job file, as rendered; it must read the sidecar's topic.
fn shadow_job(sidecar: &Sidecar) -> String {
    let shadow = objects(&render("overlays/shadow"));
    let job_map = shadow
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && name(o).starts_with("reprise-job-"))
        .expect("the shadow's job");
    let job_text = job_map["data"]["job.toml"].as_str().expect("job.toml").to_owned();
    let job: toml::Table = toml::from_str(&job_text).expect("job.toml");
    assert_eq!(
        job["fetcher"]["kafka"]["topic"].as_str(),
        Some(sidecar.topic.as_str()),
        "the shadow reads the captures"
    );
    assert_eq!(job["fetcher"]["kafka"]["brokers"].as_str(), Some(sidecar.brokers.as_str()));
    job_text
}

/// The sidecar as a local process, its args and env as rendered with `cluster`'s names and
/// `topic` for the rendered one; its probes must answer.
async fn start_sidecar(sidecar: &Sidecar, cluster: &Cluster, topic: &str, probes: u16) -> Guard {
    let mut args = cluster.args(&sidecar.container);
    let at = args.iter().position(|a| *a == sidecar.topic).expect("the topic");
    args[at] = topic.to_owned();
    let env = cluster.env(&sidecar.container);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (record, _) = spawn_daemon_env(&arg_refs, &env_refs);
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = sidecar.container[probe]["httpGet"]["path"].as_str().expect("path");
        assert_eq!(http("GET", &format!("127.0.0.1:{probes}"), path).await.0, 200, "{probe} {path}");
    }
    record
}

/// The capture recipe as local processes: the sidecar of overlays/capture (its args and
/// env as rendered, the Kafka brokers and the app's port mapped to loopback) fronts the
/// app and sends each exchange to the suite's Kafka; the standing shadow of
/// overlays/shadow (its job file as rendered, the brokers mapped) follows the topic and
/// replays and compares each exchange against a candidate until stopped. The wiring holds:
/// the Service sends to the sidecar's port, the sidecar to the app's, the shadow reads the
/// sidecar's topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_sidecar_feeds_a_standing_shadow_as_local_processes() {
    const REQUESTS: usize = 12;
    let dir = temp_dir("deploy-capture");
    let (app, candidate) = (Capture::start().await, Capture::start().await);
    let k = kafka::kafka().await;
    let sidecar = sidecar_wiring(&dir);
    let job_text = shadow_job(&sidecar);
    let own_topic = k.topic(&sidecar.topic).await;

    let (listen, probes) = (free_port(), free_port());
    let (topic, app_port) = (&sidecar.topic, sidecar.app_port);
    let names = vec![
        (sidecar.brokers.clone(), k.brokers.clone()),
        (format!("\"{topic}\""), format!("\"{own_topic}\"")),
        (":8079".to_owned(), format!("127.0.0.1:{listen}")),
        (":9102".to_owned(), format!("127.0.0.1:{probes}")),
        (format!("http://127.0.0.1:{app_port}"), app.url()),
    ];
    let secrets =
        Named::from([("reprise-redact".to_owned(), [("redact-key".to_owned(), "9f".repeat(16))].into())]);
    let cluster = Cluster { root: dir.to_path_buf(), secrets, configmaps: Named::new(), names };
    let record = start_sidecar(&sidecar, &cluster, &own_topic, probes).await;
    let addr = format!("127.0.0.1:{listen}");
    for i in 0..REQUESTS {
        let headers = format!("Cookie: session=s{}\r\nAuthorization: Bearer t{i}\r\n", i % 3);
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let (status, _) =
            exchange(&mut stream, &request("GET", &addr, &format!("/shop/{i}"), "", &headers)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.requests().len(), REQUESTS, "the app got every request");

    let job_file = dir.join("shadow.toml");
    // Its [service] ports are the pod's; here any free ones.
    let local = cluster
        .local(&job_text)
        .replace("\":8080\"", "\"127.0.0.1:0\"")
        .replace("\":9090\"", "\"127.0.0.1:0\"");
    std::fs::write(&job_file, local).expect("the shadow's job");
    let report = dir.join("report.json");
    let run = [
        "run",
        job_file.to_str().expect("path"),
        "--replayers",
        "2",
        "--target",
        &candidate.url(),
        "--report-json",
        report.to_str().expect("path"),
    ];
    let shadow = Guard(
        std::process::Command::new(BIN).args(run).env("RUST_LOG", "warn").spawn().expect("reprise run"),
    );
    let replayed = wait_until(|| candidate.requests().len() >= REQUESTS, Duration::from_secs(60)).await;
    assert!(replayed, "the shadow replayed {} of {REQUESTS}", candidate.requests().len());
    drop(record);
    interrupt(&shadow);
    let status = wait_exit(shadow).await;
    assert_eq!(status.code(), Some(4), "a followed topic runs until stopped");
    let report = read_json(&report);
    let cmp = &report["compare"];
    assert_eq!(
        (cmp["compared"].as_u64(), cmp["differing"].as_u64()),
        (Some(REQUESTS as u64), Some(0)),
        "{cmp:#}"
    );
    let auth: Vec<_> =
        candidate.requests().iter().filter_map(|r| r.header("authorization").map(<[u8]>::to_vec)).collect();
    assert!(
        auth.iter().all(|a| a.starts_with(b"redacted:")),
        "the shadow sends what was recorded: tokens redacted"
    );
}
