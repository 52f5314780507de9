//! The common start of a sharded job's dispatchers (`reprise dispatcher --shard I/N`).
//! Shard 0 coordinates: the others join it once their source is open and their own
//! `min_replayers` are in ([`Coordinator`], over gRPC in `server::shard_link`), each with the
//! recorded time of its first record and its clock's offset from the coordinator's. When
//! every shard has joined, the coordinator ([`Board`]) announces one origin (`[job] begin`,
//! or the earliest first record of all shards) and one start instant a little ahead, and
//! every shard schedules a record recorded at `t` for `start + (t − origin) / speed`.
//!
//! Every second each shard sends its results so far (its report, statistics encoded
//! within), and its last ones at its end; the coordinator keeps each shard's latest as a
//! [`Part`] and adds them to its own on every snapshot (`results::merge::absorb`), so its
//! live page, `/status`, `/metrics`, thresholds and report are the whole job's. Sending the
//! whole so far rather than deltas costs more bytes (bounded by `[stats] max_endpoints`),
//! and a lost or repeated message changes nothing.
//!
//! A shard whose clock is further off than the bound (`--max-clock-offset`) is refused, and
//! the job does not start. A stop of the coordinator's job reaches every shard; a coordinator
//! that is gone stops every shard (no replay goes on unwatched); a shard that is gone before
//! its last results is named lost in the coordinator's report, and what it had scheduled and
//! not reported done counts as dropped `shard_lost`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::parts::Part;
use crate::shard::Shard;

/// How far ahead of the moment the last shard joined the common start is: enough for the
/// announcement to reach every shard and their replayers to have the job.
pub const START_LEAD: Duration = Duration::from_millis(500);

/// The default bound on a shard's clock offset from the coordinator's.
pub const MAX_CLOCK_OFFSET: Duration = Duration::from_millis(5);

/// A future the link resolves.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shard's way to its coordinator (gRPC, in `server::shard_link`).
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// Measures the clock offset, joins, and resolves once the coordinator announces the
    /// start: the start and the offset it was measured with (the coordinator's clock minus
    /// this one's), and what resolves with why when the coordinator stops the job or is gone.
    fn join(&self, join: pb::ShardJoin) -> Pending<'_, Result<Joined, String>>;
    /// Sends this shard's results so far (the last ones when `results.last`).
    fn report(&self, results: pb::ShardResults) -> Pending<'_, Result<(), String>>;
}

/// What joining gave.
pub struct Joined {
    pub start: pb::ShardStart,
    pub offset_us: i64,
    /// Resolves with why the shard must stop (the coordinator stopped the job, or is gone).
    pub stop: Pending<'static, String>,
}

/// What the report shows of a shard (the coordinator's report).
#[derive(Clone, Debug, Serialize)]
pub struct ShardStatus {
    pub shard: String,
    /// "joined", "running", "finished", "stopped", "lost" or "refused".
    pub state: &'static str,
    /// The coordinator's clock minus the shard's, ms, and the round trip it was read over.
    pub clock_offset_ms: f64,
    pub rtt_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The coordinator's view of its shards.
#[derive(Debug)]
pub struct Board {
    shard: Shard,
    max_offset: Duration,
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    shards: BTreeMap<u32, Entry>,
    /// The start announced (every shard joining later is refused).
    start: Option<pb::ShardStart>,
    /// Why the job cannot start (a shard refused).
    refused: Option<String>,
}

#[derive(Debug)]
struct Entry {
    first_ns: Option<i64>,
    offset_us: i64,
    rtt_us: u64,
    state: &'static str,
    why: Option<String>,
    events: mpsc::Sender<pb::ShardEvent>,
    /// Its latest results.
    results: Option<Arc<Part>>,
}

impl Board {
    pub fn new(shard: Shard, max_offset: Duration) -> Board {
        Board { shard, max_offset, inner: Mutex::default(), changed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a shard's join; the events it is to receive, or why it is refused (a refusal
    /// of its clock also keeps the job from starting).
    pub fn join(&self, join: &pb::ShardJoin) -> Result<mpsc::Receiver<pb::ShardEvent>, String> {
        let name = format!("shard {}/{}", join.index, join.count);
        if join.count != self.shard.count() || join.index == 0 || join.index >= join.count {
            return Err(format!("{name} does not belong to this job of {} shards", self.shard.count()));
        }
        let mut inner = self.lock();
        if inner.start.is_some() {
            return Err(format!("{name} joined after the job started"));
        }
        if inner.shards.get(&join.index).is_some_and(|e| e.state == "joined") {
            return Err(format!("{name} has already joined"));
        }
        let (tx, rx) = mpsc::channel(4);
        let offset = Duration::from_micros(join.clock_offset_us.unsigned_abs());
        let mut entry = Entry {
            first_ns: join.first_ns,
            offset_us: join.clock_offset_us,
            rtt_us: join.rtt_us,
            state: "joined",
            why: None,
            events: tx,
            results: None,
        };
        if offset > self.max_offset {
            let why = format!(
                "{name}'s clock is {:.1} ms off the coordinator's (bound {} ms): synchronize the machines' clocks (NTP, chrony) or raise --max-clock-offset",
                join.clock_offset_us as f64 / 1000.0,
                self.max_offset.as_millis()
            );
            entry.state = "refused";
            entry.why = Some(why.clone());
            inner.refused = Some(why.clone());
            inner.shards.insert(join.index, entry);
            drop(inner);
            self.changed.notify_waiters();
            return Err(why);
        }
        inner.shards.insert(join.index, entry);
        drop(inner);
        self.changed.notify_waiters();
        tracing::info!(shard = %name, offset_us = join.clock_offset_us, rtt_us = join.rtt_us, "shard joined");
        Ok(rx)
    }

    /// Waits for every shard, then announces the start: origin `begin`, or the earliest
    /// first record of all shards (`own_first` is the coordinator's). The start instant, by
    /// this machine's clock, and the origin; `None` for the origin when no shard has a record.
    pub async fn agree(
        &self,
        own_first: Option<i64>,
        begin: Option<i64>,
        stop: &CancellationToken,
    ) -> Result<(SystemTime, Option<i64>), String> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let inner = self.lock();
                if let Some(why) = &inner.refused {
                    return Err(why.clone());
                }
                let joined = inner.shards.values().filter(|e| e.state == "joined").count();
                if joined + 1 == self.shard.count() as usize {
                    break;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = stop.cancelled() => return Err("stopped while waiting for the shards to join".into()),
            }
        }
        let mut inner = self.lock();
        let firsts = inner.shards.values().filter_map(|e| e.first_ns).chain(own_first);
        let origin = begin.or_else(|| firsts.min());
        let wall = SystemTime::now() + START_LEAD;
        let start_unix_ns = wall.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default();
        let start = pb::ShardStart { start_unix_ns, origin_ns: origin.unwrap_or_default() };
        inner.start = Some(start);
        for e in inner.shards.values_mut() {
            e.state = "running";
            let event = pb::ShardEvent { event: Some(pb::shard_event::Event::Start(start)) };
            // A full or closed channel: the shard is gone, and its stream's end says so.
            let _ = e.events.try_send(event);
        }
        tracing::info!(
            shards = self.shard.count(),
            start_unix_ns,
            origin_ns = start.origin_ns,
            "shards start"
        );
        Ok((wall, origin))
    }

    /// Tells every shard still running to stop.
    pub fn stop_all(&self, why: &str) {
        for e in self.lock().shards.values().filter(|e| e.state == "running" || e.state == "joined") {
            let event = pb::ShardEvent {
                event: Some(pb::shard_event::Event::Stop(pb::ShardStop { reason: why.to_owned() })),
            };
            let _ = e.events.try_send(event);
        }
    }

    /// Takes a shard's results (its latest replace what it sent before); its last ones
    /// end it, finished or stopped as they say.
    pub fn results(&self, index: u32, part: Part, last: bool) -> Result<(), String> {
        let mut inner = self.lock();
        let Some(e) = inner.shards.get_mut(&index) else {
            return Err(format!("shard {index} has not joined"));
        };
        if last {
            e.state =
                if part.run.state == crate::control::JobState::Stopped { "stopped" } else { "finished" };
        }
        e.results = Some(Arc::new(part));
        drop(inner);
        if last {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Each shard's latest results, and whether the shard was lost.
    pub fn parts(&self) -> Vec<(String, Arc<Part>, bool)> {
        let count = self.shard.count();
        self.lock()
            .shards
            .iter()
            .filter_map(|(i, e)| {
                e.results.as_ref().map(|p| (format!("shard {i}/{count}"), Arc::clone(p), e.state == "lost"))
            })
            .collect()
    }

    /// A shard's stream closed: lost, unless it sent its last results (or was refused).
    pub fn gone(&self, index: u32) {
        if let Some(e) = self.lock().shards.get_mut(&index)
            && matches!(e.state, "joined" | "running")
        {
            e.state = "lost";
            e.why = Some("its stream closed before it said its job ended".into());
            tracing::warn!(shard = index, "shard lost");
        }
        self.changed.notify_waiters();
    }

    /// Waits until no shard runs any more (or `stop`, then for at most `grace` more).
    pub async fn wait_ended(&self, stop: &CancellationToken, grace: Duration) {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.lock().shards.values().any(|e| matches!(e.state, "joined" | "running")) {
                return;
            }
            if stop.is_cancelled() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            let wait = deadline.map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(tokio::time::Instant::now())
            });
            if wait.is_zero() {
                return;
            }
            let _ = tokio::time::timeout(wait.min(Duration::from_millis(200)), changed).await;
        }
    }

    /// Every shard but the coordinator, for the report.
    pub fn statuses(&self) -> Vec<ShardStatus> {
        let count = self.shard.count();
        self.lock()
            .shards
            .iter()
            .map(|(i, e)| ShardStatus {
                shard: format!("{i}/{count}"),
                state: e.state,
                clock_offset_ms: e.offset_us as f64 / 1000.0,
                rtt_ms: e.rtt_us as f64 / 1000.0,
                why: e.why.clone(),
            })
            .collect()
    }

    /// The shards lost, named.
    pub fn lost(&self) -> Vec<String> {
        self.statuses().into_iter().filter(|s| s.state == "lost").map(|s| s.shard).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(index: u32, first_ns: Option<i64>, offset_us: i64) -> pb::ShardJoin {
        pb::ShardJoin {
            job_id: "j".into(),
            index,
            count: 3,
            version: String::new(),
            first_ns,
            clock_offset_us: offset_us,
            rtt_us: 100,
        }
    }

    fn board() -> Board {
        Board::new(Shard::new(0, 3).expect("shard"), MAX_CLOCK_OFFSET)
    }

    #[tokio::test]
    async fn the_start_waits_for_every_shard_and_its_origin_is_the_earliest_first_record() {
        let b = board();
        let stop = CancellationToken::new();
        let mut one = b.join(&join(1, Some(2_000), 40)).expect("joins");
        assert!(b.join(&join(1, Some(2_000), 40)).is_err(), "twice");
        assert!(b.join(&join(3, None, 0)).is_err(), "not of this job");
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), b.agree(Some(5_000), None, &stop)).await;
        assert!(waiting.is_err(), "shard 2 has not joined");
        let mut two = b.join(&join(2, Some(1_000), -30)).expect("joins");
        let (at, origin) = b.agree(Some(5_000), None, &stop).await.expect("agreed");
        assert_eq!(origin, Some(1_000));
        assert!(at > SystemTime::now(), "a little ahead");
        for rx in [&mut one, &mut two] {
            let Some(pb::ShardEvent { event: Some(pb::shard_event::Event::Start(s)) }) = rx.recv().await
            else {
                panic!("no start")
            };
            assert_eq!(s.origin_ns, 1_000);
        }
        assert!(b.join(&join(2, None, 0)).is_err(), "too late");
        let begin = board();
        let _one = begin.join(&join(1, Some(2_000), 0)).expect("joins");
        let _two = begin.join(&join(2, Some(1_000), 0)).expect("joins");
        let (_, origin) = begin.agree(None, Some(500), &stop).await.expect("agreed");
        assert_eq!(origin, Some(500), "[job] begin wins");
    }

    #[tokio::test]
    async fn a_clock_too_far_off_keeps_the_job_from_starting() {
        let b = board();
        let why = b.join(&join(1, Some(1), 12_300)).expect_err("refused");
        assert!(
            why.contains("shard 1/3's clock is 12.3 ms off") && why.contains("--max-clock-offset"),
            "{why}"
        );
        let _two = b.join(&join(2, Some(1), 0)).expect("joins");
        let agreed = b.agree(None, None, &CancellationToken::new()).await;
        assert_eq!(agreed.expect_err("no start"), why);
        assert_eq!(b.statuses()[0].state, "refused");
    }

    #[tokio::test]
    async fn a_shard_gone_before_its_last_results_is_lost_and_a_stop_reaches_the_others() {
        let b = board();
        let _one = b.join(&join(1, Some(1), 0)).expect("joins");
        let mut two = b.join(&join(2, Some(1), 0)).expect("joins");
        b.agree(None, None, &CancellationToken::new()).await.expect("agreed");
        b.gone(1);
        assert_eq!(b.lost(), ["1/3"]);
        b.stop_all("stopped");
        let _start = two.recv().await;
        let Some(pb::ShardEvent { event: Some(pb::shard_event::Event::Stop(s)) }) = two.recv().await else {
            panic!("no stop")
        };
        assert_eq!(s.reason, "stopped");
    }
}
