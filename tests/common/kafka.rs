//! The Kafka broker of the suite (`REPRISE_TEST_KAFKA`, started by scripts/test), or one of
//! the test binary's own (Tansu, a Kafka-protocol broker built from crates.io), with a
//! producer, topics named per test process, and job files reading them.

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{Guard, free_port, wait_until};

pub struct Kafka {
    pub brokers: String,
    producer: FutureProducer,
    _server: Option<Guard>,
}

fn tansu_binary() -> String {
    let cached =
        std::env::var("HOME").map(|h| format!("{h}/.cache/reprise/tansu/bin/tansu")).unwrap_or_default();
    if std::path::Path::new(&cached).exists() { cached } else { "tansu".into() }
}

pub async fn kafka() -> Kafka {
    let (brokers, server) = match std::env::var("REPRISE_TEST_KAFKA") {
        Ok(b) => (b, None),
        Err(_) => {
            let addr = format!("127.0.0.1:{}", free_port());
            let url = format!("tcp://{addr}");
            let guard = Guard(
                Command::new(tansu_binary())
                    .args(["broker", "--storage-engine", "memory://tansu/", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("tansu is not installed: scripts/test builds it (cargo install tansu --features dynostore)"),
            );
            (addr, Some(guard))
        }
    };
    assert!(
        wait_until(|| std::net::TcpStream::connect(&brokers).is_ok(), Duration::from_secs(30)).await,
        "no Kafka broker at {brokers}"
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    Kafka { brokers, producer, _server: server }
}

impl Kafka {
    /// A topic of 3 partitions named after `name` and this test process.
    pub async fn topic(&self, name: &str) -> String {
        self.topic_of(name, 3).await
    }

    pub async fn topic_of(&self, name: &str, partitions: i32) -> String {
        let name = format!("{name}-{}", std::process::id());
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("admin");
        let made = admin
            .create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic");
        assert!(made.iter().all(Result::is_ok), "{made:?}");
        name
    }

    pub async fn send(&self, topic: &str, partition: i32, kafka_ts_ms: i64, value: &str) {
        let record =
            FutureRecord::<(), str>::to(topic).partition(partition).timestamp(kafka_ts_ms).payload(value);
        self.producer.send(record, Duration::from_secs(10)).await.expect("produce");
    }

    pub fn job(
        &self,
        dir: &std::path::Path,
        target: &str,
        job_extra: &str,
        kafka: &str,
    ) -> std::path::PathBuf {
        let text = format!(
            "[job]\ntarget = \"{target}\"\n{job_extra}\n[fetcher]\ntype = \"kafka\"\n[fetcher.kafka]\nbrokers = \"{}\"\nconnect_timeout = \"5s\"\n{kafka}\n",
            self.brokers
        );
        let path = dir.join("job.toml");
        std::fs::write(&path, text).expect("write job");
        path
    }
}
