//! The CI gate: k6-style thresholds keyed by endpoint name ("*" for all traffic), evaluated
//! on the merged statistics at the end of the job (and, with `abort_on_fail`, each second
//! while it runs). A failed threshold makes `reprise run` and the dispatcher exit 99.
//!
//! An expression is `AGGREGATION OP VALUE[UNIT]`:
//! - aggregations: `min`, `max`, `avg`, `med`, `pN` or `p(N)` (any percentile, `p99.9`),
//!   over the latency from the due instant; `error_rate`; `rps`; `count`; `diff_rate` (the
//!   share of compared requests whose answer differed from the baseline, `[compare]`);
//!   `window_diff_rate` (the same over the last window closed, `[compare] window`: what a
//!   job that runs until stopped, a standing shadow, is judged on while it runs);
//! - operators: `<`, `<=`, `>`, `>=`, `==`, `!=`;
//! - values: latencies in `us`, `ms` (the default) or `s`; `error_rate` as `1%` or `0.01`;
//!   `rps` and `count` as plain numbers.

use std::fmt;

use reprise_proto::stats::{Dist, EndpointStats, Stats, TotalStats};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregation {
    Min,
    Max,
    Avg,
    /// Percentile, 0 < N ≤ 100.
    Percentile(f64),
    ErrorRate,
    Rps,
    Count,
    /// Requests whose answer differed from the baseline, of those compared (`[compare]`).
    DiffRate,
    /// The same over the last window closed (`[compare] window`).
    WindowDiffRate,
}

/// What `diff_rate` is measured over: the whole job so far, or the last window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Job,
    Window,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Gt => measured > limit,
            Op::Ge => measured >= limit,
            Op::Eq => measured == limit,
            Op::Ne => measured != limit,
        }
    }
}

/// A parsed threshold expression; `value` is in ms for latencies, a fraction for
/// `error_rate`, a plain number for `rps` and `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub aggregation: Aggregation,
    pub op: Op,
    pub value: f64,
}

impl Aggregation {
    fn parse(s: &str) -> Option<Aggregation> {
        Some(match s {
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "avg" | "mean" => Aggregation::Avg,
            "med" | "median" => Aggregation::Percentile(50.0),
            "error_rate" => Aggregation::ErrorRate,
            "diff_rate" => Aggregation::DiffRate,
            "window_diff_rate" => Aggregation::WindowDiffRate,
            "rps" => Aggregation::Rps,
            "count" => Aggregation::Count,
            p => {
                let n =
                    p.strip_prefix("p(").and_then(|r| r.strip_suffix(')')).or_else(|| p.strip_prefix('p'))?;
                let n: f64 = n.parse().ok()?;
                if !(n > 0.0 && n <= 100.0) {
                    return None;
                }
                Aggregation::Percentile(n)
            }
        })
    }

    fn is_rate(self) -> bool {
        matches!(self, Aggregation::ErrorRate | Aggregation::DiffRate | Aggregation::WindowDiffRate)
    }

    fn is_latency(self) -> bool {
        matches!(self, Aggregation::Min | Aggregation::Max | Aggregation::Avg | Aggregation::Percentile(_))
    }

    /// The unit measured values are shown in.
    pub fn unit(self) -> &'static str {
        match self {
            Aggregation::ErrorRate | Aggregation::DiffRate | Aggregation::WindowDiffRate => "%",
            Aggregation::Rps => "req/s",
            Aggregation::Count => "",
            _ => "ms",
        }
    }
}

/// Why an expression does not parse: what is wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Parses one expression; the error says what is wrong and how to write it.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    parse_text(text).map_err(ParseError)
}

fn parse_text(text: &str) -> Result<Expr, String> {
    const HOW: &str = "write e.g. \"p99 < 300ms\", \"error_rate < 1%\", \"rps > 100\"";
    let t = text.trim();
    let at =
        t.find(['<', '>', '=', '!']).ok_or_else(|| format!("no comparison (<, <=, >, >=, ==, !=); {HOW}"))?;
    let (agg, rest) = t.split_at(at);
    let (op, value) =
        [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("`{rest}` is not a comparison; {HOW}"))?;
    let agg = agg.trim();
    let aggregation = Aggregation::parse(agg).ok_or_else(|| {
        format!("`{agg}` is not an aggregation: use min, max, avg, med, pN or p(N) with 0 < N ≤ 100, error_rate, rps, count, diff_rate or window_diff_rate")
    })?;
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{value}` is not a number with a unit; {HOW}"))?;
    let unit = unit.trim();
    let scaled = match (aggregation, unit) {
        (a, "ms" | "") if a.is_latency() => number,
        (a, "s") if a.is_latency() => number * 1000.0,
        (a, "us" | "µs") if a.is_latency() => number / 1000.0,
        (a, "%") if a.is_rate() => number / 100.0,
        (a, "") if a.is_rate() && number <= 1.0 => number,
        (Aggregation::Rps | Aggregation::Count, "") => number,
        (a, u) => {
            let allowed = match a {
                a if a.is_rate() => "% (or a fraction ≤ 1 without unit)",
                Aggregation::Rps | Aggregation::Count => "no unit",
                _ => "us, ms or s",
            };
            return Err(format!("unit `{u}` does not fit `{agg}`: use {allowed}"));
        }
    };
    Ok(Expr { aggregation, op, value: scaled })
}

/// One threshold's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub endpoint: String,
    pub expression: String,
    /// The measured value in `unit`; `None` when the endpoint had no requests.
    pub measured: Option<f64>,
    pub unit: &'static str,
    pub pass: bool,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.pass { "pass" } else { "FAIL" };
        match self.measured {
            Some(m) => {
                write!(f, "{mark} {:?} {}: measured {m:.3}{}", self.endpoint, self.expression, self.unit)
            }
            None => write!(f, "{mark} {:?} {}: no requests", self.endpoint, self.expression),
        }
    }
}

impl Expr {
    /// The measured value (in the expression's unit) and whether it holds. No requests: fails.
    /// `diff_rate` is judged on `compared(span)` (requests compared, of them differing)
    /// instead.
    pub fn evaluate<H: Dist>(
        &self,
        stats: Option<&Stats<H>>,
        compared: impl Fn(Span) -> Option<(u64, u64)>,
        seconds: f64,
    ) -> (Option<f64>, bool) {
        let span = match self.aggregation {
            Aggregation::DiffRate => Some(Span::Job),
            Aggregation::WindowDiffRate => Some(Span::Window),
            _ => None,
        };
        if let Some(span) = span {
            let Some((n, differing)) = compared(span).filter(|(n, _)| *n > 0) else { return (None, false) };
            let rate = differing as f64 / n as f64;
            return (Some(rate * 100.0), self.op.holds(rate, self.value));
        }
        let Some(s) = stats.filter(|s| s.count() > 0) else { return (None, false) };
        let ms = |us: u64| us as f64 / 1000.0;
        let measured = match self.aggregation {
            Aggregation::Min => ms(s.latency.min()),
            Aggregation::Max => ms(s.latency.max()),
            Aggregation::Avg => s.latency.mean() / 1000.0,
            Aggregation::Percentile(n) => ms(s.latency.value_at_quantile(n / 100.0)),
            Aggregation::ErrorRate => s.failed as f64 / s.count() as f64,
            Aggregation::Rps => s.count() as f64 / seconds.max(f64::MIN_POSITIVE),
            Aggregation::Count => s.count() as f64,
            Aggregation::DiffRate | Aggregation::WindowDiffRate => 0.0,
        };
        let shown = if self.aggregation == Aggregation::ErrorRate { measured * 100.0 } else { measured };
        (Some(shown), self.op.holds(measured, self.value))
    }

    /// Whether this threshold means something before the job has ended (latency, error
    /// rate); `rps` and `count` only do at the end.
    pub fn checkable_midway(&self) -> bool {
        !matches!(self.aggregation, Aggregation::Rps | Aggregation::Count)
    }
}

/// One threshold of the job file, parsed while it was loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The endpoint's name, or "*" for all traffic.
    pub endpoint: String,
    /// The expression as written.
    pub text: String,
    pub expr: Expr,
}

impl Threshold {
    /// A threshold given on a command line: `EXPR` for all traffic, or `ENDPOINT: EXPR`
    /// (an expression holds no colon, so the last one ends the endpoint's name).
    pub fn from_flag(text: &str) -> Result<Threshold, ParseError> {
        let (endpoint, expression) = match text.rsplit_once(':') {
            Some((endpoint, expression)) => (endpoint.trim(), expression.trim()),
            None => ("*", text.trim()),
        };
        let expr = parse(expression)?;
        Ok(Threshold { endpoint: endpoint.to_owned(), text: expression.to_owned(), expr })
    }
}

/// The job's CI gate: its thresholds, and whether the first failure stops the job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gate {
    pub thresholds: Vec<Threshold>,
    pub abort_on_fail: bool,
}

impl Gate {
    /// Every threshold's verdict on the merged statistics: `total` is all traffic ("*"),
    /// `endpoint` finds one endpoint's, `compared` an endpoint's (or "*"'s) requests compared
    /// and differing, `seconds` is the job's duration (for `rps`).
    pub fn judge<'a>(
        &self,
        total: &TotalStats,
        endpoint: impl Fn(&str) -> Option<&'a EndpointStats>,
        compared: impl Fn(&str, Span) -> Option<(u64, u64)>,
        seconds: f64,
    ) -> Vec<Verdict> {
        self.thresholds
            .iter()
            .map(|t| {
                let (measured, pass) = if t.endpoint == "*" {
                    t.expr.evaluate(Some(total), |span| compared("*", span), seconds)
                } else {
                    t.expr.evaluate(endpoint(&t.endpoint), |span| compared(&t.endpoint, span), seconds)
                };
                Verdict {
                    endpoint: t.endpoint.clone(),
                    expression: t.text.clone(),
                    measured,
                    unit: t.expr.aggregation.unit(),
                    pass,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use reprise_proto::stats::{Outcome, Sparse};

    use super::*;

    #[test]
    fn expressions_parse_with_units() {
        let p = |t| parse(t).expect(t);
        assert_eq!(
            p("p99 < 300ms"),
            Expr { aggregation: Aggregation::Percentile(99.0), op: Op::Lt, value: 300.0 }
        );
        assert_eq!(p("p(99.9)<=1s").value, 1000.0);
        assert_eq!(p("p99.9 <= 1s").aggregation, Aggregation::Percentile(99.9));
        assert_eq!(p("avg > 250us").value, 0.25);
        assert_eq!(p("med < 20").value, 20.0);
        assert_eq!(p("error_rate < 1%").value, 0.01);
        assert_eq!(p("error_rate<0.05").value, 0.05);
        assert_eq!(p("rps >= 100").op, Op::Ge);
        assert_eq!(p("count != 0").op, Op::Ne);
        assert_eq!(p("max == 5ms").op, Op::Eq);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = |t| parse(t).expect_err(t).to_string();
        assert!(e("p99 300ms").contains("no comparison"));
        assert!(e("p101 < 1ms").contains("not an aggregation"));
        assert!(e("p0 < 1ms").contains("not an aggregation"));
        assert!(e("latency < 1ms").contains("not an aggregation"));
        assert!(e("p99 < fast").contains("not a number"));
        assert!(e("p99 < 3h").contains("unit `h`"));
        assert!(e("rps > 100ms").contains("no unit"));
        assert!(e("error_rate < 5").contains("%"));
        assert!(e("p99 =< 3ms").contains("not a comparison"));
        assert!(e("").contains("no comparison"));
    }

    fn stats<H: Dist>(latencies_ms: &[u64], failed: usize) -> Stats<H> {
        let mut s = Stats::<H>::default();
        for (i, ms) in latencies_ms.iter().enumerate() {
            let status = if i < failed { 500 } else { 200 };
            s.record(&Outcome { answer: Ok(Some(status)), latency_us: ms * 1000, service_us: 1, lag_us: 1 });
        }
        s
    }

    #[test]
    fn thresholds_are_evaluated_on_the_histograms() {
        let s: EndpointStats = stats(&[10, 20, 30, 40, 1000], 1);
        let check = |t: &str| parse(t).expect(t).evaluate(Some(&s), |_| None, 2.0);
        assert!(check("p50 < 31ms").1);
        assert!(!check("p99 < 900ms").1);
        assert_eq!(check("error_rate < 25%"), (Some(20.0), true));
        assert_eq!(check("rps > 2").0, Some(2.5));
        assert_eq!(check("count == 5"), (Some(5.0), true));
        let (max, pass) = check("max < 2s");
        assert!(pass && (max.expect("max") - 1000.0).abs() < 1.0);
        assert_eq!(
            parse("p99 < 1s").expect("ok").evaluate::<Sparse>(None, |_| None, 1.0),
            (None, false),
            "no requests fails"
        );
    }

    #[test]
    fn the_gate_judges_all_traffic_and_named_endpoints() {
        let fast: EndpointStats = stats(&[10, 10, 10], 0);
        let slow: EndpointStats = stats(&[500, 500], 1);
        let total: TotalStats = stats(&[10, 10, 10, 500, 500], 1);
        let threshold = |endpoint: &str, text: &str| Threshold {
            endpoint: endpoint.into(),
            text: text.into(),
            expr: parse(text).expect(text),
        };
        let gate = Gate {
            thresholds: vec![
                threshold("*", "count == 5"),
                threshold("GET /fast", "p99 < 50ms"),
                threshold("GET /slow", "error_rate < 10%"),
                threshold("GET /gone", "p99 < 1s"),
                threshold("*", "diff_rate < 10%"),
                threshold("*", "window_diff_rate < 10%"),
            ],
            abort_on_fail: false,
        };
        let lookup = |e: &str| match e {
            "GET /fast" => Some(&fast),
            "GET /slow" => Some(&slow),
            _ => None,
        };
        // Over the job 5 of 100 answers differed; in the last window, 5 of 10.
        let compared = |e: &str, span| match (e, span) {
            ("*", Span::Job) => Some((100, 5)),
            ("*", Span::Window) => Some((10, 5)),
            _ => None,
        };
        let verdicts = gate.judge(&total, lookup, compared, 1.0);
        let passed: Vec<bool> = verdicts.iter().map(|v| v.pass).collect();
        assert_eq!(passed, [true, true, false, false, true, false]);
        assert_eq!(verdicts[5].measured, Some(50.0), "the window's rate");
        assert_eq!(verdicts[2].measured, Some(50.0), "one of two failed: 50 %");
        assert_eq!(verdicts[3].measured, None, "an endpoint without requests fails");
        assert_eq!(verdicts[0].unit, "");
    }
}
