//! What a replayer measured since its last statistics report, and how many records it is
//! done with (the ack). Acks go out as often as credits need; statistics once a second.
//!
//! Requests count under the endpoint id the dispatcher put on their record (it names them
//! and keeps the cap for the whole fleet); here the id only indexes a vector. Every request
//! records under one lock. An outcome without an error kind goes to a short log first; every
//! 64 of them are folded into their endpoints' sparse histograms and the
//! full-resolution totals together, after passes that prefetch those endpoints' statistics
//! (`Inner::fold`). Taking a delta folds what waits, then swaps in clean spares prepared
//! outside the lock; the taken ones are encoded, reset and kept as the next spares, also
//! outside the lock.
//!
//! Why the log: an endpoint's [`EndpointStats`] spans seven cache lines and three heap
//! buffers; with 1,000 endpoints that is about 1 MB, and between two responses of the same
//! endpoint the kernel's socket work evicts it. Recorded one request at a time, the first
//! load of an endpoint's statistics waited on memory: ~0.14 µs a request, a third of all
//! recording (perf, bench (b)). Keeping each endpoint's last outcomes in two cache lines of
//! its own only moved that wait to those lines. In a batch, the misses of 64 requests are
//! outstanding together; recording fell from 0.42 to 0.27 µs a request (the
//! measurements are in this file's git history).

use std::collections::BTreeMap;
use std::sync::Mutex;

use reprise_proto::compare::{EndpointCompare, Seen};
use reprise_proto::pb;
use reprise_proto::stats::{Dist as _, EndpointStats, ErrorKind, MAX_MICROS, OrderWait, Outcome, TotalStats};

/// Endpoint ids above this count as "other" (0): the dispatcher never sends more (its cap is
/// at most 100,000), and a peer that did could not make this vector grow without bound.
const MAX_ID: u32 = 100_000;

/// An outcome without an error kind, waiting in the log to be recorded.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    endpoint: u32,
    /// [`NO_STATUS`] for a dry run.
    status: u16,
    latency: u32,
    service: u32,
    lag: u32,
}

/// Outcomes the log holds before they are folded.
const BATCH: usize = 64;
/// A status no response has (they have three digits).
const NO_STATUS: u16 = u16::MAX;

impl Waiting {
    fn new(endpoint: u32, o: &Outcome) -> Self {
        // Stats::record clamps values to MAX_MICROS (60 s), which fits a u32.
        let us = |v: u64| v.min(MAX_MICROS) as u32;
        Self {
            endpoint,
            status: o.status().unwrap_or(NO_STATUS),
            latency: us(o.latency_us),
            service: us(o.service_us),
            lag: us(o.lag_us),
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            answer: Ok(Some(self.status).filter(|&s| s != NO_STATUS)),
            latency_us: u64::from(self.latency),
            service_us: u64::from(self.service),
            lag_us: u64::from(self.lag),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Statistics since the last report, by endpoint id (grown to the largest id seen).
    delta: Vec<EndpointStats>,
    /// Outcomes not yet in `delta` and `total`, in arrival order (at most [`BATCH`]).
    log: Vec<Waiting>,
    total: TotalStats,
    /// Waits for the previous request of the same order key (ordered jobs), apart from the requests' own.
    order_wait: OrderWait,
    /// Response comparison's counts of this interval, by endpoint id.
    compare: BTreeMap<u32, EndpointCompare>,
    completed: u64,
    cancelled: u64,
    unreported: u64,
    /// Rows of this interval, when raw results are on.
    raw: Vec<pb::RawResult>,
    raw_dropped: u64,
}

impl Inner {
    /// Records the outcomes waiting in the log. A first pass prefetches the statistics of
    /// every endpoint they name, a second where their histograms keep the next values: the
    /// processor has those cache misses outstanding together instead of one at a time as
    /// each request is recorded. The last pass records into warm memory.
    fn fold(&mut self) {
        for w in &self.log {
            self.delta[w.endpoint as usize].prefetch();
        }
        for w in &self.log {
            self.delta[w.endpoint as usize].prefetch_pending();
        }
        for w in self.log.drain(..) {
            let outcome = w.outcome();
            self.delta[w.endpoint as usize].record(&outcome);
            self.total.record(&outcome);
        }
    }
}

/// Raw rows kept per interval (a second); past this they are counted, not kept.
const RAW_MAX: usize = 100_000;

/// When a request was due and sent, Unix µs: what a raw result row needs beyond the outcome.
#[derive(Clone, Copy, Debug)]
pub struct RawTimes {
    pub due_unix_us: i64,
    pub sent_unix_us: i64,
}

/// A delta ready to ship.
#[derive(Debug)]
pub struct Delta {
    pub endpoints: Vec<pb::EndpointDelta>,
    pub total: pb::TotalDelta,
    pub completed_total: u64,
    pub cancelled_total: u64,
    pub raw: Vec<pb::RawResult>,
    pub raw_dropped: u64,
    /// Waits of an ordered job's records for their order key, when some waited.
    pub order_wait: Option<pb::OrderWait>,
    /// Response comparison's counts, per endpoint compared.
    pub compare: Vec<pb::CompareDelta>,
    /// The interval's schedule lag, for the replayer's own `/metrics`.
    pub lag: LagInterval,
}

#[derive(Debug, Default)]
struct Spares {
    endpoints: Vec<EndpointStats>,
    total: Option<TotalStats>,
}

/// The schedule lag of one statistics interval (about a second), µs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LagInterval {
    pub count: u64,
    /// Sum of the interval's lags, µs (its mean times its count).
    pub sum_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
    /// Clean statistics to swap in at the next take.
    spares: Mutex<Spares>,
}

impl Recorder {
    /// Records one finished request of endpoint `endpoint` (and its raw row, when given);
    /// returns how many completions are not yet acknowledged.
    pub fn record(&self, endpoint: u32, outcome: &Outcome, raw: Option<RawTimes>) -> u64 {
        let id = if endpoint > MAX_ID { 0 } else { endpoint };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.delta.len() <= id as usize {
            // Once per endpoint and job: the only growth under the lock, and a sparse
            // statistics is a few empty vectors.
            inner.delta.resize_with(id as usize + 1, EndpointStats::default);
        }
        if outcome.answer.is_err() {
            // An error kind is counted by name: recorded now, after what waits.
            inner.fold();
            let inner = &mut *inner;
            inner.delta[id as usize].record(outcome);
            inner.total.record(outcome);
        } else {
            inner.log.push(Waiting::new(id, outcome));
            if inner.log.len() >= BATCH {
                inner.fold();
            }
        }
        if let Some(t) = raw {
            if inner.raw.len() < RAW_MAX {
                let row = pb::RawResult {
                    due_unix_us: t.due_unix_us,
                    sent_unix_us: t.sent_unix_us,
                    latency_us: outcome.latency_us,
                    status: outcome.status().map_or(0, u32::from),
                    endpoint: id,
                    error: outcome.error().map_or("", ErrorKind::as_str).to_owned(),
                };
                inner.raw.push(row);
            } else {
                inner.raw_dropped += 1;
            }
        }
        inner.completed += 1;
        inner.unreported += 1;
        inner.unreported
    }

    /// A record of an ordered job waited `waited_us` for its order key's previous request
    /// (let go by the order timeout if `timed_out`).
    pub fn record_wait(&self, waited_us: u64, timed_out: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.order_wait.record(waited_us, timed_out);
    }

    /// Records dropped unsent because the job was stopped.
    pub fn cancel(&self, n: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.completed += n;
        inner.cancelled += n;
    }

    pub fn completed(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).completed
    }

    /// Records done with, and how many of them were cancelled unsent.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.completed, inner.cancelled)
    }

    /// The ack to send now: records done with; resets the count of unacknowledged ones.
    pub fn ack(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.unreported = 0;
        inner.completed
    }

    /// Counts a compared request of endpoint `endpoint`: the fields where the candidate
    /// differed from the baseline, and those where the baselines differed from each other.
    pub fn record_compare(&self, endpoint: u32, differing: &[Seen<'_>], noise: &[&str], over_max_body: bool) {
        let id = if endpoint > MAX_ID { 0 } else { endpoint };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.compare.entry(id).or_default().record(differing, noise, over_max_body);
    }

    /// Counts a request of endpoint `endpoint` that could not be compared.
    pub fn record_uncompared(&self, endpoint: u32) {
        let id = if endpoint > MAX_ID { 0 } else { endpoint };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.compare.entry(id).or_default().uncompared();
    }

    /// Takes everything since the last call.
    pub fn take(&self) -> Delta {
        let mut spares = std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner()));
        let fresh_total = spares.total.take().unwrap_or_default();
        let (mut taken, total, completed_total, cancelled_total, raw, order_wait, compare) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            inner.fold();
            inner.unreported = 0;
            let mut taken = Vec::new();
            for (id, slot) in inner.delta.iter_mut().enumerate() {
                if slot.count() > 0 {
                    let fresh = spares.endpoints.pop().unwrap_or_default();
                    taken.push((id as u32, std::mem::replace(slot, fresh)));
                }
            }
            let total = std::mem::replace(&mut inner.total, fresh_total);
            let raw = (std::mem::take(&mut inner.raw), std::mem::take(&mut inner.raw_dropped));
            let order_wait = (inner.order_wait.count() > 0).then(|| {
                let wire = inner.order_wait.to_wire();
                inner.order_wait.reset();
                wire
            });
            let compare = std::mem::take(&mut inner.compare);
            (taken, total, inner.completed, inner.cancelled, raw, order_wait, compare)
        };
        let compare = compare.iter().map(|(id, c)| c.to_wire(*id)).collect();
        let endpoints = taken
            .iter_mut()
            .map(|(id, s)| {
                s.settle();
                s.to_wire(*id)
            })
            .collect();
        let total_wire = total.to_wire();
        let lag = LagInterval {
            count: total.lag.len(),
            sum_us: total.lag.mean() * total.lag.len() as f64,
            p50_us: total.lag.value_at_quantile(0.5),
            p99_us: total.lag.value_at_quantile(0.99),
            max_us: total.lag.max(),
        };
        for (_, mut used) in taken {
            used.reset();
            spares.endpoints.push(used);
        }
        let mut total = total;
        total.reset();
        spares.total = Some(total);
        *self.spares.lock().unwrap_or_else(|p| p.into_inner()) = spares;
        Delta {
            endpoints,
            total: total_wire,
            completed_total,
            cancelled_total,
            raw: raw.0,
            raw_dropped: raw.1,
            order_wait,
            compare,
            lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_proto::stats::Dist;

    fn ok() -> Outcome {
        Outcome { answer: Ok(Some(200)), latency_us: 10, service_us: 5, lag_us: 1 }
    }

    #[test]
    fn deltas_and_acks_move_together() {
        let r = Recorder::default();
        r.record(1, &ok(), None);
        r.record(1, &ok(), Some(RawTimes { due_unix_us: 5, sent_unix_us: 7 }));
        r.record(3, &ok(), None);
        let d = r.take();
        assert_eq!(d.completed_total, 3);
        assert_eq!(d.raw.len(), 1, "a row only where raw times were given");
        assert_eq!((d.raw[0].endpoint, d.raw[0].status, d.raw[0].sent_unix_us), (1, 200, 7));
        let ids: Vec<(u32, u64)> =
            d.endpoints.iter().map(|e| (e.endpoint, e.counts.as_ref().map_or(0, |c| c.ok))).collect();
        assert_eq!(ids, vec![(1, 2), (3, 1)], "only endpoints with requests");
        assert_eq!(d.total.counts.as_ref().map(|c| c.ok), Some(3));
        r.cancel(3);
        let d = r.take();
        assert_eq!((d.completed_total, d.cancelled_total, d.endpoints.len()), (6, 3, 0));
        assert_eq!(d.total.counts.as_ref().map(|c| c.ok), Some(0), "the total starts afresh");
    }

    /// Outcomes waiting in an endpoint's `Recent`, folded when it fills, before an error kind,
    /// or at a take, give exactly what recording each at once gives; none is lost or doubled.
    #[test]
    fn waiting_outcomes_fold_into_exactly_what_direct_recording_gives() {
        let r = Recorder::default();
        let (mut direct, mut total) = (vec![EndpointStats::default(); 4], TotalStats::default());
        let mut taken = Vec::new();
        for i in 0..1_000u64 {
            let endpoint = (i * i % 4) as u32;
            let status = match i % 11 {
                0 => None,
                1 => Some(503),
                _ => Some(200 + (i % 3) as u16),
            };
            let error =
                (i % 13 == 0).then_some(if i % 2 == 0 { ErrorKind::Timeout } else { ErrorKind::Reset });
            let o = Outcome {
                answer: error.map_or(Ok(status), Err),
                latency_us: 1 + i * 977 % 70_000_000,
                service_us: i * 31,
                lag_us: i % 300,
            };
            r.record(endpoint, &o, None);
            direct[endpoint as usize].record(&o);
            total.record(&o);
            if i == 499 {
                taken.push(r.take());
            }
        }
        taken.push(r.take());
        let mut got = vec![EndpointStats::default(); 4];
        let mut got_total = TotalStats::default();
        for d in &taken {
            for e in &d.endpoints {
                got[e.endpoint as usize]
                    .merge(&EndpointStats::from_wire(e).expect("a delta this recorder encoded decodes"));
            }
            got_total.merge(&TotalStats::from_wire(&d.total).expect("a total this recorder encoded decodes"));
        }
        for (id, (g, want)) in got.iter_mut().zip(&mut direct).enumerate() {
            g.settle();
            want.settle();
            assert_eq!(g.to_wire(id as u32), want.to_wire(id as u32), "endpoint {id}");
        }
        assert_eq!((got_total.ok, got_total.failed), (total.ok, total.failed));
        assert_eq!((&got_total.status, &got_total.errors), (&total.status, &total.errors));
        let hists = |t: &TotalStats| {
            [&t.latency, &t.service, &t.lag].map(|h| {
                let at: Vec<u64> = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0].map(|q| h.value_at_quantile(q)).to_vec();
                (h.len(), h.min(), h.max(), at)
            })
        };
        assert_eq!(hists(&got_total), hists(&total));
        assert_eq!(taken[1].completed_total, 1_000);
    }

    #[test]
    fn ids_beyond_any_cap_count_as_other() {
        let r = Recorder::default();
        r.record(u32::MAX, &ok(), None);
        r.record(0, &ok(), None);
        let d = r.take();
        assert_eq!(d.endpoints.len(), 1);
        assert_eq!((d.endpoints[0].endpoint, d.endpoints[0].counts.as_ref().map(|c| c.ok)), (0, Some(2)));
    }
}
