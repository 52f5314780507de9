//! The Kafka fetcher: every partition of a topic (or those listed), each read on its own
//! thread from its own librdkafka partition queue into its own stream, merged by record time
//! in [`super::merge`] with the reorder window files have.
//!
//! Where reading starts: `offset` as Havok meant it (-2 oldest, -1 newest, n), else `[job]
//! begin` looked up by timestamp (a broker that answers the earliest offset only costs
//! reading more: the merge still drops records before `begin`), else the group's committed
//! offset, else the oldest. Where it ends: a partition is done when it passes `[job] end`
//! by more than the reorder window, or reaches the end offset it had at start. With
//! `follow = true` it keeps tailing instead, and tells the merge when it has caught up so an
//! idle partition does not hold the others back.
//!
//! With `group_id` and `follow`, the dispatcher is a member of the consumer group and reads
//! the partitions the group gives it ([`group`]); otherwise it assigns its partitions itself
//! (a shard's share of them with `--shard`). Offsets are committed only with `group_id`,
//! and only for messages whose records have gone out.
//!
//! A message's value is what the analyzer parses: one record, or several lines (or GoReplay
//! units).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::merge::{Chunk, Stream};
use super::units::parse_units;
use super::{Chunker, FetchError, STREAM_CAPACITY, SourceContext};
use crate::accounting::Malformed;
use crate::config::{KafkaConfig, KafkaTimestamp, Range};
use crate::record::Record;
use crate::shard::Shard;

mod group;
use group::{Commits, Owners};

/// How long a partition thread waits for a message before it hands over what it holds and
/// checks for a stop.
const POLL: Duration = Duration::from_millis(100);

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<Owners>;

/// The consumer (for its local position, the partitions it owns and the offsets it stores)
/// and the client that asks for watermarks.
struct Clients {
    consumer: Arc<BaseConsumer<Owners>>,
    watermarks: Arc<BaseConsumer>,
}

/// How long a watermark query may take before the partition is taken as not caught up yet.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);

/// One partition's reading plan.
#[derive(Clone, Debug)]
struct Partition {
    topic: String,
    id: i32,
    /// The high watermark at start: without `follow`, reading ends there.
    end_offset: i64,
    follow: bool,
    timestamp: KafkaTimestamp,
    /// Past this record time (end + window) the partition is done.
    stop_after_ns: Option<i64>,
    /// Its place among the partitions read ([`Owners::owner`]).
    index: usize,
    /// Offsets are stored as records go out (`group_id` is set).
    commits: bool,
}

/// Connects, plans every partition, and starts one reader thread per partition. Blocking:
/// run it off the async runtime.
pub fn start(
    k: &KafkaConfig,
    single: bool,
    range: Range,
    ctx: &SourceContext,
) -> Result<Vec<Stream>, FetchError> {
    let err =
        |reason: String| FetchError::Kafka { brokers: k.brokers.joined(), topic: k.topic.clone(), reason };
    // Metadata, start offsets and watermarks are asked on a connection of its own: on the
    // consumer's, a request waits behind the fetch the broker holds open until data comes.
    let watermarks: BaseConsumer =
        client_config(k).map_err(&err)?.create().map_err(|e| err(format!("cannot create a client: {e}")))?;
    let watermarks = Arc::new(watermarks);
    let timeout = k.connect_timeout.0;
    let mut ids = partitions(&watermarks, k, single, timeout).map_err(&err)?;
    ids.sort_unstable();
    let grouped = k.follow && k.group_id.is_some();
    let mut ctx = ctx.clone();
    if grouped {
        // The group shares the partitions out, between shards too.
        ctx.shard = Shard::WHOLE;
    } else {
        // A shard's partitions, or its records of every partition (crate::shard).
        let enough = ids.len() >= ctx.shard.count() as usize;
        let (mine, shard) = ctx.shard.parts(ids, enough);
        (ids, ctx.shard) = (mine, shard);
    }
    let ctx = &ctx;
    let consumer: BaseConsumer<Owners> = client_config(k)
        .map_err(&err)?
        .create_with_context(Owners::new(&ids, !grouped))
        .map_err(|e| err(format!("cannot create a consumer: {e}")))?;
    let consumer = Arc::new(consumer);
    let starts = if grouped {
        vec![Offset::Stored; ids.len()]
    } else {
        start_offsets(&watermarks, k, range, &ids, timeout).map_err(&err)?
    };
    let (plan, parts) = plan(&watermarks, k, range, &ids, &starts).map_err(&err)?;
    if !grouped {
        consumer.assign(&plan).map_err(|e| err(format!("cannot assign the partitions: {e}")))?;
    }
    ctx.progress.describe("kafka", "partition", k.follow);
    ctx.progress.parts(parts.len() as u64);
    let live = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::with_capacity(parts.len());
    for (part, empty) in parts {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        streams.push(Stream::new(rx));
        if empty {
            ctx.progress.part_done();
            continue;
        }
        let queue = consumer
            .split_partition_queue(&part.topic, part.id)
            .ok_or_else(|| err(format!("partition {} has no queue", part.id)))?;
        let clients = Clients { consumer: Arc::clone(&consumer), watermarks: Arc::clone(&watermarks) };
        let (reader, live) = (ctx.clone(), Arc::clone(&live));
        live.fetch_add(1, Ordering::SeqCst);
        ctx.tasks.spawn_blocking(move || {
            read_partition(&clients, &queue, &part, &reader, &tx);
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
    if grouped {
        // Subscribed only once every partition has its queue: no message reaches the main queue.
        consumer
            .subscribe(&[&k.topic])
            .map_err(|e| err(format!("cannot join group {:?}: {e}", k.group_id)))?;
    }
    let (cancel, commits) = (ctx.cancel.clone(), k.group_id.is_some());
    ctx.tasks.spawn_blocking(move || serve_events(&consumer, &live, &cancel, commits));
    Ok(streams)
}

/// What the consumer reads of each partition, from where: the offsets to assign, and each
/// partition's reader settings with whether it has nothing to read (a bounded replay of an
/// empty partition, or one started at its end).
fn plan(
    watermarks: &BaseConsumer,
    k: &KafkaConfig,
    range: Range,
    ids: &[i32],
    starts: &[Offset],
) -> Result<(TopicPartitionList, Vec<(Partition, bool)>), String> {
    let mut plan = TopicPartitionList::new();
    let mut parts = Vec::with_capacity(ids.len());
    for (index, (&id, &offset)) in ids.iter().zip(starts).enumerate() {
        let (low, high) = watermarks
            .fetch_watermarks(&k.topic, id, k.connect_timeout.0)
            .map_err(|e| format!("cannot read the offsets of partition {id}: {e}"))?;
        plan.add_partition_offset(&k.topic, id, offset).map_err(|e| e.to_string())?;
        let empty = !k.follow
            && (high <= low || offset == Offset::End || matches!(offset, Offset::Offset(o) if o >= high));
        parts.push((
            Partition {
                topic: k.topic.clone(),
                id,
                end_offset: high,
                follow: k.follow,
                timestamp: k.timestamp,
                stop_after_ns: range.end.map(|e| e.saturating_add(range.window_ns)),
                index,
                commits: k.group_id.is_some(),
            },
            empty,
        ));
    }
    Ok((plan, parts))
}

/// Polls the consumer's main queue while readers run: librdkafka serves its events (errors,
/// rebalances, statistics) only there, even though messages go to the partition queues.
/// With `commits`, waits for the readers' last stored offsets and commits them once; the
/// consumer leaves its group as it is dropped.
fn serve_events(
    consumer: &BaseConsumer<Owners>,
    live: &AtomicUsize,
    cancel: &CancellationToken,
    commits: bool,
) {
    while !cancel.is_cancelled() && live.load(Ordering::SeqCst) > 0 {
        match consumer.poll(POLL) {
            Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
            // Every partition read has a queue of its own; validation keeps the group to them.
            Some(Ok(m)) => {
                tracing::error!(partition = m.partition(), "kafka: a message of a partition not read")
            }
            None => {}
        }
    }
    if commits {
        while live.load(Ordering::SeqCst) > 0 {
            consumer.poll(POLL);
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "kafka: no last commit");
        }
    }
}

fn client_config(k: &KafkaConfig) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.joined())
        // End of partition is judged from the local position against the watermarks
        // instead: EOF events of split partition queues arrive on the main queue.
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", if k.group_id.is_some() { "true" } else { "false" });
    // librdkafka wants a group even for assigned partitions; without `group_id` it is only a
    // name: nothing joins it and nothing is committed.
    c.set("group.id", k.group_id.as_deref().unwrap_or("reprise"));
    if let Some(p) = &k.security_protocol {
        c.set("security.protocol", p.to_ascii_lowercase());
    }
    if let Some(m) = &k.sasl_mechanism {
        let password = std::env::var(&k.sasl_password_env).map_err(|_| {
            format!(
                "sasl_mechanism is set but the environment variable {} (fetcher.kafka.sasl_password_env) holding the password is not",
                k.sasl_password_env
            )
        })?;
        c.set("sasl.mechanism", m.to_ascii_uppercase())
            .set("sasl.username", k.sasl_username.clone().unwrap_or_default())
            .set("sasl.password", password);
    }
    for (key, value) in [
        ("ssl.ca.location", &k.ssl_ca_location),
        ("ssl.certificate.location", &k.ssl_certificate_location),
        ("ssl.key.location", &k.ssl_key_location),
    ] {
        if let Some(v) = value {
            c.set(key, v);
        }
    }
    if k.group_id.is_some() {
        // Offsets are stored by hand as records go out (see `group`), and committed often.
        c.set("enable.auto.offset.store", "false").set("auto.commit.interval.ms", "1000");
        if k.follow {
            c.set("partition.assignment.strategy", "cooperative-sticky");
        }
    }
    for (key, value) in &k.properties {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        c.set(key, text);
    }
    Ok(c)
}

/// The partitions to read: all of the topic's, those listed, or 0 for Havok's single-partition type.
fn partitions(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    k: &KafkaConfig,
    single: bool,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    let md = consumer.fetch_metadata(Some(&k.topic), timeout).map_err(|e| {
        format!("cannot reach the brokers within {timeout:?} ({e}); check fetcher.kafka.brokers and that the brokers are up")
    })?;
    let topic = md.topics().iter().find(|t| t.name() == k.topic);
    let mut all: Vec<i32> =
        topic.map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if let Some(e) = topic.and_then(|t| t.error()) {
        return Err(format!("the topic cannot be read ({e:?}); check fetcher.kafka.topic"));
    }
    if all.is_empty() {
        return Err("the topic has no partitions: does it exist? check fetcher.kafka.topic".into());
    }
    all.sort_unstable();
    let wanted = if single { vec![0] } else { k.partitions.clone().unwrap_or_else(|| all.clone()) };
    let missing: Vec<i32> = wanted.iter().copied().filter(|p| !all.contains(p)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "fetcher.kafka.partitions: {missing:?} not in the topic, which has partitions {}..={}",
            all[0],
            all[all.len() - 1]
        ));
    }
    Ok(wanted)
}

/// Where each partition starts (see the module docs for the order of preference).
fn start_offsets(
    consumer: &BaseConsumer,
    k: &KafkaConfig,
    range: Range,
    ids: &[i32],
    timeout: Duration,
) -> Result<Vec<Offset>, String> {
    let fixed = match (k.offset, range.begin) {
        (Some(-2), _) => Offset::Beginning,
        (Some(-1), _) => Offset::End,
        (Some(n), _) => Offset::Offset(n),
        (None, None) if k.group_id.is_some() => Offset::Stored,
        (None, None) => Offset::Beginning,
        (None, Some(begin)) => {
            // Records up to a window before `begin` can still come in order after it.
            let at_ms = begin.saturating_sub(range.window_ns) / 1_000_000;
            let mut times = TopicPartitionList::new();
            for &id in ids {
                times.add_partition_offset(&k.topic, id, Offset::Offset(at_ms)).map_err(|e| e.to_string())?;
            }
            let found = consumer
                .offsets_for_times(times, timeout)
                .map_err(|e| format!("cannot look up offsets for job.begin: {e}"))?;
            return Ok(ids
                .iter()
                .map(|&id| match found.find_partition(&k.topic, id).map(|e| e.offset()) {
                    Some(o @ Offset::Offset(_)) => o,
                    Some(Offset::End) => Offset::End,
                    _ => Offset::Beginning,
                })
                .collect());
        }
    };
    Ok(vec![fixed; ids.len()])
}

/// Reads one partition into `tx` until it is done (see the module docs), the job stops, or
/// the merge is gone; with `group_id`, stores the offsets of what went out as it goes and
/// once more at its end.
fn read_partition(
    clients: &Clients,
    queue: &Queue,
    part: &Partition,
    ctx: &SourceContext,
    tx: &mpsc::Sender<Chunk>,
) {
    let mut commits = Commits::default();
    let done = read_messages(clients, queue, part, ctx, tx, &mut commits);
    if part.commits {
        commits.store(&clients.consumer, &part.topic, part.id, &ctx.progress);
    }
    if done {
        ctx.progress.part_done();
    }
}

/// The reading loop of [`read_partition`]; true when the partition was read to its end.
fn read_messages(
    clients: &Clients,
    queue: &Queue,
    part: &Partition,
    ctx: &SourceContext,
    tx: &mpsc::Sender<Chunk>,
    commits: &mut Commits,
) -> bool {
    let mut out = Chunker::new(tx, &ctx.progress);
    let mut next_offset = None;
    let mut caught_up = false;
    let mut round = 0;
    while !ctx.cancel.is_cancelled() {
        let owner = clients.consumer.context().owner(part.index);
        if owner != round {
            // Assigned again (or taken away): the position is the consumer's from here.
            (round, next_offset) = (owner, None);
        }
        match queue.poll(POLL) {
            None => {
                if !out.flush() {
                    return false;
                }
                let at = next_offset.or_else(|| position(&clients.consumer, part));
                if !part.follow && at.is_some_and(|n| n >= part.end_offset) {
                    break;
                }
                // A partition this member does not own has nothing for it: idle.
                if part.follow && !caught_up && (round == 0 || is_caught_up(&clients.watermarks, part, at)) {
                    if !out.idle() {
                        return false;
                    }
                    caught_up = true;
                }
            }
            Some(Err(e)) => tracing::warn!(partition = part.id, error = %e, "kafka fetch error; retrying"),
            Some(Ok(msg)) => {
                caught_up = false;
                next_offset = Some(msg.offset() + 1);
                let payload = msg.payload().unwrap_or_default();
                ctx.progress.bytes(payload.len() as u64);
                let kafka_ts = msg.timestamp().to_millis().map(|ms| ms.saturating_mul(1_000_000));
                let taken = take_message(payload, kafka_ts, msg.offset(), part, ctx, &mut out);
                if !taken.open {
                    return false;
                }
                if part.commits {
                    commits.read(round, msg.offset(), taken.newest);
                }
                if taken.past_end || (!part.follow && msg.offset() + 1 >= part.end_offset) {
                    break;
                }
            }
        }
        if part.commits {
            commits.store(&clients.consumer, &part.topic, part.id, &ctx.progress);
        }
    }
    !ctx.cancel.is_cancelled() && out.flush()
}

/// The consumer's local fetch position in this partition, once it has one.
fn position(consumer: &BaseConsumer<Owners>, part: &Partition) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(&part.topic, part.id)?.offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    }
}

/// Whether a quiet partition has nothing more to give for now: its position is at the high
/// watermark (asked of the broker: only after a quiet poll, so at most ten times a second).
fn is_caught_up(client: &BaseConsumer, part: &Partition, at: Option<i64>) -> bool {
    match client.fetch_watermarks(&part.topic, part.id, WATERMARK_TIMEOUT) {
        Ok((low, high)) => at.map_or(high <= low, |n| n >= high),
        Err(_) => false,
    }
}

/// What became of a message.
struct Taken {
    /// A record passed the end of the job.
    past_end: bool,
    /// The merge is still there.
    open: bool,
    /// The newest time of the records handed over (`i64::MIN`: none).
    newest: i64,
}

/// Parses a message's value into `out`.
fn take_message(
    payload: &[u8],
    kafka_ts: Option<i64>,
    offset: i64,
    part: &Partition,
    ctx: &SourceContext,
    out: &mut Chunker<'_>,
) -> Taken {
    let mut taken = Taken { past_end: false, open: true, newest: i64::MIN };
    let source = format!("kafka {}/{}@{offset}", part.topic, part.id);
    if part.timestamp == KafkaTimestamp::Kafka && kafka_ts.is_none() {
        ctx.accounting.malformed(
            Malformed::NoKafkaTimestamp,
            "the message has no timestamp",
            payload,
            &source,
            1,
        );
        return taken;
    }
    let mut at = 0;
    let mut reader = payload;
    // A slice never fails to read.
    let _ = parse_units(&mut reader, &source, ctx, &mut at, |mut record: Record| {
        if part.timestamp == KafkaTimestamp::Kafka {
            record.ts = kafka_ts.unwrap_or(record.ts);
        }
        taken.past_end |= part.stop_after_ns.is_some_and(|stop| record.ts > stop);
        taken.newest = taken.newest.max(record.ts);
        taken.open = out.push(record);
        taken.open
    });
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(extra: &str) -> KafkaConfig {
        let text = format!("brokers = [\"a:9092\", \" b:9092 \"]\ntopic = \"t\"\n{extra}");
        toml::from_str(&text).expect("kafka section")
    }

    #[test]
    fn properties_pass_through_and_commits_need_a_group() {
        let k = fetcher("[properties]\n\"fetch.max.bytes\" = 1024\n\"client.id\" = \"replay\"\n");
        let c = client_config(&k).expect("config");
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("fetch.max.bytes"), Some("1024"), "numbers are written as librdkafka wants");
        assert_eq!(c.get("client.id"), Some("replay"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"), "no commits without group_id");
        let grouped = client_config(&fetcher("group_id = \"g\"")).expect("config");
        assert_eq!((grouped.get("group.id"), grouped.get("enable.auto.commit")), (Some("g"), Some("true")));
    }

    #[test]
    fn sasl_takes_its_password_from_the_environment_only() {
        let k = fetcher(
            "security_protocol = \"SASL_SSL\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"u\"\nsasl_password_env = \"REPRISE_TEST_UNSET_PASSWORD\"",
        );
        let err = client_config(&k).expect_err("no password in the environment");
        assert!(err.contains("REPRISE_TEST_UNSET_PASSWORD"), "{err}");
        let from_env = KafkaConfig { sasl_password_env: "PATH".into(), ..k };
        let c = client_config(&from_env).expect("config");
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.password").map(str::is_empty), Some(false));
    }
}
