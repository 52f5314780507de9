//! `reprise merge`: JSON reports of separate runs (shards run on their own, several runs of
//! one release) as one report, merged exactly and judged again (see the dispatcher's
//! `results::merge`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{EXIT_CANNOT_RUN, EXIT_CONFIG, EXIT_THRESHOLDS, run};

/// `reprise merge`'s flags.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// JSON reports (--report-json, or GET /jobs/ID/report.json of a standing dispatcher).
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Judge the merge by this threshold instead of the runs' own: `p99 < 300ms` for all
    /// traffic, `GET /users/1: p95 < 100ms` for an endpoint; repeatable.
    #[arg(long = "threshold", value_name = "[ENDPOINT:] EXPR")]
    thresholds: Vec<String>,
    /// Write the merged report as JSON to this file (it merges again later).
    #[arg(long = "report-json", value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the merged report as a self-contained HTML page to this file.
    #[arg(long = "report-html", value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Prints the merged report's table and writes its files; exits 99 when a threshold fails
/// on the merge, 2 when a report cannot be read or a threshold parsed.
pub fn merge(args: &MergeArgs) -> ExitCode {
    let mut runs = Vec::with_capacity(args.reports.len());
    for path in &args.reports {
        match reprise_dispatcher::RunFile::load(path) {
            Ok(run) => runs.push((path.clone(), run)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let report = match reprise_dispatcher::merge_reports(runs, &args.thresholds) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    print!("{}", report.table());
    if let Err(e) = run::write_report(&report, args.json.as_deref(), args.html.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_CANNOT_RUN);
    }
    if report.thresholds_passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_THRESHOLDS) }
}
