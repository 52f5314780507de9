//! The dispatcher's jobs over its life. Started with `--config`, it has one job and
//! [`Station::one`] holds it. Started without, it is a standing dispatcher
//! ([`Station::standing`]): job files submitted with `POST /jobs` are compiled exactly as
//! `reprise validate` compiles them, queue, and run one after another ([`Station::run_queue`]);
//! each finished job's JSON and HTML reports are kept on disk, the last `keep` of them.
//!
//! Replayers stay subscribed between jobs. One that subscribes while no job runs (before the
//! first, or between two) is kept in the lobby: its stream stays open and carries nothing.
//! When a job starts, the lobby's streams end, and their replayers subscribe again at once
//! (after their shortest backoff), into the job. A replayer whose job ended subscribes again
//! the same way. The current job and the lobby are swapped under one lock, so a subscription
//! never waits in a lobby that no job will end.
//!
//! Between jobs the last one stays current: `/status`, `/metrics` and the live page show it,
//! finished, until the next starts.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Needs, Problem};
use crate::job::{Counters, Job, JobOptions};
use crate::plan::JobPlan;
use crate::results::Report;

/// Where finished jobs' reports are kept, and how many.
#[derive(Clone, Debug)]
pub struct Keep {
    pub dir: PathBuf,
    pub last: usize,
}

/// Ended jobs listed at most (their entries are small; their reports are kept for the last
/// `keep.last` only).
const LISTED: usize = 1000;

/// A job as `GET /jobs` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: String,
    /// `[job] id` of its file.
    pub name: String,
    /// queued, running, finished, stopped or failed (could not start).
    pub state: &'static str,
    pub submitted_unix: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_unix: Option<f64>,
    pub sent: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds_passed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `/jobs/ID/report.json` and `.html`, once the job has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_html: Option<String>,
}

struct Queued {
    entry: Entry,
    plan: JobPlan,
}

#[derive(Default)]
struct Book {
    queued: VecDeque<Queued>,
    running: Option<Entry>,
    /// Oldest first.
    ended: VecDeque<Entry>,
}

/// The job now, and the lobby's token: changed together.
struct Now {
    job: Option<Arc<Job>>,
    lobby: CancellationToken,
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station").field("keep", &self.keep).finish_non_exhaustive()
    }
}

pub struct Station {
    now: Mutex<Now>,
    /// None: the one job of `--config`.
    keep: Option<Keep>,
    book: Mutex<Book>,
    wake: Notify,
    next_id: AtomicU64,
    /// `--target`, for every job.
    target: Option<String>,
    counters: Counters,
    shutdown: CancellationToken,
    /// POST /shutdown on a standing dispatcher.
    exit: CancellationToken,
}

/// Why a job file was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Its problems, every one.
    Invalid(Vec<Problem>),
    /// This dispatcher runs the one job of `--config`.
    OneJob,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Station {
    /// A dispatcher with the one job of `--config`.
    pub(crate) fn one(job: Arc<Job>, counters: Counters, shutdown: &CancellationToken) -> Arc<Station> {
        Arc::new(Station {
            now: Mutex::new(Now { job: Some(job), lobby: CancellationToken::new() }),
            keep: None,
            book: Mutex::default(),
            wake: Notify::new(),
            next_id: AtomicU64::new(1),
            target: None,
            counters,
            shutdown: shutdown.clone(),
            exit: CancellationToken::new(),
        })
    }

    /// A standing dispatcher, waiting for jobs; `keep.dir` is created, and ids go on from
    /// the highest kept there.
    pub fn standing(
        keep: Keep,
        target: Option<String>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Arc<Station>> {
        std::fs::create_dir_all(&keep.dir)?;
        let highest = std::fs::read_dir(&keep.dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok(Arc::new(Station {
            now: Mutex::new(Now { job: None, lobby: CancellationToken::new() }),
            keep: Some(keep),
            book: Mutex::default(),
            wake: Notify::new(),
            next_id: AtomicU64::new(highest + 1),
            target,
            counters: Counters::default(),
            shutdown: shutdown.clone(),
            exit: CancellationToken::new(),
        }))
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn is_standing(&self) -> bool {
        self.keep.is_some()
    }

    /// The job running now, or the last one; `None` before the first.
    pub fn current(&self) -> Option<Arc<Job>> {
        self.now.lock().unwrap_or_else(|p| p.into_inner()).job.clone()
    }

    /// The job to subscribe to if one runs; otherwise (standing) the lobby's token, which
    /// is cancelled when one starts.
    pub(super) fn subscription(&self) -> Result<Arc<Job>, Option<CancellationToken>> {
        let now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        match &now.job {
            Some(job) if !job.is_over() => Ok(Arc::clone(job)),
            _ if self.is_standing() => Err(Some(now.lobby.clone())),
            _ => Err(None),
        }
    }

    /// Makes `job` current and ends the lobby: its replayers subscribe again, into it.
    fn begin(&self, job: Arc<Job>) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        now.job = Some(job);
        let old = std::mem::replace(&mut now.lobby, CancellationToken::new());
        old.cancel();
    }

    /// Compiles a submitted job file (relative paths in it are relative to `base`) and
    /// queues it.
    pub fn submit(&self, text: &str, base: &Path) -> Result<Entry, Refused> {
        if !self.is_standing() {
            return Err(Refused::OneJob);
        }
        let id = self.next_id.load(Relaxed);
        let (plan, _warnings) = crate::plan::compile_text(text, base, &format!("job-{id}"), Needs::default())
            .map_err(|e| match e {
                crate::config::ConfigError::Invalid { problems, .. } => Refused::Invalid(problems),
                crate::config::ConfigError::Read { .. } => Refused::Invalid(Vec::new()),
            })?;
        let id = self.next_id.fetch_add(1, Relaxed).to_string();
        let entry = Entry {
            id,
            name: plan.config.job.id.clone().unwrap_or_default(),
            state: "queued",
            submitted_unix: unix_now(),
            ended_unix: None,
            sent: 0,
            failed: 0,
            thresholds_passed: None,
            error: None,
            report_json: None,
            report_html: None,
        };
        self.book().queued.push_back(Queued { entry: entry.clone(), plan });
        self.wake.notify_one();
        tracing::info!(job = %entry.id, name = %entry.name, "job queued");
        Ok(entry)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queued, running and ended jobs, the newest first.
    pub fn jobs(&self) -> Vec<Entry> {
        let book = self.book();
        let mut all: Vec<Entry> = book.queued.iter().rev().map(|q| q.entry.clone()).collect();
        all.extend(book.running.iter().map(|e| {
            let mut e = e.clone();
            if let Some(job) = self.current() {
                let (sent, failed) = job.intake().with_stats(|s| (s.total.count(), s.total.failed));
                (e.sent, e.failed) = (sent, failed);
            }
            e
        }));
        all.extend(book.ended.iter().rev().cloned());
        all
    }

    /// A kept report of an ended job: `report.json` or `report.html`.
    pub fn report_file(&self, id: &str, file: &str) -> Option<PathBuf> {
        let keep = self.keep.as_ref()?;
        let kept = self.book().ended.iter().any(|e| e.id == id && e.report_json.is_some());
        kept.then(|| keep.dir.join(id).join(file))
    }

    /// POST /shutdown: stops the job running now, if any, and lets the dispatcher exit.
    pub fn request_exit(&self) {
        if let Some(job) = self.current() {
            job.request_exit();
        }
        self.exit.cancel();
    }

    /// Resolves once [`Station::request_exit`] was called.
    pub async fn exit_requested(&self) {
        self.exit.cancelled().await;
    }

    /// Runs queued jobs one after another until the shutdown.
    pub async fn run_queue(self: Arc<Self>) {
        loop {
            let next = self.book().queued.pop_front();
            let Some(Queued { mut entry, plan }) = next else {
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = self.shutdown.cancelled() => return,
                }
            };
            let mut opts = JobOptions::new(self.target.clone(), false);
            opts.counters = self.counters.clone();
            let job = match Job::new(plan, opts, &self.shutdown) {
                Ok(job) => job,
                Err(e) => {
                    entry.state = "failed";
                    entry.error = Some(e.to_string());
                    entry.ended_unix = Some(unix_now());
                    self.book().ended.push_back(entry);
                    continue;
                }
            };
            entry.state = "running";
            self.book().running = Some(entry.clone());
            tracing::info!(job = %entry.id, name = %entry.name, "job started");
            self.begin(Arc::clone(&job));
            let result = job.run().await;
            self.ended(entry, &job, result.err().map(|e| e.to_string()));
            if self.shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Writes an ended job's reports and books it, dropping the oldest kept past `keep.last`.
    fn ended(&self, mut entry: Entry, job: &Job, error: Option<String>) {
        let report = Report::of(job);
        entry.state = if report.state == crate::control::JobState::Stopped { "stopped" } else { "finished" };
        entry.ended_unix = Some(unix_now());
        (entry.sent, entry.failed) = (report.totals.sent, report.totals.failed);
        entry.thresholds_passed = Some(report.thresholds_passed);
        entry.error = error;
        if let Some(keep) = &self.keep {
            let dir = keep.dir.join(&entry.id);
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?))
                .and_then(|()| {
                    std::fs::write(dir.join("report.html"), crate::results::html::render(&report))
                });
            match written {
                Ok(()) => {
                    entry.report_json = Some(format!("/jobs/{}/report.json", entry.id));
                    entry.report_html = Some(format!("/jobs/{}/report.html", entry.id));
                }
                Err(e) => {
                    tracing::error!(job = %entry.id, dir = %dir.display(), error = %e, "cannot keep the job's reports");
                    entry
                        .error
                        .get_or_insert_with(|| format!("cannot keep the reports in {}: {e}", dir.display()));
                }
            }
        }
        tracing::info!(job = %entry.id, state = entry.state, sent = entry.sent, "job ended");
        let mut book = self.book();
        book.running = None;
        book.ended.push_back(entry);
        if let Some(keep) = &self.keep {
            // Past the last `keep.last`, a job stays listed without its reports.
            let kept = book.ended.len().saturating_sub(keep.last.max(1));
            for old in book.ended.iter_mut().take(kept).filter(|e| e.report_json.is_some()) {
                let _ = std::fs::remove_dir_all(keep.dir.join(&old.id));
                (old.report_json, old.report_html) = (None, None);
            }
        }
        while book.ended.len() > LISTED {
            book.ended.pop_front();
        }
    }
}
