//! `[[job.stages]]`: a ramp, k6-style. Each stage takes the settings it names (a pace,
//! speed or qps, and the rate) linearly from their values at its start to its targets over
//! its duration; settings it does not name hold. The driver sets the job's live settings
//! every [`STEP`], as `POST /job/config` would (for the instant the records released then
//! are due, [`LEAD`] later), and the wheel continues its schedule from
//! the last record released at each change, so a ramp has neither bursts nor gaps. After
//! the last stage its values hold until the job's end (the stages' total, or `duration`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Job;
use crate::config::{Speed, Stage};
use crate::timewheel::LEAD;

/// How often the settings follow the ramp: 20 steps a second, each within a slot of the
/// wheel (10 ms) of taking effect.
const STEP: Duration = Duration::from_millis(50);

/// The pace and rate `t` after the start, from `initial` through `stages`; with the index
/// of the stage `t` is in (the number of stages once they are over).
pub fn at(stages: &[Stage], initial: (Speed, f64), t: Duration) -> ((Speed, f64), usize) {
    let (mut pace, mut rate) = initial;
    let mut begun = Duration::ZERO;
    for (i, st) in stages.iter().enumerate() {
        let length = st.duration.map_or(Duration::ZERO, |d| d.0);
        let into = t.saturating_sub(begun);
        let f = if into >= length { 1.0 } else { into.as_secs_f64() / length.as_secs_f64() };
        let ramp = |from: f64, to: f64| from + (to - from) * f;
        pace = match (pace, st.speed, st.qps) {
            (Speed::Factor(from), Some(to), _) => Speed::Factor(ramp(from, to)),
            (Speed::Qps(from), _, Some(to)) => Speed::Qps(ramp(from, to)),
            // Validation refuses a ramp across kinds.
            (p, _, _) => p,
        };
        if let Some(to) = st.rate {
            rate = ramp(rate, to);
        }
        if into < length {
            return ((pace, rate), i);
        }
        begun += length;
    }
    ((pace, rate), stages.len())
}

/// Follows the stages from `start` until `done` is cancelled.
pub async fn drive(job: Arc<Job>, start: Instant, done: CancellationToken) {
    let stages = &job.cfg.job.stages;
    let initial = (job.cfg.job.pace(), job.cfg.job.rate);
    let mut tick = tokio::time::interval_at(start, STEP);
    let mut stage = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = done.cancelled() => return,
        }
        // Records are released LEAD before they are due, their instants fixed then: the
        // settings now are those of the time the records released now are due.
        let ((pace, rate), now_in) = at(stages, initial, start.elapsed() + LEAD);
        if stage != Some(now_in) {
            stage = Some(now_in);
            if now_in < stages.len() {
                tracing::info!(job = job.id(), stage = now_in + 1, of = stages.len(), "stage starts");
            }
        }
        job.ramp(pace, rate);
        if now_in == stages.len() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Millis;

    fn stage(ms: u64, speed: Option<f64>, qps: Option<f64>, rate: Option<f64>) -> Stage {
        Stage { duration: Some(Millis(Duration::from_millis(ms))), speed, qps, rate }
    }

    #[test]
    fn each_stage_ramps_what_it_names_from_where_it_was() {
        let stages = [
            stage(1000, None, Some(100.0), None),
            stage(2000, None, Some(400.0), Some(2.0)),
            stage(0, None, Some(50.0), None),
        ];
        let initial = (Speed::Qps(10.0), 1.0);
        let ms = Duration::from_millis;
        assert_eq!(at(&stages, initial, ms(0)), ((Speed::Qps(10.0), 1.0), 0));
        assert_eq!(at(&stages, initial, ms(500)), ((Speed::Qps(55.0), 1.0), 0));
        assert_eq!(at(&stages, initial, ms(2000)), ((Speed::Qps(250.0), 1.5), 1));
        assert_eq!(at(&stages, initial, ms(3000)), ((Speed::Qps(50.0), 2.0), 3), "a 0 s stage is a step");
        assert_eq!(at(&stages, initial, ms(9000)), ((Speed::Qps(50.0), 2.0), 3), "the last values hold");
        let speeds = [stage(1000, Some(3.0), None, None)];
        assert_eq!(at(&speeds, (Speed::Factor(1.0), 1.0), ms(250)).0, (Speed::Factor(1.5), 1.0));
    }
}
