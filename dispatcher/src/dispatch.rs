//! The dispatch loop: takes ordered records, applies the wheel (copies, due instant, slot
//! release), reserves a credit at the replayer the proxy picks and sends batches. A batch
//! goes out when it is full or before the loop sleeps for the next slot, so records reach a
//! replayer [`crate::timewheel::LEAD`] ahead of their instant.

use std::collections::HashMap;
use std::time::Duration;

use reprise_proto::pb;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::accounting::DropReason;
use crate::config::LatePolicy;
use crate::fetchers::merge::Ordered;
use crate::fleet::{EventTx, Reserve};
use crate::job::Job;
use crate::record::Record;
use crate::timewheel::TimeWheel;

/// Records per batch event.
pub const BATCH_MAX: usize = 512;
/// How long to wait for a credit before looking again.
const CREDIT_WAIT: Duration = Duration::from_millis(20);

struct Pending {
    id: String,
    session: u64,
    tx: EventTx,
    records: Vec<pb::Record>,
}

/// Batches being filled, one per replayer session.
#[derive(Default)]
struct Batches(HashMap<u64, Pending>);

impl Batches {
    fn push(&mut self, id: String, session: u64, tx: EventTx, record: pb::Record) -> bool {
        let p = self.0.entry(session).or_insert_with(|| Pending { id, session, tx, records: Vec::new() });
        p.records.push(record);
        p.records.len() >= BATCH_MAX
    }

    async fn flush_one(&mut self, job: &Job, session: u64) {
        let Some(p) = self.0.remove(&session) else {
            return;
        };
        send(job, p).await;
    }

    async fn flush_all(&mut self, job: &Job) {
        for (_, p) in self.0.drain() {
            send(job, p).await;
        }
    }

    /// The job was stopped: what was reserved but not sent is given back and counted.
    fn discard(&mut self, job: &Job) {
        for (_, p) in self.0.drain() {
            let n = p.records.len() as u64;
            job.fleet().unreserve(&p.id, p.session, n);
            job.accounting().dropped(DropReason::Stopped, n);
        }
    }
}

async fn send(job: &Job, p: Pending) {
    let n = p.records.len() as u64;
    let event = pb::DispatcherEvent {
        event: Some(pb::dispatcher_event::Event::Batch(pb::RecordBatch { records: p.records })),
    };
    match p.tx.send_timeout(Ok(event), job.heartbeat_timeout()).await {
        Ok(()) => job.accounting().dispatched(n),
        // Its reserved records count as lost in flight when it is removed.
        Err(_) => job.fleet().leave(&p.id, p.session, "stream stalled or closed"),
    }
}

fn to_wire(r: &Record, offset: Duration) -> pb::Record {
    pb::Record {
        due_offset_ns: offset.as_nanos() as i64,
        method: r.method.clone(),
        path: r.path.clone(),
        headers: r.headers.iter().map(|(n, v)| pb::Header { name: n.clone(), value: v.clone() }).collect(),
        body: r.body.clone(),
        host: r.host.clone().unwrap_or_default(),
    }
}

/// Runs until the input ends or `stop` fires. Returns whether it was stopped.
pub async fn run(
    job: &Job,
    mut input: mpsc::Receiver<Ordered>,
    mut wheel: TimeWheel,
    stop: &CancellationToken,
) -> bool {
    let acc = job.accounting();
    let mut batches = Batches::default();
    let mut index = 0u64;
    let stopped = loop {
        let next = tokio::select! {
            o = input.recv() => o,
            () = stop.cancelled() => break true,
        };
        let Some(Ordered { record, late }) = next else {
            break false;
        };
        let copies = wheel.copies(index);
        index += 1;
        if copies == 0 {
            continue;
        }
        acc.scheduled(u64::from(copies));
        if late && job.late_policy() == LatePolicy::Drop {
            acc.dropped(DropReason::Late, u64::from(copies));
            continue;
        }
        let due = if late { Instant::now().max(wheel.start()) } else { wheel.due(record.ts) };
        let release = wheel.release_at(due);
        if release > Instant::now() {
            batches.flush_all(job).await;
            tokio::select! {
                () = sleep_until(release) => {}
                () = stop.cancelled() => {
                    acc.dropped(DropReason::Stopped, u64::from(copies));
                    break true;
                }
            }
        }
        let wire = to_wire(&record, due.saturating_duration_since(wheel.start()));
        for _ in 0..copies {
            place(job, &mut batches, wire.clone(), record.key.as_deref(), stop).await;
        }
    };
    if stopped {
        batches.discard(job);
    } else {
        batches.flush_all(job).await;
    }
    stopped
}

/// Reserves a credit for one copy and adds it to its replayer's batch.
async fn place(
    job: &Job,
    batches: &mut Batches,
    record: pb::Record,
    key: Option<&str>,
    stop: &CancellationToken,
) {
    loop {
        match job.fleet().reserve(key) {
            Reserve::Member { id, session, tx } => {
                if batches.push(id, session, tx, record) {
                    batches.flush_one(job, session).await;
                }
                return;
            }
            Reserve::Empty => {
                job.accounting().dropped(DropReason::NoReplayer, 1);
                return;
            }
            Reserve::Full => {
                batches.flush_all(job).await;
                if stop.is_cancelled() {
                    job.accounting().dropped(DropReason::Stopped, 1);
                    return;
                }
                let _ = timeout(CREDIT_WAIT, job.fleet().changed.notified()).await;
            }
        }
    }
}
