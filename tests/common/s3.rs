//! The S3 server of the suite (`REPRISE_TEST_S3`, started by scripts/test), or one of the
//! test binary's own (moto), with a client for it.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use super::Guard;

pub struct S3 {
    pub endpoint: String,
    pub client: Client,
    _server: Option<Guard>,
}

pub async fn s3() -> S3 {
    let (endpoint, server) = match std::env::var("REPRISE_TEST_S3") {
        Ok(url) => (url, None),
        Err(_) => {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            let guard = Guard(
                Command::new("moto_server")
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect(
                        "moto_server is not installed: scripts/test installs it (pip install 'moto[server]')",
                    ),
            );
            (format!("http://127.0.0.1:{port}"), Some(guard))
        }
    };
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_sdk_s3::config::Builder::new()
        .http_client(http)
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .build();
    let client = Client::from_conf(conf);
    for _ in 0..100 {
        if client.list_buckets().send().await.is_ok() {
            return S3 { endpoint, client, _server: server };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not answer at {endpoint}");
}
