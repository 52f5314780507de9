//! `--report-html FILE`: one self-contained page (no script, no stylesheet or font fetched:
//! charts are inline SVG drawn here), for a person to read after a replay: requests/s and
//! errors/s over time, latency percentiles over time, the per-endpoint table, status and
//! error breakdowns, thresholds, replayers, accounting and the job's settings.

use std::fmt::Write as _;

use super::compare::CompareReport;
use super::{EndpointReport, Report};
use crate::config::Speed;
use crate::fleet::Row;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}\
.meta span{margin-right:18px}svg{background:#fafafa;border:1px solid #eee;margin:6px 0}";

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One line of a chart: its name, colour and value per second.
type Series<'a> = (&'a str, &'a str, fn(&Row) -> f64);

/// A line chart of `series` as inline SVG.
fn chart(title: &str, unit: &str, rows: &[Row], series: &[Series<'_>]) -> String {
    let (w, h, left, bottom, top) = (1000.0, 240.0, 60.0, 30.0, 28.0);
    let n = rows.len().max(2) as f64;
    let max =
        rows.iter().flat_map(|r| series.iter().map(move |(_, _, f)| f(r))).fold(0.0f64, f64::max).max(1e-9);
    let x = |i: usize| left + (w - left - 10.0) * i as f64 / (n - 1.0);
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{left}\" y=\"18\" font-size=\"14\" font-weight=\"600\">{t}</text>",
        t = esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{v:.1}{unit}</text>",
            w - 10.0,
            left - 4.0,
            y(v) + 4.0,
            y0 = y(v)
        );
    }
    let last = rows.last().map_or(0, |r| r.second);
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\" font-size=\"11\">0 s</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{last} s</text>",
        h - 8.0,
        w - 10.0,
        h - 8.0
    );
    for (k, (name, colour, f)) in series.iter().enumerate() {
        let points: Vec<String> =
            rows.iter().enumerate().map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r)))).collect();
        let lx = w - 330.0 + 110.0 * k as f64;
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{lx}\" y=\"8\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"14\" font-size=\"12\">{}</text>",
            points.join(" "),
            lx + 16.0,
            esc(name),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn endpoint_row(out: &mut String, e: &EndpointReport) {
    let l = &e.latency_ms;
    let name = if e.endpoint == "*" { "total" } else { &e.endpoint };
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
        esc(name),
        e.requests,
        e.failed,
        e.rps,
        l.p50,
        l.p90,
        l.p95,
        l.p99,
        l.p99_9,
        l.max
    );
}

fn breakdown(out: &mut String, title: &str, rows: impl Iterator<Item = (String, u64)>) {
    let rows: Vec<(String, u64)> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(out, "<h2>{title}</h2><table><tr><th>{title}</th><th>count</th></tr>");
    for (k, n) in rows {
        let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", esc(&k));
    }
    out.push_str("</table>");
}

/// The page.
/// Response comparison: a table of the endpoints compared, then a section per endpoint that
/// differed, its fields with the baseline's and the candidate's values side by side.
fn compare(out: &mut String, c: &CompareReport) {
    let _ = write!(
        out,
        "<h2>Responses compared to {}</h2><p>{} compared, {} differing ({:.2} %), {} over max_body, {} not compared</p>\
         <table><tr><th>endpoint</th><th>compared</th><th>differing</th><th>diff %</th><th>not compared</th><th>noisy fields</th></tr>",
        c.compared_to(),
        c.compared,
        c.differing,
        c.diff_rate * 100.0,
        c.over_max_body,
        c.uncompared
    );
    for e in &c.endpoints {
        let noisy: Vec<String> = e.noisy.iter().map(|f| esc(&f.field)).collect();
        let class = if e.differing > 0 { " class=\"bad\"" } else { "" };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{:.2}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.endpoint),
            e.compared,
            e.differing,
            e.diff_rate * 100.0,
            e.uncompared,
            noisy.join(", ")
        );
    }
    out.push_str("</table>");
    let shown = |v: &Option<String>| v.as_deref().map_or("<i>missing</i>".to_owned(), esc);
    for e in c.endpoints.iter().filter(|e| e.differing > 0) {
        let _ = write!(
            out,
            "<h3>{}: {} of {} differ</h3><table><tr><th>field</th><th>differing</th><th>{}</th><th>candidate</th></tr>",
            esc(&e.endpoint),
            e.differing,
            e.compared,
            if c.baseline == "recorded" { "recorded" } else { "primary" },
        );
        for f in &e.fields {
            for (i, sample) in f.samples.iter().enumerate() {
                let head = if i == 0 {
                    format!(
                        "<td rowspan=\"{}\">{}</td><td rowspan=\"{}\">{}</td>",
                        f.samples.len(),
                        esc(&f.field),
                        f.samples.len(),
                        f.differing
                    )
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    "<tr>{head}<td><code>{}</code></td><td><code>{}</code></td></tr>",
                    shown(&sample.baseline),
                    shown(&sample.candidate)
                );
            }
        }
        out.push_str("</table>");
    }
}

pub fn render(r: &Report) -> String {
    let speed = match r.settings.speed {
        Speed::Max => "max".to_owned(),
        Speed::Factor(f) => format!("{f}×"),
        Speed::Qps(q) => format!("{q} requests/s"),
    };
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>reprise — {job}</title><style>{STYLE}</style></head><body>\
         <h1>reprise report — {job}</h1><p class=\"meta\"><span>state <b>{state}</b></span><span>duration {d:.2} s</span>\
         <span>speed {speed}</span><span>rate {rate}</span><span>{sent} requests, {failed} failed</span></p>",
        job = esc(&r.job),
        state = format!("{:?}", r.state).to_lowercase(),
        d = r.duration_s,
        rate = r.settings.rate,
        sent = r.totals.sent,
        failed = r.totals.failed,
    );
    let _ = write!(out, "<p>{}</p>", esc(&r.accounting_line()));
    if let Some(w) = &r.order_wait {
        let _ = write!(out, "<p>{}</p>", esc(&w.line(r.totals.sent)));
    }
    out.push_str(&chart(
        "Requests and errors per second",
        "/s",
        &r.history,
        &[
            ("requests/s", "#0969da", |row| row.requests as f64),
            ("errors/s", "#cf222e", |row| row.failed as f64),
        ],
    ));
    out.push_str(&chart(
        "Latency from the due instant",
        " ms",
        &r.history,
        &[
            ("p50", "#1a7f37", |row| row.p50_ms),
            ("p90", "#bf8700", |row| row.p90_ms),
            ("p99", "#cf222e", |row| row.p99_ms),
        ],
    ));
    out.push_str(
        "<h2>Endpoints</h2><table><tr><th>endpoint</th><th>requests</th><th>failed</th><th>req/s</th>\
         <th>p50 ms</th><th>p90 ms</th><th>p95 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>",
    );
    for e in r.endpoints.iter().chain(std::iter::once(&r.total)) {
        endpoint_row(&mut out, e);
    }
    out.push_str("</table>");
    if let Some(c) = &r.compare {
        compare(&mut out, c);
    }
    breakdown(&mut out, "Status codes", r.total.status.iter().map(|(k, v)| (k.to_string(), *v)));
    breakdown(&mut out, "Errors", r.total.errors.iter().map(|(k, v)| (k.clone(), *v)));
    breakdown(&mut out, "Dropped", r.totals.counts.dropped.iter().map(|(k, v)| (k.as_str().to_owned(), *v)));
    if !r.thresholds.is_empty() {
        out.push_str("<h2>Thresholds</h2><table><tr><th>endpoint</th><th>expression</th><th>measured</th><th>verdict</th></tr>");
        for v in &r.thresholds {
            let measured = v.measured.map_or("no requests".to_owned(), |m| format!("{m:.3}{}", v.unit));
            let (class, verdict) = if v.pass { ("ok", "pass") } else { ("bad", "FAIL") };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{measured}</td><td class=\"{class}\">{verdict}</td></tr>",
                esc(&v.endpoint),
                esc(&v.expression)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Replayers</h2><table><tr><th>replayer</th><th>state</th><th>received</th><th>sent</th><th>lost</th><th>lag p99 ms</th></tr>");
    for m in &r.replayers {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            esc(&m.id),
            m.state,
            m.received,
            m.sent,
            m.lost_in_flight,
            m.lag_p99_ms
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<GET /a?b=\"c\"&d>"), "&lt;GET /a?b=&quot;c&quot;&amp;d&gt;");
    }

    #[test]
    fn a_chart_has_a_line_per_series_and_survives_no_data() {
        let rows: Vec<Row> = (0..3)
            .map(|s| Row {
                second: s,
                requests: s * 10,
                ok: s * 10,
                failed: 0,
                p50_ms: 1.0,
                p90_ms: 2.0,
                p95_ms: 2.5,
                p99_ms: 3.0,
                max_ms: 4.0,
                lag_p99_ms: 0.1,
            })
            .collect();
        let svg = chart(
            "t",
            "/s",
            &rows,
            &[("a", "#000", |r| r.requests as f64), ("b", "#f00", |r| r.failed as f64)],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!chart("t", "/s", &[], &[("a", "#000", |r| r.requests as f64)]).contains("NaN"));
    }
}
