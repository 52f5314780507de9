//! The offline image build (`scripts/image`, buildah `FROM scratch`): the OCI archive it
//! writes holds a runnable `reprise` for a non-root user. The image is unpacked as a
//! runtime would (index → manifest → config and layers) and its `reprise --version` is run
//! with the image's own loader and libraries, not the machine's. No container runtime runs
//! here (this sandbox cannot create one: buildah's `run` fails for want of namespaces).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// A blob of the unpacked archive, by its digest.
fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs").join(digest.replacen(':', "/", 1))
}

#[test]
fn the_offline_image_holds_a_runnable_reprise_for_a_non_root_user() {
    let dir = temp_dir("image");
    let archive = dir.join("reprise.tar");
    let out = Command::new("scripts/image")
        .args([archive.to_str().expect("path"), "reprise:test"])
        .env("REPRISE_BIN", BIN)
        .output()
        .expect("scripts/image");
    assert!(out.status.success(), "scripts/image: {}", String::from_utf8_lossy(&out.stderr));

    let oci = dir.join("oci");
    std::fs::create_dir(&oci).expect("dir");
    let untar = |file: &Path, into: &Path| {
        let ok = Command::new("tar").arg("-xf").arg(file).arg("-C").arg(into).status().expect("tar");
        assert!(ok.success(), "tar -xf {}", file.display());
    };
    untar(&archive, &oci);
    let json = |p: std::path::PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
    };
    let index = json(oci.join("index.json"));
    let manifest = json(blob(&oci, index["manifests"][0]["digest"].as_str().expect("manifest")));
    let config = json(blob(&oci, manifest["config"]["digest"].as_str().expect("config")));
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/reprise"]), "{c}");
    assert_eq!(c["User"], "65532:65532", "non-root");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "reprise:test",
        "{index}"
    );

    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).expect("dir");
    for layer in manifest["layers"].as_array().expect("layers") {
        untar(&blob(&oci, layer["digest"].as_str().expect("layer")), &rootfs);
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("reprise:x:65532:65532:"), "{passwd}");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").exists(), "CA certificates");
    assert!(!rootfs.join("bin/sh").exists(), "no shell in the image");

    // The image's loader and libraries, as the container would use them.
    let loader = ["lib64/ld-linux-x86-64.so.2", "lib/ld-linux-aarch64.so.1"]
        .iter()
        .map(|l| rootfs.join(l))
        .find(|l| l.exists())
        .expect("the image's dynamic loader");
    let libs: Vec<String> =
        ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "lib64"]
            .iter()
            .map(|d| rootfs.join(d).display().to_string())
            .collect();
    let run = Command::new(&loader)
        .args(["--inhibit-cache", "--library-path", &libs.join(":")])
        .arg(rootfs.join("usr/local/bin/reprise"))
        .arg("--version")
        .output()
        .expect("run the image's reprise");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), format!("reprise {}", env!("CARGO_PKG_VERSION")));
}
