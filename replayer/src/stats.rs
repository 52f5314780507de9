//! What a replayer measured since its last statistics report, and how many records it is
//! done with (the ack). Acks go out as often as credits need; statistics once a second.
//!
//! Requests count under the endpoint id the dispatcher put on their record (it names them
//! and keeps the cap for the whole fleet); here the id only indexes a vector. Every request
//! records under one lock into its endpoint's sparse histograms and the full-resolution
//! totals. Taking a delta swaps in clean spares prepared outside the lock; the taken ones
//! are encoded, reset and kept as the next spares, also outside the lock.

use std::sync::Mutex;

use reprise_proto::pb;
use reprise_proto::stats::{EndpointStats, Outcome, TotalStats};

/// Endpoint ids above this count as "other" (0): the dispatcher never sends more (its cap is
/// at most 100,000), and a peer that did could not make this vector grow without bound.
const MAX_ID: u32 = 100_000;

#[derive(Debug, Default)]
struct Inner {
    /// Statistics since the last report, by endpoint id (grown to the largest id seen).
    delta: Vec<EndpointStats>,
    total: TotalStats,
    completed: u64,
    cancelled: u64,
    unreported: u64,
    /// Rows of this interval, when raw results are on.
    raw: Vec<pb::RawResult>,
    raw_dropped: u64,
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
}

#[derive(Debug, Default)]
struct Spares {
    endpoints: Vec<EndpointStats>,
    total: Option<TotalStats>,
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
    pub fn record(&self, endpoint: u32, outcome: &Outcome<'_>, raw: Option<RawTimes>) -> u64 {
        let id = if endpoint > MAX_ID { 0 } else { endpoint };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.delta.len() <= id as usize {
            // Once per endpoint and job: the only growth under the lock, and a sparse
            // statistics is a few empty vectors.
            inner.delta.resize_with(id as usize + 1, EndpointStats::default);
        }
        inner.delta[id as usize].record(outcome);
        inner.total.record(outcome);
        if let Some(t) = raw {
            if inner.raw.len() < RAW_MAX {
                let row = pb::RawResult {
                    due_unix_us: t.due_unix_us,
                    sent_unix_us: t.sent_unix_us,
                    latency_us: outcome.latency_us,
                    status: outcome.status.map_or(0, u32::from),
                    endpoint: id,
                    error: outcome.error.unwrap_or_default().to_owned(),
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

    /// Records dropped unsent because the job was stopped.
    pub fn cancel(&self, n: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.completed += n;
        inner.cancelled += n;
    }

    pub fn completed(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).completed
    }

    /// The ack to send now: records done with; resets the count of unacknowledged ones.
    pub fn ack(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.unreported = 0;
        inner.completed
    }

    /// Takes everything since the last call.
    pub fn take(&self) -> Delta {
        let mut spares = std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner()));
        let fresh_total = spares.total.take().unwrap_or_default();
        let (mut taken, total, completed_total, cancelled_total, raw) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
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
            (taken, total, inner.completed, inner.cancelled, raw)
        };
        let endpoints = taken
            .iter_mut()
            .map(|(id, s)| {
                s.settle();
                s.to_wire(*id)
            })
            .collect();
        let total_wire = total.to_wire();
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Outcome<'static> {
        Outcome { status: Some(200), error: None, latency_us: 10, service_us: 5, lag_us: 1 }
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
