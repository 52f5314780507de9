//! Fires records at the target at their due instants.
//!
//! A timekeeping thread (`timekeeper.rs`) takes records in due order, sleeps until each one's
//! instant (absolute: job start + due offset) and hands them over in chunks. One task, the
//! driver (`driver.rs`), does all the rest: it owns every connection
//! ([`Link`](crate::http::Link)), one future each, hands each due record to an idle one,
//! polls those that are ready and records each outcome as it completes. A response wakes
//! that one task, which then takes whatever else is ready in the same poll: no task per
//! connection, no channel between a feeder and workers, no wake-up handed from one to the
//! other per request (the loop wrk has, and the issue asked for; measured in its git history).
//! The cost of that: one replayer sends from one core at a time; a machine with more cores
//! than that uses runs more replayers (`reprise run --replayers N`, or more daemons).
//!
//! Connections open while records wait for one, up to `concurrency`, so they grow with need
//! and no faster. Latency is measured from the due instant (a saturated target or replayer
//! shows in it) and from the actual send. A dry run has no connections: the driver completes
//! each record when the timekeeper hands it over (at its instant), as sent and answered at
//! once.

mod compare;
mod driver;
mod order;
mod timekeeper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use reprise_proto::batch::Received;
use reprise_proto::pb;
use reprise_proto::stats::{ErrorKind, Outcome};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::{Target, TargetError};
use crate::stats::{RawTimes, Recorder};
use timekeeper::instant_of;

/// What came of an exchange: the response's status, or the error kind.
/// How an exchange with the target ended: the answer's status, or why none came.
type Exchanged = Result<u16, ErrorKind>;

/// Chunks of due records between the timekeeping thread and the driver.
const CHUNKS_IN_FLIGHT: usize = 64;

/// A dry run takes the time once per this many records of a chunk (see [`Executor::dry_run`]).
const DRY_CLOCK_EVERY: u32 = 32;

/// A record due at an instant, on its way to a connection.
type Due = (Received, Instant);

/// How long a record of an ordered job waited for its order key's previous request
/// (`order.rs`), and whether the order timeout let it go.
#[derive(Clone, Copy, Debug)]
struct Wait {
    waited: Duration,
    timed_out: bool,
}

/// One job at one replayer.
pub struct Executor {
    cfg: pb::JobConfig,
    target: Target,
    /// Live response comparison, when the job asks for it.
    compare: Option<compare::Compare>,
    recorder: Arc<Recorder>,
    start: Instant,
    dry_run: bool,
    received: AtomicU64,
    links: AtomicUsize,
    /// Set when the job is cancelled; read per record (the token's own check takes a lock).
    stopped: Arc<AtomicBool>,
    /// Set [`driver::IN_FLIGHT_GRACE`] after a stop: requests still in flight end "cancelled".
    cut: AtomicBool,
    /// Signalled when enough completions wait to be acknowledged.
    ack_due: Notify,
}

impl Executor {
    /// Resolves when enough completions wait to be acknowledged (a permit is kept if none
    /// waits, so a signal is never missed).
    pub async fn ack_due(&self) {
        self.ack_due.notified().await;
    }

    pub fn new(cfg: pb::JobConfig, dry_run: bool) -> Result<Arc<Self>, TargetError> {
        let target = Target::new(&cfg)?;
        let compare = compare::Compare::new(&cfg)?;
        Ok(Arc::new(Self {
            recorder: Arc::default(),
            target,
            compare,
            start: instant_of(cfg.start_unix_ns),
            dry_run: dry_run || cfg.dry_run,
            received: AtomicU64::new(0),
            links: AtomicUsize::new(0),
            stopped: Arc::default(),
            cut: AtomicBool::new(false),
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

    /// Records received.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Records received and not yet done with.
    pub fn pending(&self) -> u64 {
        self.received.load(Relaxed).saturating_sub(self.recorder.completed())
    }

    /// Connections (links) opened so far.
    pub fn links(&self) -> usize {
        self.links.load(Relaxed)
    }

    /// Sends every record of every batch at its instant, until the batches end or `cancel`
    /// fires (then what is left is counted cancelled). Waits for requests in flight.
    pub async fn run(self: Arc<Self>, batches: mpsc::Receiver<Vec<Received>>, cancel: CancellationToken) {
        let stopped = Arc::clone(&self.stopped);
        let (watch, finished) = (cancel.clone(), CancellationToken::new());
        let flag_done = finished.clone();
        let flag = tokio::spawn(async move {
            tokio::select! {
                () = watch.cancelled() => stopped.store(true, Relaxed),
                () = flag_done.cancelled() => {}
            }
        });
        // Timekeeping has a thread of its own: tokio's timer rounds deadlines up to the next
        // millisecond and shares its threads with everything else; a thread sleeping to the
        // instant does neither. It hands over chunks of due records (a whole batch at speed
        // "max"), so crossing threads costs one wake per instant, not one per record.
        let (chunks_tx, mut chunks) = mpsc::channel::<Vec<Due>>(CHUNKS_IN_FLIGHT);
        let me = Arc::clone(&self);
        let timekeeper = tokio::task::spawn_blocking(move || me.keep_time(batches, &chunks_tx));
        if self.dry_run {
            self.dry_run(&mut chunks).await;
        } else {
            self.drive(&mut chunks, &cancel).await;
        }
        chunks.close();
        while let Ok(rest) = chunks.try_recv() {
            self.recorder.cancel(rest.len() as u64);
        }
        if let Err(e) = timekeeper.await {
            tracing::error!(error = %e, "the timekeeping thread failed");
        }
        finished.cancel();
        let _ = flag.await;
    }

    /// A dry run: each record completes when the timekeeper hands it over, at its instant.
    async fn dry_run(&self, chunks: &mut mpsc::Receiver<Vec<Due>>) {
        while let Some(chunk) = chunks.recv().await {
            let mut due_now = chunk.into_iter();
            let mut taken: Option<Instant> = None;
            let mut n = 0u32;
            while let Some(due) = due_now.next() {
                if self.stopped.load(Relaxed) {
                    self.recorder.cancel(1 + due_now.len() as u64);
                    return;
                }
                // Every record of a chunk is due already; the clock read once per
                // DRY_CLOCK_EVERY of them is late by at most their bookkeeping (µs).
                let at = match taken {
                    Some(t) if !n.is_multiple_of(DRY_CLOCK_EVERY) => t,
                    _ => *taken.insert(Instant::now()),
                };
                n += 1;
                self.complete(&due.0, due.1, at, Ok(None), None);
            }
        }
    }

    /// Records how a record went: sent at `sent` (for a dry run: taken at `sent`, and done).
    /// A record that waited for its order key counts from the instant it was let go: its due
    /// instant plus the wait, which is recorded apart ([`Recorder::record_wait`]).
    fn complete(
        &self,
        rec: &Received,
        due: Instant,
        sent: Instant,
        answer: Result<Option<u16>, ErrorKind>,
        wait: Option<Wait>,
    ) {
        let planned = due;
        let due = due + wait.map_or(Duration::ZERO, |w| w.waited);
        let end = if self.dry_run { sent } else { Instant::now() };
        let us = |d: Duration| d.as_micros() as u64;
        let outcome = Outcome {
            answer,
            latency_us: us(end.saturating_duration_since(due)),
            service_us: us(end - sent),
            lag_us: us(sent.saturating_duration_since(due)),
        };
        let raw = self.cfg.raw_results.then(|| {
            let due_unix_us = (self.cfg.start_unix_ns + rec.due_offset_ns) / 1000;
            let sent_us = us(sent.saturating_duration_since(planned)) as i64;
            RawTimes { due_unix_us, sent_unix_us: due_unix_us + sent_us }
        });
        if let Some(w) = wait {
            self.recorder.record_wait(us(w.waited), w.timed_out);
        }
        let unreported = self.recorder.record(rec.endpoint, &outcome, raw);
        if unreported >= u64::from(self.cfg.credit_window / 4).max(1) {
            self.ack_due.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use reprise_proto::batch::{RecordRef, split};
    use std::time::{SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An executor for a job against `addr` that starts now, with `concurrency` connections.
    fn starting_now(addr: std::net::SocketAddr, concurrency: u32) -> Arc<Executor> {
        starting_now_with(addr, concurrency, pb::JobConfig::default())
    }

    /// [`starting_now`] with the other settings of `base` (ordering, …).
    fn starting_now_with(addr: std::net::SocketAddr, concurrency: u32, base: pb::JobConfig) -> Arc<Executor> {
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        let cfg = pb::JobConfig {
            target: format!("http://{addr}"),
            concurrency,
            // Longer than the tests' hang guards: a request timer that fires would wake a
            // stalled driver and hide the stall.
            timeout_ms: 600_000,
            start_unix_ns: now_ns,
            ..base
        };
        Executor::new(cfg, false).expect("a plain target")
    }

    /// A job stopped while records wait for their order key: those are counted cancelled, the
    /// one in flight is cut, every record is done with, and the target saw only the first
    /// (the others never left their key's queue).
    #[tokio::test]
    async fn a_stop_counts_records_waiting_for_their_order_key() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let arrived = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&arrived);
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let counted = Arc::clone(&counted);
                // Reads requests and never answers.
                held.push(tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        counted.fetch_add(buf[..n].windows(4).filter(|w| w == b"\r\n\r\n").count(), Relaxed);
                    }
                }));
            }
        });
        let ordered = pb::JobConfig { ordered: true, order_timeout_ms: 600_000, ..Default::default() };
        let exec = starting_now_with(addr, 4, ordered);
        let mut records = crate::gets((0..5).map(|_| ("/s", 1)));
        for r in &mut records {
            r.order_key = 7;
        }
        let (tx, rx) = mpsc::channel(1);
        tx.send(records).await.expect("room");
        drop(tx);
        let cancel = CancellationToken::new();
        let run = tokio::spawn(Arc::clone(&exec).run(rx, cancel.clone()));
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            while arrived.load(Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(first.is_ok(), "the first request arrives");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(arrived.load(Relaxed), 1, "the others wait for its answer");
        cancel.cancel();
        let finished = tokio::time::timeout(Duration::from_secs(30), run).await;
        server.abort();
        assert!(finished.is_ok(), "the executor ends after a stop");
        let (completed, cancelled) = exec.recorder().counts();
        assert_eq!((completed, cancelled), (5, 4));
        assert_eq!(exec.pending(), 0);
        let d = exec.recorder().take();
        assert_eq!(
            d.total.counts.expect("counts").errors.get("cancelled"),
            Some(&1),
            "the one in flight is cut"
        );
        assert!(d.order_wait.is_none(), "none was let go: no wait to report");
    }

    /// Thousands of records due at once, on a runtime of several threads, through few
    /// connections: the queue of waiting records fills and drains again and again, and every
    /// record is sent and answered. (The driver takes chunks only while few records wait;
    /// once connections have made room it must look again, though no waker tells it so. A
    /// driver that missed that would sleep for good: the timeout turns such a hang into a
    /// failure. An earlier design's feeder did exactly that, racing its workers.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_queue_that_fills_and_drains_again_and_again_loses_no_record() {
        const RECORDS: usize = 20_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&answered);
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let (mut buf, mut pending) = ([0u8; 8192], Vec::new());
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        let mut heads = 0;
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            heads += 1;
                        }
                        counted.fetch_add(heads, Relaxed);
                        let reply = b"HTTP/1.1 204 No Content\r\n\r\n".repeat(heads);
                        if sock.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });

        let exec = starting_now(addr, 6);
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(Arc::clone(&exec).run(rx, CancellationToken::new()));
        for batch in 0..RECORDS / 500 {
            let paths: Vec<String> = (0..500).map(|i| format!("/q/{}", batch * 500 + i)).collect();
            let records = crate::gets(paths.iter().enumerate().map(|(i, p)| (p.as_str(), (i % 7) as u32)));
            tx.send(records).await.expect("room");
        }
        drop(tx);
        let finished = tokio::time::timeout(Duration::from_secs(60), run).await;
        server.abort();
        assert!(finished.is_ok(), "the executor never finished: a wake-up was lost");
        let d = exec.recorder().take();
        assert_eq!(d.completed_total, RECORDS as u64);
        assert_eq!(d.total.counts.expect("counts").ok, RECORDS as u64);
        assert_eq!(answered.load(Relaxed), RECORDS);
    }

    /// A record whose head reads but whose body does not decode (a field of the wrong wire
    /// type: only another build could send it) is one error of kind `other`; the record
    /// beside it is sent and answered as usual.
    #[tokio::test]
    async fn a_record_that_does_not_decode_is_an_error_and_the_rest_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.expect("read");
                assert!(n > 0, "the request ends with a blank line");
                got.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.expect("write");
            got
        });

        let mut encoded = BytesMut::new();
        let headers: [(&[u8], &[u8]); 1] = [(b"X-Id", b"good")];
        let good = RecordRef {
            due_offset_ns: 0,
            endpoint: 1,
            method: b"GET",
            path: b"/good",
            headers: &headers,
            body: b"",
            host: b"",
            order_key: 0,
            expected: &[],
        };
        good.write_to(&mut encoded);
        // Head (due 0, endpoint 2), then field 2 (method) as a varint instead of bytes.
        encoded.extend_from_slice(&[6, 0x08, 0x00, 0x38, 0x02, 0x10, 0x05]);
        let batch = pb::RecordBatch { encoded: encoded.freeze(), count: 2 };
        let records = split(batch).expect("the framing holds");
        assert_eq!(records.iter().map(|r| r.endpoint).collect::<Vec<_>>(), [1, 2]);

        let exec = starting_now(addr, 1);
        let (tx, rx) = mpsc::channel(1);
        tx.send(records).await.expect("room");
        drop(tx);
        Arc::clone(&exec).run(rx, CancellationToken::new()).await;

        let request = served.await.expect("served");
        assert!(request.starts_with(b"GET /good HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&request));
        let d = exec.recorder().take();
        assert_eq!(d.completed_total, 2);
        let counts = d.total.counts.expect("counts");
        assert_eq!((counts.ok, counts.failed), (1, 1));
        assert_eq!(counts.errors.get("other"), Some(&1));
    }
}
