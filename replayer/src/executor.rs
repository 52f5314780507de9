//! Fires records at the target at their due instants.
//!
//! A scheduler takes records in due order, sleeps until each one's instant (absolute: job
//! start + due offset) and hands it to a queue; connection workers take from the queue, each
//! sending on its own keep-alive connection ([`crate::http`]). Workers are added while records
//! wait for one, up to `concurrency`, so connections grow with need and no faster. Latency is
//! measured from the due instant (a saturated target or replayer shows in it) and from the
//! actual send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use reprise_proto::stats::Outcome;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{Conn, Target, TargetError};
use crate::stats::Recorder;

/// A record due at an instant, on its way to a worker.
type Due = (pb::Record, Instant);

/// One job at one replayer.
pub struct Executor {
    cfg: pb::JobConfig,
    target: Target,
    recorder: Arc<Recorder>,
    start: Instant,
    dry_run: bool,
    received: AtomicU64,
    workers: AtomicUsize,
    /// Signalled when enough completions wait to be acknowledged.
    pub ack_due: Notify,
}

impl Executor {
    pub fn new(cfg: pb::JobConfig, dry_run: bool) -> Result<Arc<Self>, TargetError> {
        let target = Target::new(&cfg)?;
        Ok(Arc::new(Self {
            recorder: Arc::new(Recorder::new(cfg.max_endpoints)),
            target,
            start: instant_of(cfg.start_unix_ns),
            dry_run: dry_run || cfg.dry_run,
            received: AtomicU64::new(0),
            workers: AtomicUsize::new(0),
            ack_due: Notify::new(),
            cfg,
        }))
    }

    pub fn config(&self) -> &pb::JobConfig {
        &self.cfg
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn recorder_handle(&self) -> Arc<Recorder> {
        Arc::clone(&self.recorder)
    }

    /// Records received and not yet done with.
    pub fn pending(&self) -> u64 {
        self.received.load(Relaxed).saturating_sub(self.recorder.completed())
    }

    /// Connections (workers) opened so far.
    pub fn workers(&self) -> usize {
        self.workers.load(Relaxed)
    }

    /// Sends every record of every batch at its instant, until the batches end or `cancel`
    /// fires (then what is left is counted cancelled). Waits for requests in flight.
    pub async fn run(
        self: Arc<Self>,
        mut batches: mpsc::Receiver<Vec<pb::Record>>,
        cancel: CancellationToken,
    ) {
        let limit = self.cfg.concurrency.max(1) as usize;
        let (tx, rx) = async_channel::bounded::<Due>(limit);
        let tracker = TaskTracker::new();
        self.spawn_worker(&tracker, &rx, &cancel);
        'batches: while let Some(batch) =
            tokio::select! { b = batches.recv() => b, () = cancel.cancelled() => None }
        {
            self.received.fetch_add(batch.len() as u64, Relaxed);
            let mut records = batch.into_iter();
            while let Some(rec) = records.next() {
                let due = self.start + Duration::from_nanos(rec.due_offset_ns.max(0) as u64);
                // A timer only for a record still ahead: at speed "max" none is.
                if due > Instant::now() {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = cancel.cancelled() => {
                            self.recorder.cancel(1 + records.len() as u64);
                            break 'batches;
                        }
                    }
                }
                if !tx.is_empty() && self.workers() < limit {
                    self.spawn_worker(&tracker, &rx, &cancel);
                }
                tokio::select! {
                    sent = tx.send((rec, due)) => if sent.is_err() { break 'batches },
                    () = cancel.cancelled() => {
                        self.recorder.cancel(1 + records.len() as u64);
                        break 'batches;
                    }
                }
            }
        }
        tx.close();
        batches.close();
        while let Ok(rest) = batches.try_recv() {
            self.received.fetch_add(rest.len() as u64, Relaxed);
            self.recorder.cancel(rest.len() as u64);
        }
        tracker.close();
        tracker.wait().await;
    }

    fn spawn_worker(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        rx: &async_channel::Receiver<Due>,
        cancel: &CancellationToken,
    ) {
        self.workers.fetch_add(1, Relaxed);
        let (me, rx, cancel) = (Arc::clone(self), rx.clone(), cancel.clone());
        tracker.spawn(async move {
            let mut conn: Option<Conn> = None;
            while let Ok((rec, due)) = rx.recv().await {
                if cancel.is_cancelled() {
                    me.recorder.cancel(1);
                } else {
                    me.fire(&mut conn, &rec, due).await;
                }
            }
        });
    }

    async fn fire(&self, conn: &mut Option<Conn>, rec: &pb::Record, due: Instant) {
        let sent = Instant::now();
        let (status, error) = if self.dry_run { (None, None) } else { self.target.exchange(conn, rec).await };
        let end = Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let outcome = Outcome {
            status,
            error,
            latency_us: us(end.saturating_duration_since(due)),
            service_us: us(end - sent),
            lag_us: us(sent.saturating_duration_since(due)),
        };
        let unreported = self.recorder.record(&rec.method, &rec.path, &outcome);
        if unreported >= u64::from(self.cfg.credit_window / 4).max(1) {
            self.ack_due.notify_one();
        }
    }
}

/// The tokio instant of a wall-clock time (Unix ns).
fn instant_of(unix_ns: i64) -> Instant {
    let now_ns =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default();
    let now = Instant::now();
    let delta = unix_ns - now_ns;
    if delta >= 0 {
        now + Duration::from_nanos(delta as u64)
    } else {
        now.checked_sub(Duration::from_nanos(delta.unsigned_abs())).unwrap_or(now)
    }
}
