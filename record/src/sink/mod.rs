//! Where recorded exchanges go: a queue bounded in bytes, and a writer thread that turns
//! each exchange into a json line for its [`Destination`]: a file ([`file`]), rotated by
//! size or age and gzipped if asked, or a Kafka topic ([`kafka`]).
//!
//! The proxy never waits for the sink. An exchange that finds the queue full is dropped
//! and counted (`queue_full`); one the destination refuses (a full disk, a broker that
//! does not take it) is dropped and counted (`write_failed`), and the writer goes on with
//! the next lines, so recording resumes by itself once the destination takes them again.
//! The queue's bound is in bytes (bodies included), so a stalled destination costs the
//! proxy at most that much memory, whatever the traffic.
//!
//! The writer is a thread of its own, not a task: file writes and gzip block, and must not
//! take a worker from the connections.

mod file;
mod kafka;

pub use file::FileSink;
pub use kafka::KafkaSink;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use crate::counters::{Counters, DropReason};
use crate::exchange::Exchange;

/// Most exchanges the queue holds, whatever their size (its bound is in bytes).
const QUEUE_SLOTS: usize = 32_768;
/// What a destination holds is written out at least this often: a recording read while
/// it grows is at most this far behind.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often the writer takes what is queued.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// A failing destination is reported in the log at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where recorded exchanges are written.
#[derive(Debug)]
pub enum Sink {
    File(FileSink),
    Kafka(KafkaSink),
}

/// What the writer thread puts lines into. Each line ends up recorded or dropped and
/// counted (`write_failed`) by the destination, which knows when it is written.
trait Destination: Send {
    /// One exchange, as its json line (with its `\n`), and its key (`--kafka-key`).
    fn put(&mut self, key: Option<&[u8]>, line: &[u8], counters: &Counters);
    /// Called at least every [`FLUSH_EVERY`]: write out what is held.
    fn flush(&mut self, counters: &Counters);
    /// The queue has closed: write out what is held, and close.
    fn close(&mut self, counters: &Counters);
}
/// Hands exchanges to the writer without waiting.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: SyncSender<(Box<Exchange>, usize)>,
    bound: u64,
    counters: Arc<Counters>,
}

impl Queue {
    /// Queues `e` for writing, or drops and counts it when the queue is full.
    pub fn offer(&self, e: Exchange) {
        let size = e.held() as u64;
        let before = self.counters.queued_bytes.fetch_add(size, Relaxed);
        if before + size > self.bound {
            self.counters.queued_bytes.fetch_sub(size, Relaxed);
            self.counters.count_drop(DropReason::QueueFull, 1);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send((Box::new(e), size as usize))
        {
            self.counters.queued_bytes.fetch_sub(size, Relaxed);
            self.counters.count_drop(DropReason::QueueFull, 1);
        }
    }
}

/// The writer thread; joined once every [`Queue`] is dropped, after its last lines.
pub struct Writer(std::thread::JoinHandle<()>);

impl Writer {
    /// Waits for the writer to write what was queued and close its file.
    pub fn finish(self) {
        let _ = self.0.join();
    }
}

/// Opens the sink (an error here is the user's to fix before anything is proxied) and
/// starts its writer.
pub fn start(sink: Sink, bound: u64, counters: Arc<Counters>) -> std::io::Result<(Queue, Writer)> {
    let dest: Box<dyn Destination> = match sink {
        Sink::File(f) => Box::new(file::Output::open(f)?),
        Sink::Kafka(k) => Box::new(kafka::Producer::new(k, bound, Arc::clone(&counters))?),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_SLOTS);
    let queue = Queue { tx, bound, counters: Arc::clone(&counters) };
    let thread =
        std::thread::Builder::new().name("record-writer".into()).spawn(move || write(rx, dest, &counters))?;
    Ok((queue, Writer(thread)))
}

/// Drains the queue every [`DRAIN_EVERY`], never waiting on it: a receiver blocked in
/// `recv` is woken by every send, a futex call and a thread switch per exchange, which
/// took a tenth of the proxy's CPU (perf, bench (w)).
fn write(rx: Receiver<(Box<Exchange>, usize)>, mut dest: Box<dyn Destination>, counters: &Counters) {
    let mut line = Vec::with_capacity(4096);
    let mut flushed = Instant::now();
    loop {
        loop {
            match rx.try_recv() {
                Ok((e, size)) => {
                    counters.queued_bytes.fetch_sub(size as u64, Relaxed);
                    line.clear();
                    e.write_line(&mut line);
                    dest.put(e.key.as_deref(), &line, counters);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    dest.close(counters);
                    return;
                }
            }
        }
        if flushed.elapsed() >= FLUSH_EVERY {
            dest.flush(counters);
            flushed = Instant::now();
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Exchange, Keep};
    use std::time::SystemTime;

    fn exchange(url: &str) -> Exchange {
        let parts = http::Request::get(url).body(()).expect("a request").into_parts().0;
        Exchange::new(SystemTime::now(), &parts, Keep::default())
    }

    /// Rotation by size closes each file under its complete name; every exchange is in
    /// exactly one of them, in order.
    #[test]
    fn files_rotate_by_size_and_hold_every_exchange_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sink = Sink::File(FileSink {
            path: dir.path().join("capture.jsonl"),
            rotate_bytes: Some(1000),
            rotate_every: None,
            gzip: false,
        });
        let counters = Arc::new(Counters::default());
        let (queue, writer) = start(sink, 1 << 20, Arc::clone(&counters)).expect("the sink starts");
        for i in 0..2000 {
            queue.offer(exchange(&format!("/item/{i}")));
        }
        drop(queue);
        writer.finish();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the dir")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.len() > 1, "rotated: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("capture-") && n.ends_with(".jsonl")), "{names:?}");
        for n in &names {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.path().join(n)).expect("a file").permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{n}: production's secrets are the owner's only");
        }
        let urls: Vec<String> = names
            .iter()
            .flat_map(|n| {
                std::fs::read_to_string(dir.path().join(n))
                    .expect("a file")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l).expect("json")["url"]
                    .as_str()
                    .expect("a url")
                    .to_owned()
            })
            .collect();
        assert_eq!(urls, (0..2000).map(|i| format!("/item/{i}")).collect::<Vec<_>>());
        assert_eq!(counters.recorded.load(Relaxed), 2000);
        assert_eq!(counters.queued_bytes.load(Relaxed), 0);
    }

    /// A full disk (`/dev/full`) drops and counts every exchange; none is queued for ever.
    #[test]
    fn a_file_that_refuses_writes_drops_and_counts() {
        let sink = Sink::File(FileSink {
            path: "/dev/full".into(),
            rotate_bytes: None,
            rotate_every: None,
            gzip: false,
        });
        let counters = Arc::new(Counters::default());
        let (queue, writer) = start(sink, 1 << 20, Arc::clone(&counters)).expect("the sink starts");
        for i in 0..100 {
            queue.offer(exchange(&format!("/{i}")));
        }
        drop(queue);
        writer.finish();
        assert_eq!(counters.recorded.load(Relaxed), 0);
        assert_eq!(counters.dropped(DropReason::WriteFailed), 100);
    }

    /// Past its bound in bytes the queue drops instead of growing.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(QUEUE_SLOTS);
        let counters = Arc::new(Counters::default());
        let queue = Queue { tx, bound: 10_000, counters: Arc::clone(&counters) };
        for i in 0..1000 {
            queue.offer(exchange(&format!("/{i}")));
        }
        let queued = counters.queued_bytes.load(Relaxed);
        assert!(queued <= 10_000, "{queued}");
        assert!(counters.dropped(DropReason::QueueFull) > 900, "{}", counters.dropped(DropReason::QueueFull));
    }
}
