//! The job's results. The [`Report`]: totals with the accounting identities, per-endpoint
//! counts and latency percentiles (read off the merged HdrHistograms, never averaged
//! percentiles), per replayer figures; serialized for --report-json and GET /status, rendered
//! as the terminal table. Its other renderings sit beside it: [`csv`] (Locust-style files),
//! [`html`] (one self-contained page) and [`metrics`] (the Prometheus page); [`diff`] puts two
//! reports side by side. All of them
//! render one [`Snapshot`], taken once ([`snapshot`]). [`compare`] and `order_wait` are the
//! report's parts for response comparison and for sessions in order.
//!
//! A new report format goes here, as a file that renders a [`Snapshot`] or a [`Report`].

pub mod compare;
pub mod csv;
pub mod diff;
pub mod html;
pub mod live;
pub mod merge;
pub mod metrics;
mod order_wait;
pub mod snapshot;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use reprise_proto::stats::{Dist, Stats};
use serde::Serialize;

use crate::accounting::Counts;
use crate::control::{Control, JobState};
use crate::endpoints::OTHER;
use crate::fetchers::progress::SourceStatus;
use crate::fleet::{MemberStatus, Row, StatsReportCounts};
use crate::job::{Job, PageCounts};
use crate::sinks::SinkCounts;
use crate::thresholds::Verdict;
pub use order_wait::OrderWaitReport;
pub use snapshot::Snapshot;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub job: String,
    /// The share of the source this dispatcher read (`--shard I/N`), when not the whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The reports a merge was made of (`reprise merge`), as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The coordinator's report of a sharded job: the other shards, their state and clock.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<crate::job::shards::ShardStatus>,
    pub state: JobState,
    /// Speed, rate and pause as they are now.
    pub settings: Control,
    /// The wall-clock instant due instants count from, Unix µs (0 before the start): at
    /// speed 1 a request recorded `t` after the first is due `t` after this. For lining
    /// the replay up with a target's own logs.
    pub started_unix_us: u64,
    pub duration_s: f64,
    pub totals: Totals,
    /// How far the source was read: parts done and failed (each failed one named), bytes.
    pub source: SourceStatus,
    /// All endpoints together.
    pub total: EndpointReport,
    pub endpoints: Vec<EndpointReport>,
    pub replayers: Vec<MemberStatus>,
    /// Statistics reports from replayers: merged, lost, repeated.
    pub reports: StatsReportCounts,
    /// The CI gate: every threshold with what was measured.
    pub thresholds: Vec<Verdict>,
    /// All traffic second by second.
    pub history: Vec<Row>,
    /// No threshold failed (true when there are none), and none stopped the job.
    pub thresholds_passed: bool,
    /// Live sinks: points written and dropped.
    pub sinks: Vec<SinkCounts>,
    /// Callers refused by reason: a missing or wrong token, a failed TLS handshake.
    pub refused: BTreeMap<&'static str, u64>,
    /// Live pages open (`GET /events`), and those dropped for not reading their events.
    pub live_pages: PageCounts,
    /// The threshold that stopped the job early (`abort_on_fail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_by: Option<String>,
    /// Peak resident memory of this process (VmHWM), when the platform tells it.
    pub peak_rss_bytes: Option<u64>,
    /// Worker threads of this process's runtime (`reprise --threads`), where the dispatch
    /// loop runs, and with `--threads` the in-process replayers too; what a figure was
    /// measured with.
    pub runtime_threads: Option<usize>,
    /// Sessions in order (`[proxy] ordered`): what requests waited for their session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_wait: Option<OrderWaitReport>,
    /// Response comparison (`[compare]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<compare::CompareReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub counts: Counts,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub dropped_total: u64,
    /// `input = in_range + out_of_range`, `scheduled = sent + dropped_total` and
    /// `sent = ok + failed` all hold.
    pub balanced: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointReport {
    pub endpoint: String,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub rps: f64,
    /// From the due instant to the end of the response (coordinated omission included).
    pub latency_ms: Percentiles,
    /// From the actual send to the end of the response.
    pub service_ms: Percentiles,
    /// From the due instant to the actual send.
    pub schedule_lag_ms: Percentiles,
    pub status: BTreeMap<u32, u64>,
    /// Responses by class: "1xx" … "5xx".
    pub status_class: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// The counts and histograms themselves, encoded (see [`encoded`]): an endpoint's as
    /// the wire's `EndpointDelta`, the total's as its `TotalDelta`. Reports read later
    /// merge exactly from these (`reprise merge`), never from the percentiles above. Only
    /// in whole reports (not a live page's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoded: Option<String>,
}

/// A wire message as a report carries it: base64 of its protobuf encoding. Statistics
/// travel the same way from replayers, so a report file merges with the same decoders
/// (and the same checks) as a report from a replayer.
pub(crate) fn encoded(msg: &impl prost::Message) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(msg.encode_to_vec())
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &impl Dist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

fn endpoint<H: Dist>(name: &str, s: &Stats<H>, secs: f64) -> EndpointReport {
    EndpointReport {
        endpoint: name.to_owned(),
        requests: s.count(),
        ok: s.ok,
        failed: s.failed,
        rps: if secs > 0.0 { s.count() as f64 / secs } else { 0.0 },
        latency_ms: Percentiles::of(&s.latency),
        service_ms: Percentiles::of(&s.service),
        schedule_lag_ms: Percentiles::of(&s.lag),
        status: s.status.iter().collect(),
        status_class: s.status_classes().into_iter().collect(),
        errors: s.errors.clone(),
        encoded: None,
    }
}

/// The line shown every second while a job runs. Read off the totals and the accounting
/// only: its cost does not grow with the number of endpoints or the job's length.
pub fn progress_line(job: &Job) -> String {
    let secs = job.elapsed().as_secs_f64();
    let counts = job.accounting().counts();
    let (sent, failed) = job.intake().with_stats(|s| (s.total.count(), s.total.failed));
    let mut line = format!(
        "[{secs:>6.1}s] sent {sent}/{} scheduled, {:.0} req/s, errors {failed}, dropped {}, in flight {}",
        counts.scheduled,
        if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        counts.dropped_total(),
        job.fleet().in_flight()
    );
    // A quiet stretch of the recording looks like a stalled job unless the line says why.
    if let Some(wait) = job.next_release_in().filter(|w| *w > QUIET_SAYS_WHY) {
        let wait = humantime::format_duration(Duration::from_secs(wait.as_secs()));
        let _ = write!(line, ", next record due in {wait} (as recorded)");
    }
    line
}

/// A wait for the next record this long is shown on the progress line.
const QUIET_SAYS_WHY: Duration = Duration::from_secs(3);

/// Endpoint rows the terminal table shows at most.
const TABLE_ROWS: usize = 20;

/// Peak resident set of this process, from /proc (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Report {
    /// The report of the job now (a snapshot taken for it).
    pub fn of(job: &Job) -> Report {
        Report::from_snapshot(&Snapshot::of(job, true))
    }

    /// The report a snapshot holds, every endpoint by name.
    pub fn from_snapshot(snap: &Snapshot<'_>) -> Report {
        let secs = snap.elapsed.as_secs_f64();
        let endpoints = snap
            .fleet
            .endpoints
            .iter()
            .map(|(name, st)| EndpointReport {
                encoded: Some(encoded(&st.to_wire(0))),
                ..endpoint(name, st, secs)
            })
            .collect();
        let mut report = Report::with_endpoints(snap, endpoints);
        report.total.encoded = Some(encoded(&snap.fleet.total.to_wire()));
        report
    }

    /// The report a snapshot holds with its `most` busiest endpoints only, the busiest first
    /// (a live page's: percentiles are read for those alone).
    pub fn of_busiest(snap: &Snapshot<'_>, most: usize) -> Report {
        let secs = snap.elapsed.as_secs_f64();
        let mut busiest: Vec<_> = snap.fleet.endpoints.iter().collect();
        busiest.sort_by(|a, b| b.1.count().cmp(&a.1.count()).then_with(|| a.0.cmp(b.0)));
        let endpoints = busiest.iter().take(most).map(|(name, st)| endpoint(name, st, secs)).collect();
        Report::with_endpoints(snap, endpoints)
    }

    fn with_endpoints(snap: &Snapshot<'_>, endpoints: Vec<EndpointReport>) -> Report {
        let secs = snap.elapsed.as_secs_f64();
        let s = &snap.fleet;
        let counts = s.counts.clone();
        let total = endpoint("*", &s.total, secs);
        let reports =
            StatsReportCounts { received: s.reports, lost: s.lost_reports, duplicate: s.duplicate_reports };
        let verdicts =
            snap.gate.judge(&s.total, |e| s.endpoints.get(e), |e, span| s.compared_in(e, span), secs);
        let order_wait = snap.config.proxy.ordered.then(|| OrderWaitReport::of(&s.order_wait));
        let compare = snap.config.compare.as_ref().map(|c| compare::CompareReport {
            windows: s.windows.clone(),
            window_s: (!s.window_length.is_zero()).then_some(s.window_length.as_secs()),
            ..compare::CompareReport::of(c.baseline, &s.compare)
        });
        let dropped_total = counts.dropped_total();
        // Every identity of the books (accounting.rs), the input's included.
        let balanced = counts.input == counts.in_range + counts.out_of_range
            && counts.scheduled == total.requests + dropped_total
            && total.requests == total.ok + total.failed;
        Report {
            job: snap.job.clone(),
            shard: (!snap.shard.is_whole()).then(|| snap.shard.to_string()),
            merged_from: Vec::new(),
            shards: snap.shards.clone(),
            state: snap.state,
            settings: snap.settings,
            started_unix_us: (snap.started_unix * 1e6) as u64,
            duration_s: secs,
            totals: Totals {
                sent: total.requests,
                ok: total.ok,
                failed: total.failed,
                dropped_total,
                balanced,
                counts,
            },
            source: snap.source.clone(),
            total,
            endpoints,
            replayers: s.members.clone(),
            reports,
            history: s.history.clone(),
            thresholds_passed: verdicts.iter().all(|v| v.pass) && snap.aborted_by.is_none(),
            aborted_by: snap.aborted_by.clone(),
            sinks: snap.sinks.clone(),
            refused: snap.refused.clone(),
            live_pages: snap.pages,
            thresholds: verdicts,
            peak_rss_bytes: peak_rss_bytes(),
            runtime_threads: tokio::runtime::Handle::try_current().ok().map(|h| h.metrics().num_workers()),
            order_wait,
            compare,
        }
    }

    /// The accounting line: both identities with their figures.
    pub fn accounting_line(&self) -> String {
        self.accounting_line_as(false)
    }

    /// The accounting line of a job that may still run (`open`): records scheduled but
    /// not answered yet are named as under way, not as a fault of the books.
    pub fn accounting_line_as(&self, open: bool) -> String {
        let t = &self.totals;
        let dropped: Vec<String> =
            t.counts.dropped.iter().map(|(k, v)| format!("{} {v}", k.as_str())).collect();
        let dropped = if dropped.is_empty() { String::new() } else { format!(" ({})", dropped.join(", ")) };
        let under_way = t.counts.scheduled.saturating_sub(t.sent + t.dropped_total);
        let verdict = match (t.balanced, open) {
            (true, _) => "[balanced]".to_owned(),
            (false, true) => format!("+ under way {under_way}"),
            (false, false) => "[UNBALANCED]".to_owned(),
        };
        format!(
            "accounting: scheduled {} = sent {} + dropped {}{dropped} {verdict}; sent {} = ok {} + failed {}; input {} = in range {} + out of range {} (late {}, malformed {}, skipped {})",
            t.counts.scheduled,
            t.sent,
            t.dropped_total,
            t.sent,
            t.ok,
            t.failed,
            t.counts.input,
            t.counts.in_range,
            t.counts.out_of_range,
            t.counts.late,
            t.counts.malformed_total(),
            t.counts.skipped.values().sum::<u64>(),
        )
    }

    /// The per-endpoint table and the accounting line.
    pub fn table(&self) -> String {
        let mut out = self.endpoint_rows();
        if let Some(other) = self.endpoints.iter().find(|e| e.endpoint == OTHER) {
            let _ = writeln!(
                out,
                "{} requests of endpoints past [stats] max_endpoints count as \"other\"; group paths with ids \
                 with [stats] endpoints rules or id_patterns, or raise max_endpoints",
                other.requests
            );
        }
        let lag = &self.total.schedule_lag_ms;
        let _ = writeln!(
            out,
            "duration {:.2}s, {:.1} req/s, schedule lag p50 {:.2} ms p99 {:.2} ms",
            self.duration_s, self.total.rps, lag.p50, lag.p99
        );
        if let Some(w) = &self.order_wait {
            let _ = writeln!(out, "{}", w.line(self.totals.sent));
        }
        if let Some(c) = &self.compare {
            out.push_str(&c.lines());
        }
        let _ = writeln!(out, "{}", self.accounting_line());
        if let Some(shard) = &self.shard {
            let _ = writeln!(
                out,
                "shard {shard}: these figures are this shard's share of the recording; `reprise merge` makes one report of every shard's JSON report"
            );
        }
        if !self.merged_from.is_empty() {
            let _ = writeln!(
                out,
                "merged from {} reports: {}",
                self.merged_from.len(),
                self.merged_from.join(", ")
            );
        }
        self.source_lines(&mut out);
        self.thresholds_table(out)
    }

    /// The busiest endpoints and the total, a row each, with a diff rate column under
    /// `[compare]`.
    fn endpoint_rows(&self) -> String {
        let mut out = String::new();
        let width = self.endpoints.iter().map(|e| e.endpoint.len()).max().unwrap_or(8).clamp(8, 60);
        // With [compare], a last column: the share of the endpoint's compared answers that
        // differed from the primary's.
        let diff = |endpoint: &str| match &self.compare {
            None => String::new(),
            Some(c) => match c.diff_rate_of(endpoint) {
                Some(rate) => format!(" {:>7.2}", rate * 100.0),
                None => format!(" {:>7}", "-"),
            },
        };
        let head = if self.compare.is_some() { format!(" {:>7}", "diff %") } else { String::new() };
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}{head}",
            "endpoint", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        // The busiest first, and at most TABLE_ROWS of them: a table of thousands of rows
        // helps nobody, and the reports keep every endpoint.
        let mut shown: Vec<&EndpointReport> = self.endpoints.iter().collect();
        shown.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.endpoint.cmp(&b.endpoint)));
        shown.truncate(TABLE_ROWS);
        for e in shown.into_iter().chain(std::iter::once(&self.total)) {
            let name = if e.endpoint == "*" { "total" } else { e.endpoint.as_str() };
            let l = &e.latency_ms;
            let _ = writeln!(
                out,
                "{name:<width$} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}{}",
                e.requests,
                e.failed,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                diff(&e.endpoint)
            );
        }
        if self.endpoints.len() > TABLE_ROWS {
            let _ = writeln!(
                out,
                "… and {} more endpoints, with fewer requests: --report-json, --report-html and --report-csv list them all",
                self.endpoints.len() - TABLE_ROWS
            );
        }
        out
    }

    /// How far the source was read, and the parts that could not be; nothing for a source
    /// that reports no progress.
    fn source_lines(&self, out: &mut String) {
        let src = &self.source;
        if src.kind.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "source {}: {} of {} {}s read, {} failed, {} bytes, {} records",
            src.kind, src.parts_done, src.parts, src.unit, src.parts_failed, src.bytes, src.records
        );
        if let Some(lag) = src.lag_s {
            let _ = write!(out, ", {lag:.1}s behind real time");
        }
        let _ = writeln!(out);
        for f in &src.failed {
            let _ = writeln!(out, "  not read: {}: {}", f.part, f.reason);
        }
    }

    fn thresholds_table(&self, mut out: String) -> String {
        if !self.thresholds.is_empty() {
            let failed = self.thresholds.iter().filter(|v| !v.pass).count();
            let _ = writeln!(out, "thresholds: {} passed, {failed} failed", self.thresholds.len() - failed);
            if let Some(why) = &self.aborted_by {
                let _ = writeln!(out, "  the job was stopped early by: {why}");
            }
            for v in &self.thresholds {
                let _ = writeln!(out, "  {v}");
            }
        }
        out
    }
}
