//! GET /metrics: the job's merged results in Prometheus' text exposition format, rendered
//! from one [`Snapshot`] per scrape (the same merged histograms and counters as the
//! report, all read at one instant).
//!
//! - `reprise_latency_seconds` and `reprise_service_seconds`: histograms per endpoint
//!   (from the due instant / from the send), cumulative buckets read off the HdrHistograms;
//! - counters: requests by outcome, responses by status class, errors by kind (per
//!   endpoint), and the accounting (input, scheduled, sent, dropped by reason, malformed,
//!   filtered by rule, substituted and unmapped by rule, rewritten and failed by rule);
//! - gauges: replayers connected, records in flight (credits used), schedule error quantiles,
//!   job state, elapsed time and progress (recorded time replayed so far);
//! - per replayer (`reprise_fleet_*`): the count by state, and for each connected one its
//!   schedule error, records in flight and requests sent, as the dispatcher sees them;
//! - `[compare]`: requests compared by endpoint and outcome over the job, and over the last
//!   window closed with its diff rates (`reprise_compare_window_*`);
//! - the gate as an alert: each threshold's verdict on the results so far
//!   (`reprise_threshold_passing`) and what it measures.
//!
//! Label cardinality is bounded by `[stats] max_endpoints`, the replayers connected now and
//! the fixed sets of classes, kinds, reasons and states. Reasons and states are written with
//! zeros, so a dashboard's "by reason" panels have their series before the first drop.
//! `deploy/grafana/reprise.json` is the dashboard over these (tests/dashboard.rs runs each of
//! its queries against a real Prometheus).

use std::fmt::Write as _;

use reprise_proto::stats::Dist;

use reprise_proto::stats::OrderWait;

use super::Snapshot;
use crate::accounting::{Counts, DropReason};
use crate::control::JobState;
use crate::fetchers::progress::SourceStatus;
use crate::fleet::{MemberStatus, STATES};
use crate::thresholds::Verdict;

/// Bucket bounds, seconds.
const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A label value, escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &impl Dist) {
    for le in BUCKETS {
        let below = h.count_at_or_below((le * 1e6) as u64);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {below}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text for one scrape.
pub fn render(snap: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(16 << 10);
    let j = format!("job_id=\"{}\"", esc(&snap.job));
    {
        let s = &snap.fleet;
        header(
            &mut out,
            "reprise_latency_seconds",
            "histogram",
            "From the due instant to the end of the response.",
        );
        for (name, st) in &s.endpoints {
            histogram(
                &mut out,
                "reprise_latency_seconds",
                &format!("{j},endpoint=\"{}\"", esc(name)),
                &st.latency,
            );
        }
        header(
            &mut out,
            "reprise_service_seconds",
            "histogram",
            "From the actual send to the end of the response.",
        );
        for (name, st) in &s.endpoints {
            histogram(
                &mut out,
                "reprise_service_seconds",
                &format!("{j},endpoint=\"{}\"", esc(name)),
                &st.service,
            );
        }
        header(
            &mut out,
            "reprise_requests_total",
            "counter",
            "Requests sent, by outcome (failed: no response or status >= 400).",
        );
        for (name, st) in &s.endpoints {
            let e = esc(name);
            let _ = writeln!(out, "reprise_requests_total{{{j},endpoint=\"{e}\",outcome=\"ok\"}} {}", st.ok);
            let _ = writeln!(
                out,
                "reprise_requests_total{{{j},endpoint=\"{e}\",outcome=\"failed\"}} {}",
                st.failed
            );
        }
        header(&mut out, "reprise_responses_total", "counter", "Responses by status class.");
        for (name, st) in &s.endpoints {
            for (class, n) in st.status_classes() {
                let _ = writeln!(
                    out,
                    "reprise_responses_total{{{j},endpoint=\"{}\",class=\"{class}\"}} {n}",
                    esc(name)
                );
            }
        }
        header(&mut out, "reprise_errors_total", "counter", "Requests without a response, by kind.");
        for (name, st) in &s.endpoints {
            for (kind, n) in &st.errors {
                let _ = writeln!(
                    out,
                    "reprise_errors_total{{{j},endpoint=\"{}\",kind=\"{}\"}} {n}",
                    esc(name),
                    esc(kind)
                );
            }
        }
    }
    accounting(&mut out, &snap.fleet.counts, &j);
    refusals(&mut out, snap, &j);
    gauges(&mut out, snap, &j);
    out
}

fn accounting(out: &mut String, c: &Counts, j: &str) {
    for (name, help, v) in [
        ("reprise_input_records_total", "Records taken from the recording.", c.input),
        ("reprise_scheduled_total", "Copies scheduled (rate applied).", c.scheduled),
        ("reprise_dispatched_total", "Copies handed to replayers.", c.dispatched),
        ("reprise_out_of_range_total", "Records outside [begin, end].", c.out_of_range),
        ("reprise_late_total", "Records later than the reorder window.", c.late),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name}{{{j}}} {v}");
    }
    header(out, "reprise_dropped_total", "counter", "Scheduled copies not sent, by reason.");
    // Every reason, zeros included: a dashboard's rate by reason has its series from the start.
    for reason in DropReason::ALL {
        let n = c.dropped.get(&reason).copied().unwrap_or(0);
        let _ = writeln!(out, "reprise_dropped_total{{{j},reason=\"{}\"}} {n}", reason.as_str());
    }
    header(out, "reprise_filtered_total", "counter", "Records a [[filter]] rule left out, by rule.");
    for (rule, n) in &c.filtered {
        let _ = writeln!(out, "reprise_filtered_total{{{j},rule=\"{}\"}} {n}", esc(rule));
    }
    let subs = &c.substitutes;
    let rws = &c.rewrites;
    let by_rule: [(&str, &str, RuleValues<'_>); 4] = [
        (
            "reprise_substituted_total",
            "Values a [[substitute]] rule replaced from its table, by rule.",
            subs.iter().map(|(rule, n)| (rule, n.replaced)).collect(),
        ),
        (
            "reprise_unmapped_total",
            "Values a [[substitute]] rule's table lacked, by rule.",
            subs.iter().map(|(rule, n)| (rule, n.unmapped)).collect(),
        ),
        (
            "reprise_rewritten_total",
            "Records a [[rewrite]] rule changed, by rule.",
            rws.iter().map(|(rule, n)| (rule, n.applied)).collect(),
        ),
        (
            "reprise_rewrite_failed_total",
            "Records a [[rewrite]] rule could not be applied to, by rule.",
            rws.iter().map(|(rule, n)| (rule, n.failed)).collect(),
        ),
    ];
    for (name, help, values) in by_rule {
        header(out, name, "counter", help);
        for (rule, n) in values {
            let _ = writeln!(out, "{name}{{{j},rule=\"{}\"}} {n}", esc(rule));
        }
    }
    header(out, "reprise_malformed_total", "counter", "Units of the recording not understood, by reason.");
    for (reason, n) in &c.malformed {
        let _ = writeln!(out, "reprise_malformed_total{{{j},reason=\"{}\"}} {n}", reason.as_str());
    }
}

/// A counter's value for each shaping rule, by the rule's name.
type RuleValues<'a> = Vec<(&'a String, u64)>;

fn refusals(out: &mut String, snap: &Snapshot<'_>, j: &str) {
    header(
        out,
        "reprise_refused_total",
        "counter",
        "Callers refused: missing or wrong token, failed TLS handshake.",
    );
    for (reason, n) in &snap.refused {
        let _ = writeln!(out, "reprise_refused_total{{{j},reason=\"{reason}\"}} {n}");
    }
    header(out, "reprise_live_pages", "gauge", "Live pages following the job (GET /events).");
    let _ = writeln!(out, "reprise_live_pages{{{j}}} {}", snap.pages.open);
    header(
        out,
        "reprise_live_pages_dropped_total",
        "counter",
        "Live pages dropped because they stopped reading their events.",
    );
    let _ = writeln!(out, "reprise_live_pages_dropped_total{{{j}}} {}", snap.pages.dropped);
}

fn gauges(out: &mut String, snap: &Snapshot<'_>, j: &str) {
    let members = &snap.fleet.members;
    let connected = members.iter().filter(|m| m.connected()).count();
    header(out, "reprise_replayers_connected", "gauge", "Replayers subscribed now.");
    let _ = writeln!(out, "reprise_replayers_connected{{{j}}} {connected}");
    replayers(out, j, members);
    header(
        out,
        "reprise_in_flight_records",
        "gauge",
        "Records dispatched and not yet acknowledged (credits in use).",
    );
    let _ = writeln!(out, "reprise_in_flight_records{{{j}}} {}", snap.fleet.in_flight);
    let lag = &snap.fleet.total.lag;
    header(
        out,
        "reprise_schedule_lag_seconds",
        "gauge",
        "Schedule error (due instant to send) over the job.",
    );
    for q in [0.5, 0.99] {
        let v = lag.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(out, "reprise_schedule_lag_seconds{{{j},quantile=\"{q}\"}} {v}");
    }
    if snap.config.proxy.ordered {
        order_wait(out, &snap.fleet.order_wait, j);
    }
    if snap.config.compare.is_some() {
        compare(out, snap, j);
        compare_window(out, snap, j);
    }
    if !snap.gate.thresholds.is_empty() {
        thresholds(out, snap, j);
    }
    header(out, "reprise_job_running", "gauge", "1 while the job runs (or is paused), else 0.");
    let running = matches!(snap.state, JobState::Running | JobState::Paused | JobState::Draining);
    let _ = writeln!(out, "reprise_job_running{{{j}}} {}", u8::from(running));
    header(out, "reprise_job_elapsed_seconds", "gauge", "Seconds since the job started.");
    let _ = writeln!(out, "reprise_job_elapsed_seconds{{{j}}} {}", snap.elapsed.as_secs_f64());
    header(out, "reprise_job_recorded_seconds", "gauge", "Recorded time replayed so far (job progress).");
    let _ = writeln!(out, "reprise_job_recorded_seconds{{{j}}} {}", snap.progress.as_secs_f64());
    source(out, j, &snap.source);
}

/// Response comparison (`[compare]`), per endpoint: requests compared by outcome, and not
/// compared. The outcome is decided with the noise known so far, so a request counted as
/// differing can turn out the same once a field is found noisy: those are gauges. Endpoints
/// are capped by `[stats] max_endpoints`, so the label set is bounded.
fn compare(out: &mut String, snap: &Snapshot<'_>, j: &str) {
    let rows: Vec<(String, u64, u64, u64)> = snap
        .fleet
        .compare
        .iter()
        .map(|(name, c)| {
            let sum = c.summary();
            (name.to_string(), sum.compared, sum.differing, sum.uncompared)
        })
        .collect();
    header(
        out,
        "reprise_compare_requests",
        "gauge",
        "Requests whose answers were compared to the primary's ([compare]), by endpoint and outcome (same, differing; noise decided on what has come so far).",
    );
    for (name, compared, differing, _) in &rows {
        let e = esc(name);
        let _ = writeln!(
            out,
            "reprise_compare_requests{{{j},endpoint=\"{e}\",outcome=\"same\"}} {}",
            compared.saturating_sub(*differing)
        );
        let _ = writeln!(
            out,
            "reprise_compare_requests{{{j},endpoint=\"{e}\",outcome=\"differing\"}} {differing}"
        );
    }
    header(
        out,
        "reprise_compare_uncompared_total",
        "counter",
        "Requests not compared because the candidate, the primary or the secondary did not answer, by endpoint.",
    );
    for (name, _, _, uncompared) in &rows {
        let _ =
            writeln!(out, "reprise_compare_uncompared_total{{{j},endpoint=\"{}\"}} {uncompared}", esc(name));
    }
}

/// The last window closed (`[compare] window`): its requests compared by endpoint and
/// outcome, and its diff rates (`endpoint="*"` for all traffic), judged with the job's noise.
/// An endpoint not compared in it has no series: what the candidate answers now, where the
/// job's gauges above hold everything since the start.
fn compare_window(out: &mut String, snap: &Snapshot<'_>, j: &str) {
    header(
        out,
        "reprise_compare_window_seconds",
        "gauge",
        "The length of a comparison window ([compare] window).",
    );
    let _ = writeln!(out, "reprise_compare_window_seconds{{{j}}} {}", snap.fleet.window_length.as_secs());
    header(
        out,
        "reprise_compare_window_requests",
        "gauge",
        "Requests compared in the last window closed, by endpoint and outcome (same, differing).",
    );
    let Some(w) = &snap.fleet.window else { return };
    for (name, c) in &w.endpoints {
        let e = esc(name);
        let same = c.compared - c.differing;
        let _ =
            writeln!(out, "reprise_compare_window_requests{{{j},endpoint=\"{e}\",outcome=\"same\"}} {same}");
        let _ = writeln!(
            out,
            "reprise_compare_window_requests{{{j},endpoint=\"{e}\",outcome=\"differing\"}} {}",
            c.differing
        );
    }
    header(
        out,
        "reprise_compare_window_diff_rate",
        "gauge",
        "The share of the last window's compared requests that differed, by endpoint (\"*\": all traffic).",
    );
    let all = std::iter::once(("*", &w.total)).chain(w.endpoints.iter().map(|(n, c)| (&**n, c)));
    for (name, c) in all {
        if let Some(rate) = c.diff_rate() {
            let _ =
                writeln!(out, "reprise_compare_window_diff_rate{{{j},endpoint=\"{}\"}} {rate}", esc(name));
        }
    }
}

/// The gate as an alert: each threshold judged on the results so far (`window_diff_rate`
/// on the last window closed), 1 while it holds.
fn thresholds(out: &mut String, snap: &Snapshot<'_>, j: &str) {
    let s = &snap.fleet;
    let verdicts = snap.gate.judge(
        &s.total,
        |e| s.endpoints.get(e),
        |e, span| s.compared_in(e, span),
        snap.elapsed.as_secs_f64(),
    );
    header(
        out,
        "reprise_threshold_passing",
        "gauge",
        "1 while a threshold holds on the results so far (window_diff_rate: on the last window closed), else 0.",
    );
    let labels =
        |v: &Verdict| format!("{j},endpoint=\"{}\",expression=\"{}\"", esc(&v.endpoint), esc(&v.expression));
    for v in &verdicts {
        let _ = writeln!(out, "reprise_threshold_passing{{{}}} {}", labels(v), u8::from(v.pass));
    }
    header(
        out,
        "reprise_threshold_measured",
        "gauge",
        "What a threshold measures, in its unit (ms, %, req/s); absent while there is nothing to measure.",
    );
    for v in &verdicts {
        if let Some(m) = v.measured {
            let _ = writeln!(out, "reprise_threshold_measured{{{}}} {m}", labels(v));
        }
    }
}

/// An ordered job's waits for sessions: a summary over the job, and the timeouts.
fn order_wait(out: &mut String, w: &OrderWait, j: &str) {
    header(
        out,
        "reprise_order_wait_seconds",
        "summary",
        "How long requests waited for their session's previous response ([proxy] ordered), over the job.",
    );
    for q in [0.5, 0.9, 0.99] {
        let v = w.waited.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(out, "reprise_order_wait_seconds{{{j},quantile=\"{q}\"}} {v}");
    }
    let sum = w.waited.mean() * w.count() as f64 / 1e6;
    let _ = writeln!(out, "reprise_order_wait_seconds_sum{{{j}}} {sum}");
    let _ = writeln!(out, "reprise_order_wait_seconds_count{{{j}}} {}", w.count());
    header(
        out,
        "reprise_order_timeouts_total",
        "counter",
        "Requests let go by [proxy] order_timeout while their session's previous one was in flight.",
    );
    let _ = writeln!(out, "reprise_order_timeouts_total{{{j}}} {}", w.timed_out);
}

/// Each replayer as the dispatcher sees it: the count by state (every state, zeros
/// included), and for those still connected their schedule error over the job, the records
/// they hold unacknowledged and the requests they sent. Gone replayers have no series, so a
/// fleet that churns (an autoscaler) does not grow the label set for the dispatcher's life.
fn replayers(out: &mut String, j: &str, members: &[MemberStatus]) {
    header(out, "reprise_fleet_replayers", "gauge", "This job's replayers by state.");
    for state in STATES {
        let n = members.iter().filter(|m| m.state == state).count();
        let _ = writeln!(out, "reprise_fleet_replayers{{{j},state=\"{state}\"}} {n}");
    }
    let live: Vec<&MemberStatus> = members.iter().filter(|m| m.connected()).collect();
    header(
        out,
        "reprise_fleet_replayer_lag_seconds",
        "gauge",
        "Each replayer's schedule error (due instant to send) over the job.",
    );
    for m in &live {
        let r = esc(&m.id);
        for (q, ms) in [("0.5", m.lag_p50_ms), ("0.99", m.lag_p99_ms)] {
            let _ = writeln!(
                out,
                "reprise_fleet_replayer_lag_seconds{{{j},replayer=\"{r}\",quantile=\"{q}\"}} {}",
                ms / 1e3
            );
        }
    }
    header(
        out,
        "reprise_fleet_replayer_in_flight_records",
        "gauge",
        "Records handed to each replayer and not yet acknowledged.",
    );
    for m in &live {
        let _ = writeln!(
            out,
            "reprise_fleet_replayer_in_flight_records{{{j},replayer=\"{}\"}} {}",
            esc(&m.id),
            m.in_flight
        );
    }
    header(out, "reprise_fleet_replayer_sent_total", "counter", "Requests each replayer sent.");
    for m in &live {
        let _ =
            writeln!(out, "reprise_fleet_replayer_sent_total{{{j},replayer=\"{}\"}} {}", esc(&m.id), m.sent);
    }
}

/// The fetcher's progress: parts (files, partitions, objects), bytes, records, lag.
fn source(out: &mut String, j: &str, src: &SourceStatus) {
    header(out, "reprise_source_parts", "gauge", "Source parts (files, partitions or objects) by state.");
    for (state, n) in [("total", src.parts), ("done", src.parts_done), ("failed", src.parts_failed)] {
        let _ = writeln!(out, "reprise_source_parts{{{j},kind=\"{}\",state=\"{state}\"}} {n}", src.kind);
    }
    header(out, "reprise_source_bytes_total", "counter", "Bytes fetched from the source, as stored.");
    let _ = writeln!(out, "reprise_source_bytes_total{{{j}}} {}", src.bytes);
    header(out, "reprise_source_records_total", "counter", "Records the fetcher parsed.");
    let _ = writeln!(out, "reprise_source_records_total{{{j}}} {}", src.records);
    if let Some(lag) = src.lag_s {
        header(out, "reprise_source_lag_seconds", "gauge", "Follow mode: newest record's age.");
        let _ = writeln!(out, "reprise_source_lag_seconds{{{j}}} {lag}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc(r#"GET /a"b\c"#), r#"GET /a\"b\\c"#);
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let mut h = reprise_proto::stats::Sparse::default();
        for us in [500, 3_000, 40_000, 2_000_000] {
            h.record(us);
        }
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", &h);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.05\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }
}
