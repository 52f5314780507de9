//! How far a fetcher has read its source: parts (files, partitions or objects) known, done
//! and failed, bytes and records read, and in follow mode how far behind real time the
//! newest record is. Fetchers update it with relaxed atomics; /status, the report and
//! /metrics read it. A part that could not be read is named here with why, never skipped
//! silently.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Failed parts named in full; past this many only the count grows.
const NAMED_FAILURES: usize = 100;

#[derive(Debug, Default)]
pub struct SourceProgress {
    kind: Mutex<&'static str>,
    unit: Mutex<&'static str>,
    parts: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    records: AtomicU64,
    follow: AtomicBool,
    /// Newest record time seen, Unix ns (0 = none yet).
    newest_ns: AtomicI64,
    /// Recorded time through which every record taken from the source has gone out to a
    /// replayer (or been accounted for otherwise), Unix ns: a consumer group commits offsets
    /// up to here, never past what is still inside the dispatcher.
    sent_ns: AtomicI64,
    failures: Mutex<Vec<FailedPart>>,
}

/// A part of the source that could not be read (or only partly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedPart {
    pub part: String,
    pub reason: String,
}

/// A copy for reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    /// file, kafka or s3.
    #[serde(deserialize_with = "kind")]
    pub kind: crate::known::Name,
    /// What a part is: file, partition or object.
    #[serde(deserialize_with = "unit")]
    pub unit: crate::known::Name,
    pub parts: u64,
    pub parts_done: u64,
    pub parts_failed: u64,
    /// Bytes fetched from the source, as stored (compressed objects count compressed).
    pub bytes: u64,
    pub records: u64,
    /// Follow mode: seconds from the newest record's time to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_s: Option<f64>,
    pub failed: Vec<FailedPart>,
}

fn kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    crate::known::name(&["", "file", "kafka", "s3"], d)
}

fn unit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    crate::known::name(&["", "file", "partition", "object"], d)
}

impl SourceStatus {
    /// Adds another part of the job's source (a shard's, a separate run's): parts, bytes and
    /// records are sums; failed parts are all named; the lag is the largest.
    pub fn add(&mut self, other: &SourceStatus) {
        if self.kind.is_empty() {
            (self.kind, self.unit) = (other.kind, other.unit);
        }
        self.parts += other.parts;
        self.parts_done += other.parts_done;
        self.parts_failed += other.parts_failed;
        self.bytes += other.bytes;
        self.records += other.records;
        self.lag_s = match (self.lag_s, other.lag_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.failed.extend(other.failed.iter().cloned());
    }
}

impl SourceProgress {
    pub fn describe(&self, kind: &'static str, unit: &'static str, follow: bool) {
        *self.kind.lock().unwrap_or_else(|p| p.into_inner()) = kind;
        *self.unit.lock().unwrap_or_else(|p| p.into_inner()) = unit;
        self.follow.store(follow, Relaxed);
    }

    pub fn parts(&self, n: u64) {
        self.parts.fetch_add(n, Relaxed);
    }

    pub fn part_done(&self) {
        self.done.fetch_add(1, Relaxed);
    }

    /// A part given up on: counted, named (the first [`NAMED_FAILURES`]) and logged.
    pub fn part_failed(&self, part: &str, reason: &str) {
        tracing::error!(part, reason, "source part could not be read; its records are missing");
        self.failed.fetch_add(1, Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < NAMED_FAILURES {
            f.push(FailedPart { part: part.to_owned(), reason: reason.to_owned() });
        }
    }

    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    pub fn records(&self, n: u64, newest_ns: i64) {
        self.records.fetch_add(n, Relaxed);
        self.newest_ns.fetch_max(newest_ns, Relaxed);
    }

    /// The dispatch loop has sent everything recorded up to `ts` (Unix ns).
    pub fn sent(&self, ts: i64) {
        self.sent_ns.fetch_max(ts, Relaxed);
    }

    /// Recorded time up to which every record released has gone out (0 = none yet).
    pub fn sent_through(&self) -> i64 {
        self.sent_ns.load(Relaxed)
    }

    pub fn status(&self) -> SourceStatus {
        let newest = self.newest_ns.load(Relaxed);
        let lag_s = (self.follow.load(Relaxed) && newest > 0).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or_default();
            (now - newest).max(0) as f64 / 1e9
        });
        SourceStatus {
            kind: *self.kind.lock().unwrap_or_else(|p| p.into_inner()),
            unit: *self.unit.lock().unwrap_or_else(|p| p.into_inner()),
            parts: self.parts.load(Relaxed),
            parts_done: self.done.load(Relaxed),
            parts_failed: self.failed.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            records: self.records.load(Relaxed),
            lag_s,
            failed: self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// A reader that counts the bytes it reads as fetched from the source.
pub struct Counted<R> {
    inner: R,
    progress: Arc<SourceProgress>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, progress: &Arc<SourceProgress>) -> Self {
        Self { inner, progress: Arc::clone(progress) }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}
