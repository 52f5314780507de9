//! The Kafka destination: each exchange is one message on a topic, its json record as the
//! value, keyed by a chosen header's value (a session cookie, a user id) so that a
//! session's exchanges stay in one partition, in order. A follow-mode job on the topic
//! replays them as they come: a standing shadow of production.
//!
//! librdkafka holds what it has not yet delivered in a queue bounded by the same `--queue`
//! size; a message it cannot take (a broker slower than the traffic, or down) is dropped
//! and counted as `queue_full`, one it could not deliver in time as `write_failed`, counted
//! when librdkafka reports it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use http::HeaderName;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig,
};

use super::{Destination, WARN_EVERY};
use crate::counters::{Counters, DropReason};

/// How long a message may wait for its broker before it is dropped (`write_failed`).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, how long what is queued may take to be delivered.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kafka sink's settings (`--kafka-brokers`, `--kafka-topic`, `--kafka-key`,
/// `--kafka-property`).
#[derive(Clone, Debug)]
pub struct KafkaSink {
    pub brokers: String,
    pub topic: String,
    /// The header whose value keys each message.
    pub key: Option<HeaderName>,
    /// librdkafka properties, set last (security, batching).
    pub properties: Vec<(String, String)>,
}

/// Counts each message as librdkafka reports its delivery.
struct Delivered {
    counters: Arc<Counters>,
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.counters.recorded.fetch_add(1, Relaxed);
                let size = m.payload_len() as u64;
                self.counters.written_bytes.fetch_add(size, Relaxed);
            }
            Err(_) => self.counters.count_drop(DropReason::WriteFailed, 1),
        }
    }
}

pub(super) struct Producer {
    producer: BaseProducer<Delivered>,
    topic: String,
    warned: Option<Instant>,
}

impl Producer {
    pub(super) fn new(sink: KafkaSink, bound: u64, counters: Arc<Counters>) -> std::io::Result<Producer> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &sink.brokers)
            .set("queue.buffering.max.kbytes", (bound / 1024).clamp(1, i32::MAX as u64).to_string())
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "20");
        for (k, v) in &sink.properties {
            c.set(k, v);
        }
        let producer = c
            .create_with_context(Delivered { counters })
            .map_err(|e| std::io::Error::other(format!("Kafka producer for {}: {e}", sink.brokers)))?;
        Ok(Producer { producer, topic: sink.topic, warned: None })
    }
}

impl Destination for Producer {
    fn put(&mut self, key: Option<&[u8]>, line: &[u8], counters: &Counters) {
        let value = line.strip_suffix(b"\n").unwrap_or(line);
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Err((err, _)) = self.producer.send(record) {
            match err {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    counters.count_drop(DropReason::QueueFull, 1);
                }
                other => {
                    counters.count_drop(DropReason::WriteFailed, 1);
                    if self.warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                        tracing::warn!(error = %other, topic = %self.topic, "recording: Kafka refused a message");
                        self.warned = Some(Instant::now());
                    }
                }
            }
        }
        self.producer.poll(Duration::ZERO);
    }

    fn flush(&mut self, _: &Counters) {
        self.producer.poll(Duration::ZERO);
    }

    fn close(&mut self, _: &Counters) {
        if self.producer.flush(CLOSE_TIMEOUT).is_err() {
            tracing::warn!(
                left = self.producer.in_flight_count(),
                "recording: Kafka did not take every message in time; dropping the rest"
            );
            // Each purged message is reported, and counted, as not delivered.
            self.producer.purge(PurgeConfig::default().queue().inflight());
            self.producer.poll(Duration::from_millis(100));
        }
    }
}
