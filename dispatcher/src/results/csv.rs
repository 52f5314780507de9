//! `--report-csv PREFIX`: Locust-style CSV files. `PREFIX_stats.csv` has a row per endpoint
//! and an `Aggregated` row; `PREFIX_stats_history.csv` a row per second. Times are ms of
//! latency from the due instant, read off the merged histograms.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use reprise_proto::stats::{Dist, Stats};

use super::{Report, Snapshot};

const QUANTILES: [f64; 11] = [0.5, 0.66, 0.75, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0];

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn stats_row<H: Dist>(out: &mut String, kind: &str, name: &str, s: &Stats<H>, secs: f64) {
    let h = &s.latency;
    let (median, mean, min, max) = (h.value_at_quantile(0.5), h.mean(), h.min(), h.max());
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let _ = write!(
        out,
        "{},{},{},{},{},{:.3},{},{},{:.3},{:.3}",
        quote(kind),
        quote(name),
        s.count(),
        s.failed,
        ms(median),
        mean / 1000.0,
        ms(min),
        ms(max),
        per_s(s.count()),
        per_s(s.failed)
    );
    for q in QUANTILES {
        let _ = write!(out, ",{}", ms(h.value_at_quantile(q)));
    }
    out.push('\n');
}

/// Writes both files of `snap` (and of `report`, made of it); returns their paths.
pub fn write(snap: &Snapshot<'_>, report: &Report, prefix: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let mut stats = String::from(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,\
         Max Response Time,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n",
    );
    let secs = report.duration_s;
    for (name, st) in &snap.fleet.endpoints {
        let (kind, path) = name.split_once(' ').unwrap_or(("", name));
        stats_row(&mut stats, kind, path, st, secs);
    }
    stats_row(&mut stats, "", "Aggregated", &snap.fleet.total, secs);
    let start = snap.started_unix;
    let mut history = String::from(
        "Timestamp,Type,Name,Requests/s,Failures/s,50%,90%,99%,100%,Total Request Count,Total Failure Count\n",
    );
    let (mut total, mut failed) = (0, 0);
    for row in &report.history {
        total += row.requests;
        failed += row.failed;
        let _ = writeln!(
            history,
            "{},,Aggregated,{},{},{:.3},{:.3},{:.3},{:.3},{total},{failed}",
            (start + row.second as f64) as u64,
            row.requests,
            row.failed,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.max_ms
        );
    }
    let name = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let (stats_path, history_path) = (name("_stats.csv"), name("_stats_history.csv"));
    std::fs::write(&stats_path, stats)?;
    std::fs::write(&history_path, history)?;
    Ok((stats_path, history_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(quote("GET"), "GET");
        assert_eq!(quote("/a,b"), "\"/a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
