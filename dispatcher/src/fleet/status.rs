//! What `/status` and the report show of a replayer.

use reprise_proto::stats::{Dist, TotalStats};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{MISSING_AFTER, Member};

/// Every state a replayer's row can be in, in the order of a replayer's life.
pub const STATES: [&str; 7] = ["ready", "joining", "running", "leaving", "missing", "left", "refused"];

/// What /status and the report show of a replayer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: String,
    /// "ready" (subscribed, no job running), "joining" (sent the job, has not accepted it
    /// yet), "running", "leaving" (asked to leave: it takes no more records and sends what it
    /// holds), "missing" (no report for over 1.5 s; removed at the heartbeat
    /// timeout), "left" with the reason in `left`, or "refused" (it refused the job, with why
    /// in `left`).
    #[serde(deserialize_with = "state")]
    pub state: crate::known::Name,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
    /// Its own target (`reprise replayer --target`), which it sends to instead of the job's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Records it held unaccounted when it left.
    pub lost_in_flight: u64,
    /// Times it went missing; meanwhile its records (and keys) went to the others.
    pub missing: u64,
    /// Records handed to it.
    pub received: u64,
    pub acked: u64,
    pub in_flight: u64,
    /// Credits it has left (`credit_window - in_flight`).
    pub credits: u64,
    /// Requests it sent (outcomes merged).
    pub sent: u64,
    /// Records it holds, waiting for their instant or in flight, at its last report.
    pub pending: u64,
    /// Its schedule error (due instant to send), ms.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub last_report_ms_ago: u64,
}

fn state<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    crate::known::name(&STATES, d)
}

impl MemberStatus {
    /// Still a member: not gone (left, or refused the job).
    pub fn connected(&self) -> bool {
        !matches!(self.state, "left" | "refused")
    }
}

impl Member {
    pub(super) fn status(
        &self,
        id: &str,
        now: Instant,
        running: bool,
        window: u64,
        lag: Option<&TotalStats>,
    ) -> MemberStatus {
        let silent = now - self.last_report;
        // Before the job, replayers do not report: silence is only missing once they have
        // taken a job (or went missing already).
        let state = if self.leaving {
            "leaving"
        } else if silent > MISSING_AFTER && (self.active || self.missing > 0) {
            "missing"
        } else if running && !self.active {
            "joining"
        } else if running {
            "running"
        } else {
            "ready"
        };
        let lag_ms = |q: f64| lag.map_or(0.0, |l| l.lag.value_at_quantile(q) as f64 / 1000.0);
        let in_flight = self.dispatched - self.acked;
        MemberStatus {
            id: id.to_owned(),
            state,
            left: None,
            target: self.own_target.clone(),
            lost_in_flight: 0,
            missing: self.missing,
            received: self.dispatched,
            acked: self.acked,
            in_flight,
            credits: window.saturating_sub(in_flight),
            sent: self.sent,
            pending: self.pending,
            lag_p50_ms: lag_ms(0.5),
            lag_p99_ms: lag_ms(0.99),
            last_report_ms_ago: silent.as_millis() as u64,
        }
    }
}
