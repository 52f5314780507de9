//! Results of several runs as one: `reprise merge A.json B.json …` (shards run on their
//! own, or runs a team wants one report of), and the coordinator of a sharded job adding
//! its shards' results to its own ([`absorb`], on every snapshot). Counts are added and
//! histograms merged from the encoded statistics each JSON report carries (see
//! [`crate::job::parts`]), never from percentiles: the merged p99 is the p99 of all
//! requests, as if one dispatcher had run them all. Thresholds are judged on the merge.
//!
//! What is not a sum: a merge of files runs from the earliest start to the latest end
//! (shards run at the same time, so their requests per second add up); each second of the
//! history adds the runs' counts at the same wall-clock second, and its percentiles are the
//! largest of the runs' for that second (an upper bound: a second's histogram is not kept);
//! the state is the first run's that did not finish, the peak memory the largest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Report, Snapshot};
use crate::accounting::DropReason;
use crate::config::{CompareConfig, JobConfig, Speed};
use crate::control::{Control, JobState};
use crate::fleet::{FleetSnapshot, Row};
use crate::job::parts::{MergeError, Part, RunFile};
use crate::thresholds::{Gate, Threshold};

/// Adds `part` to `snap`: its statistics, books, replayers, source, sinks, refusals and
/// seconds. A part `lost` (a shard gone before its end) also counts what it had read and
/// not reported sent or dropped by its last results as dropped `shard_lost`, so the books
/// still balance.
/// `label` names the part in the reason it stopped, if it did.
pub(crate) fn absorb(snap: &mut Snapshot<'_>, part: &Part, lost: bool, label: &str) {
    let (run, stats) = (&part.run, &part.stats);
    let fleet = &mut snap.fleet;
    for (name, s) in &stats.endpoints {
        fleet.endpoints.entry(Arc::clone(name)).or_default().merge(s);
    }
    fleet.total.merge(&stats.total);
    if let Some(w) = &stats.order_wait {
        fleet.order_wait.merge(w);
    }
    if let Some((_, by_endpoint)) = &stats.compare {
        for (name, c) in by_endpoint {
            fleet.compare.entry(Arc::clone(name)).or_default().merge(c);
        }
    }
    fleet.reports += run.reports.received;
    fleet.lost_reports += run.reports.lost;
    fleet.duplicate_reports += run.reports.duplicate;
    fleet.members.extend(run.replayers.iter().cloned());
    let counts = &run.totals.counts;
    fleet.counts.add(counts);
    if lost {
        // Read and not yet handed to its wheel: as if scheduled once, and lost.
        let unscheduled = counts.input.saturating_sub(counts.in_range + counts.out_of_range);
        fleet.counts.in_range += unscheduled;
        fleet.counts.scheduled += unscheduled;
        let sent = stats.total.count();
        let gap = counts.scheduled.saturating_sub(sent + counts.dropped_total());
        *fleet.counts.dropped.entry(DropReason::ShardLost).or_default() += gap + unscheduled;
    }
    let shift = (run.started_unix_us as f64 / 1e6 - snap.started_unix).round() as i64;
    add_seconds(&mut fleet.history, &run.history, shift);
    snap.source.add(&run.source);
    for s in &run.sinks {
        match snap.sinks.iter_mut().find(|mine| mine.name == s.name) {
            Some(mine) => {
                mine.written += s.written;
                mine.dropped += s.dropped;
            }
            None => snap.sinks.push(s.clone()),
        }
    }
    for (why, n) in &run.refused {
        *snap.refused.entry(crate::refusals::Refusal::name_of(why)).or_default() += n;
    }
    snap.pages.open += run.live_pages.open;
    snap.pages.dropped += run.live_pages.dropped;
    if snap.aborted_by.is_none()
        && let Some(why) = &run.aborted_by
    {
        snap.aborted_by = Some(format!("{label}: {why}"));
    }
}

/// Seconds a coordinator holds its rows back for a live page: a shard sends its results once
/// a second, so its row for a second is in within two.
const SHARD_ROWS_DUE: u64 = 2;

/// A live page's chart rows: the job's closed seconds after `after`, the last `most` at
/// most. The coordinator of a sharded job adds its shards' seconds to its own, and sends a
/// second only once the shards' rows for it are in (each row goes to a page once).
pub fn live_rows(job: &crate::job::Job, after: Option<u64>, most: usize) -> Vec<Row> {
    let Some(board) = job.board() else {
        return job.fleet().history_since(after, most);
    };
    let mut rows = job.fleet().history_since(after, usize::MAX);
    let Some(closed) = rows.last().map(|r| r.second) else {
        return rows;
    };
    let started = job.started_unix();
    for (_, part, _) in board.parts() {
        let shift = (part.run.started_unix_us as f64 / 1e6 - started).round() as i64;
        let newer = |r: &&Row| after.is_none_or(|a| r.second as i64 + shift > a as i64);
        let theirs: Vec<Row> = part.run.history.iter().filter(newer).cloned().collect();
        add_seconds(&mut rows, &theirs, shift);
    }
    rows.retain(|r| r.second + SHARD_ROWS_DUE <= closed);
    let skip = rows.len().saturating_sub(most);
    rows.split_off(skip)
}

/// Adds `rows` (seconds of a run that started `shift` seconds after `mine`'s) to `mine`:
/// counts summed, percentiles the largest (see the module's doc).
fn add_seconds(mine: &mut Vec<Row>, rows: &[Row], shift: i64) {
    let mut by_second: BTreeMap<u64, Row> = std::mem::take(mine).into_iter().map(|r| (r.second, r)).collect();
    for row in rows {
        let Ok(second) = u64::try_from(row.second as i64 + shift) else { continue };
        let Some(m) = by_second.get_mut(&second) else {
            by_second.insert(second, Row { second, ..row.clone() });
            continue;
        };
        m.requests += row.requests;
        m.ok += row.ok;
        m.failed += row.failed;
        m.p50_ms = m.p50_ms.max(row.p50_ms);
        m.p90_ms = m.p90_ms.max(row.p90_ms);
        m.p95_ms = m.p95_ms.max(row.p95_ms);
        m.p99_ms = m.p99_ms.max(row.p99_ms);
        m.max_ms = m.max_ms.max(row.max_ms);
        m.lag_p99_ms = m.lag_p99_ms.max(row.lag_p99_ms);
    }
    *mine = by_second.into_values().collect();
}

/// The runs' reports as one, judged by the `thresholds` given (`--threshold`), or without
/// any by the thresholds the runs were judged by.
pub fn merge(runs: Vec<(PathBuf, RunFile)>, thresholds: &[String]) -> Result<Report, MergeError> {
    let gate = if thresholds.is_empty() {
        RunFile::gate(&runs)?
    } else {
        let parse = |flag: &String| {
            Threshold::from_flag(flag)
                .map_err(|e| MergeError::Flag { flag: flag.clone(), reason: e.to_string() })
        };
        Gate { thresholds: thresholds.iter().map(parse).collect::<Result<_, _>>()?, abort_on_fail: false }
    };
    let parts: Vec<(PathBuf, Part)> = runs
        .into_iter()
        .map(|(path, run)| Part::of(&path, run).map(|part| (path, part)))
        .collect::<Result<_, _>>()?;
    let start_us = parts.iter().map(|(_, p)| p.run.started_unix_us).min().unwrap_or(0);
    let end_us =
        parts.iter().map(|(_, p)| p.run.started_unix_us + (p.run.duration_s * 1e6) as u64).max().unwrap_or(0);
    let mut config = JobConfig::default();
    config.proxy.ordered = parts.iter().any(|(_, p)| p.stats.order_wait.is_some());
    config.compare = parts
        .iter()
        .find_map(|(_, p)| p.stats.compare.as_ref())
        .map(|(baseline, _)| CompareConfig { baseline: *baseline, ..CompareConfig::default() });
    let mut names: Vec<&str> = parts.iter().map(|(_, p)| p.run.job.as_str()).collect();
    names.dedup();
    let first = parts.first().map(|(_, p)| &p.run);
    let mut snap = Snapshot {
        config: &config,
        gate: &gate,
        job: names.join(" + "),
        fleet: FleetSnapshot::default(),
        state: parts
            .iter()
            .map(|(_, p)| p.run.state)
            .find(|s| *s != JobState::Finished)
            .unwrap_or(JobState::Finished),
        settings: first
            .map_or(Control { speed: Speed::Factor(1.0), rate: 1.0, paused: false }, |r| r.settings),
        started_unix: start_us as f64 / 1e6,
        elapsed: Duration::from_micros(end_us.saturating_sub(start_us)),
        progress: Duration::ZERO,
        source: Default::default(),
        sinks: Vec::new(),
        refused: BTreeMap::new(),
        aborted_by: None,
        pages: Default::default(),
        shard: crate::shard::Shard::WHOLE,
        shards: Vec::new(),
    };
    for (path, part) in &parts {
        absorb(&mut snap, part, false, &path.display().to_string());
    }
    let mut report = Report::from_snapshot(&snap);
    report.peak_rss_bytes = parts.iter().filter_map(|(_, p)| p.run.peak_rss_bytes).max();
    report.runtime_threads = None;
    report.merged_from = parts.iter().map(|(p, _)| p.display().to_string()).collect();
    Ok(report)
}
