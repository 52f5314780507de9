//! Compiles proto/reprise.proto with a vendored protoc, so nobody installs protoc by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/reprise.proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Bodies and header values as `Bytes`: a record's body is not copied on its way out.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(config, &["proto/reprise.proto"], &["proto"])?;
    Ok(())
}
