//! Timekeeping: a thread of its own sleeps to each record's instant and hands due records
//! to the driver in chunks.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::batch::Received;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Due, Executor};

impl Executor {
    /// The timekeeper: records in order, each released at its due instant. Runs until the
    /// batches end; once the job is stopped, what is left is counted cancelled.
    pub(super) fn keep_time(&self, mut batches: mpsc::Receiver<Vec<Received>>, out: &mpsc::Sender<Vec<Due>>) {
        let mut chunk = Vec::new();
        let mut open = true;
        // The clock is read again only for a record due after the last reading: one due
        // before it is due now (at speed "max", all of them), and reading the clock for each
        // was a tenth of a dry-run replayer's CPU.
        let mut now = Instant::now();
        while let Some(batch) = batches.blocking_recv() {
            self.received.fetch_add(batch.len() as u64, Relaxed);
            let mut records = batch.into_iter();
            while let Some(rec) = records.next() {
                let due = self.start + Duration::from_nanos(rec.due_offset_ns.max(0) as u64);
                if due > now {
                    now = Instant::now();
                }
                let waits = due > now;
                if waits && !chunk.is_empty() {
                    open = self.hand_over(&mut chunk, out) && open;
                }
                if !open || self.stopped.load(Relaxed) || (waits && !sleep_until(due, &self.stopped)) {
                    self.recorder.cancel(1 + records.len() as u64);
                    break;
                }
                if waits {
                    now = due;
                }
                chunk.push((rec, due));
            }
            if !chunk.is_empty() {
                open = self.hand_over(&mut chunk, out) && open;
            }
        }
    }

    /// Passes due records to the feeder; false (and counted cancelled) once it is gone.
    fn hand_over(&self, chunk: &mut Vec<Due>, out: &mpsc::Sender<Vec<Due>>) -> bool {
        let records = std::mem::take(chunk);
        let n = records.len() as u64;
        match out.blocking_send(records) {
            Ok(()) => true,
            Err(_) => {
                self.recorder.cancel(n);
                false
            }
        }
    }
}

/// Sleeps the thread until `due` (no timer wheel: to within the OS's wake-up latency, tens of
/// µs); false if the job was stopped first.
fn sleep_until(due: Instant, stopped: &AtomicBool) -> bool {
    const CHECK_CANCEL_EVERY: Duration = Duration::from_millis(20);
    loop {
        if stopped.load(Relaxed) {
            return false;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(CHECK_CANCEL_EVERY));
    }
}

/// The tokio instant of a wall-clock time (Unix ns).
pub(super) fn instant_of(unix_ns: i64) -> Instant {
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
