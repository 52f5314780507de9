//! Response comparison window by window (`[compare] window`, a minute by default): a job
//! that runs until stopped (a standing shadow following a capture topic) is judged on what
//! its candidate answers *now*, which the job's cumulative diff rate hides once days of
//! agreement are behind it.
//!
//! Each comparison delta a replayer reports is also added to the window it covers (a report
//! covers the second before it arrives, as in [`super::history`]). When a window closes its
//! requests are judged with the noise known then over the whole job
//! ([`EndpointCompare::differing_with_noise_of`]): a field found noisy in an earlier window
//! stays noise, and a window with few requests does not decide noise on its own. Windows
//! without comparisons are kept as empty rows, so a chart's time axis has no holes.
//!
//! Memory is bounded: the last [`ENDPOINT_WINDOWS`] windows keep their counts per endpoint
//! (endpoints are capped by `[stats] max_endpoints`), older ones only all traffic's, and at
//! most [`MAX_WINDOWS`] are kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use reprise_proto::compare::EndpointCompare;
use serde::Serialize;
use tokio::time::Instant;

/// Windows that keep their counts per endpoint.
pub const ENDPOINT_WINDOWS: usize = 60;
/// Windows kept at most (a week of minutes).
const MAX_WINDOWS: usize = 7 * 24 * 60;

/// Requests compared in a window and, of them, differing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub compared: u64,
    pub differing: u64,
}

impl Counts {
    /// `differing / compared`; `None` when nothing was compared.
    pub fn diff_rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.differing as f64 / self.compared as f64)
    }
}

/// One closed window.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// Seconds since the job started: the window covers [start_s, start_s + its length).
    pub start_s: u64,
    /// All traffic.
    pub total: Counts,
    /// By endpoint, those compared in it; empty once the window is older than
    /// [`ENDPOINT_WINDOWS`].
    #[serde(skip)]
    pub endpoints: BTreeMap<Arc<str>, Counts>,
    /// Still open (the last of a report): it covers [start_s, the report's time).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
}

impl Window {
    /// Requests compared in it and, of them, differing: of endpoint `name`, or of all
    /// traffic for "*". `None` when nothing of it was compared.
    pub fn compared(&self, name: &str) -> Option<(u64, u64)> {
        let c = if name == "*" { Some(&self.total) } else { self.endpoints.get(name) };
        c.filter(|c| c.compared > 0).map(|c| (c.compared, c.differing))
    }
}

#[derive(Debug)]
pub struct Windows {
    length: Duration,
    start: Option<Instant>,
    closed: VecDeque<Window>,
    /// The open window's index and its deltas by endpoint.
    index: u64,
    open: BTreeMap<Arc<str>, EndpointCompare>,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::new(Duration::from_secs(60))
    }
}

impl Windows {
    pub fn new(length: Duration) -> Windows {
        Windows {
            length: length.max(Duration::from_secs(1)),
            start: None,
            closed: VecDeque::new(),
            index: 0,
            open: BTreeMap::new(),
        }
    }

    pub fn start(&mut self, at: Instant) {
        self.start = Some(at);
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    /// The window a report arriving now belongs to.
    fn now_index(&self) -> u64 {
        const HALF_INTERVAL: Duration = Duration::from_millis(500);
        self.start.map_or(0, |s| {
            let covered = Instant::now().saturating_duration_since(s).saturating_sub(HALF_INTERVAL);
            (covered.as_millis() / self.length.as_millis().max(1)) as u64
        })
    }

    /// Closes the windows that have passed, judged with `job`'s noise (the whole job's
    /// comparison so far).
    pub fn roll(&mut self, job: &BTreeMap<Arc<str>, EndpointCompare>) {
        let now = self.now_index();
        while self.index < now {
            let open = std::mem::take(&mut self.open);
            let window = self.judged(&open, job, false);
            self.closed.push_back(window);
            if self.closed.len() > ENDPOINT_WINDOWS {
                let old = self.closed.len() - ENDPOINT_WINDOWS - 1;
                self.closed[old].endpoints = BTreeMap::new();
            }
            if self.closed.len() > MAX_WINDOWS {
                self.closed.pop_front();
            }
            self.index += 1;
        }
    }

    /// The open window, if anything was compared in it, judged as [`Windows::roll`] judges
    /// one that closes: a job's report ends with it, so that the last part of a finite job
    /// is in the report too.
    pub fn open_window(&self, job: &BTreeMap<Arc<str>, EndpointCompare>) -> Option<Window> {
        let window = self.judged(&self.open, job, true);
        (window.total.compared > 0).then_some(window)
    }

    /// The open window's counts as a window, each endpoint's differing requests judged
    /// with `job`'s noise.
    fn judged(
        &self,
        open: &BTreeMap<Arc<str>, EndpointCompare>,
        job: &BTreeMap<Arc<str>, EndpointCompare>,
        still_open: bool,
    ) -> Window {
        let endpoints: BTreeMap<Arc<str>, Counts> = open
            .iter()
            .map(|(name, c)| {
                let differing = match job.get(name) {
                    Some(noise) => c.differing_with_noise_of(noise),
                    None => c.summary().differing,
                };
                (Arc::clone(name), Counts { compared: c.compared, differing })
            })
            .collect();
        let total = endpoints.values().fold(Counts::default(), |t, c| Counts {
            compared: t.compared + c.compared,
            differing: t.differing + c.differing,
        });
        let start_s = self.index * self.length.as_secs();
        Window { start_s, total, endpoints, open: still_open }
    }

    /// Adds an endpoint's comparison delta to the open window (after [`Windows::roll`]).
    pub fn add(&mut self, endpoint: &Arc<str>, delta: &EndpointCompare) {
        self.open.entry(Arc::clone(endpoint)).or_default().merge(delta);
    }

    /// The last closed window, if one has closed.
    pub fn last(&self) -> Option<&Window> {
        self.closed.back()
    }

    /// The last `most` closed windows, oldest first, without their endpoints.
    pub fn recent(&self, most: usize) -> Vec<Window> {
        let skip = self.closed.len().saturating_sub(most);
        self.closed
            .iter()
            .skip(skip)
            .map(|w| Window { start_s: w.start_s, total: w.total, endpoints: BTreeMap::new(), open: false })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use reprise_proto::compare::Seen;

    use super::*;

    fn compared(same: u64, differing_on: &[(&str, u64)], noise_on: &[(&str, u64)]) -> EndpointCompare {
        let mut c = EndpointCompare::default();
        for _ in 0..same {
            c.record(&[], &[], false);
        }
        for &(field, n) in differing_on {
            for _ in 0..n {
                c.record(&[Seen { field, left: Some("a"), right: Some("b") }], &[], false);
            }
        }
        for &(field, n) in noise_on {
            for _ in 0..n {
                c.record(&[Seen { field, left: Some("a"), right: Some("b") }], &[field], false);
            }
        }
        c
    }

    #[tokio::test(start_paused = true)]
    async fn each_window_counts_its_own_requests_judged_with_the_jobs_noise() {
        let mut w = Windows::new(Duration::from_secs(2));
        let mut job: BTreeMap<Arc<str>, EndpointCompare> = BTreeMap::new();
        let e: Arc<str> = Arc::from("GET /a");
        w.start(Instant::now());
        let report = |w: &mut Windows, job: &mut BTreeMap<Arc<str>, EndpointCompare>, d: EndpointCompare| {
            job.entry(Arc::clone(&e)).or_default().merge(&d);
            w.roll(job);
            w.add(&e, &d);
        };
        tokio::time::advance(Duration::from_millis(1000)).await;
        // Window 0: ten alike, and `$.id` noisy (the baselines differ on it too).
        report(&mut w, &mut job, compared(10, &[], &[("$.id", 4)]));
        tokio::time::advance(Duration::from_millis(2000)).await;
        // Window 1: `$.id` differs alone (noise, known from window 0); `$.price` differs.
        report(&mut w, &mut job, compared(2, &[("$.id", 2), ("$.price", 6)], &[]));
        tokio::time::advance(Duration::from_millis(4000)).await;
        w.roll(&job);
        let rows: Vec<(u64, Counts)> = w.recent(10).iter().map(|r| (r.start_s, r.total)).collect();
        assert_eq!(
            rows,
            [
                (0, Counts { compared: 14, differing: 0 }),
                (2, Counts { compared: 10, differing: 6 }),
                (4, Counts { compared: 0, differing: 0 }),
            ],
            "the second window differs on price only; the third is empty"
        );
        assert_eq!(w.last().expect("closed").total.diff_rate(), None);
        let second = &w.closed[1];
        assert_eq!(second.endpoints[&e].diff_rate(), Some(0.6));
        // What the open window has so far: nothing, then a report's worth, judged alike (the
        // request differing on `$.id` alone is noise).
        assert!(w.open_window(&job).is_none(), "nothing compared in the open window");
        report(&mut w, &mut job, compared(1, &[("$.id", 1), ("$.price", 1)], &[]));
        let open = w.open_window(&job).expect("an open window with a comparison");
        assert_eq!((open.start_s, open.total, open.open), (6, Counts { compared: 3, differing: 1 }, true));
        assert_eq!(w.recent(10).len(), 3, "still open: not among the closed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_windows_keep_only_all_traffics_counts() {
        let mut w = Windows::new(Duration::from_secs(1));
        let job = BTreeMap::new();
        w.start(Instant::now());
        let e: Arc<str> = Arc::from("GET /a");
        for _ in 0..ENDPOINT_WINDOWS + 5 {
            w.add(&e, &compared(1, &[], &[]));
            tokio::time::advance(Duration::from_secs(1)).await;
            w.roll(&job);
        }
        let with_endpoints = w.closed.iter().filter(|r| !r.endpoints.is_empty()).count();
        assert_eq!(with_endpoints, ENDPOINT_WINDOWS);
        assert_eq!(w.recent(3).len(), 3);
    }
}
