//! Live changes to a running job (`POST /job/config`, `/job/pause`, `/job/resume`, and the
//! steps of `[[job.stages]]`), as the dispatch loop applies them to its wheel.

use tokio::sync::watch;
use tokio::time::Instant;

use super::DispatchContext;
use crate::control::{Control, JobState};
use crate::timewheel::TimeWheel;

/// Live changes (POST /job/config, /job/pause, /job/resume) as the loop applies them.
pub(super) struct Live {
    pub rx: watch::Receiver<Control>,
    /// What the wheel runs with.
    pub applied: Control,
    /// `changed()` returned: awaiting it marks the value seen before it is applied, so
    /// `has_changed` alone would miss it.
    pub woken: bool,
    pub paused_at: Option<Instant>,
}

impl Live {
    /// Applies a pending change: speed and rate to the wheel; a pause starts; a resume
    /// moves the schedule by the pause's length.
    pub fn apply(&mut self, ctx: &DispatchContext<'_>, wheel: &mut TimeWheel) {
        // Per record: the common case is a version check, not the channel's lock.
        if !self.woken && !self.rx.has_changed().unwrap_or(false) {
            return;
        }
        self.woken = false;
        let c = *self.rx.borrow_and_update();
        if c == self.applied {
            return;
        }
        self.applied = c;
        if c.speed != wheel.speed() {
            wheel.set_speed(c.speed);
        }
        if c.rate != wheel.rate() {
            wheel.set_rate(c.rate);
        }
        match (c.paused, self.paused_at) {
            (true, None) => {
                self.paused_at = Some(Instant::now());
                ctx.state.send_replace(JobState::Paused);
            }
            (false, Some(at)) => {
                wheel.shift(Instant::now() - at);
                self.paused_at = None;
                ctx.state.send_replace(JobState::Running);
            }
            _ => {}
        }
        // POST /job/config logs its changes; a ramp's steps (`[[job.stages]]`) are many.
        tracing::debug!(speed = %c.speed, rate = c.rate, paused = c.paused, "job settings applied");
    }

    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.woken = true;
    }
}
