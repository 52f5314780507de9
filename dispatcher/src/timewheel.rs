//! The time wheel: when each record is due and how many copies of it go out.
//!
//! The schedule is absolute, never a chain of relative sleeps:
//! `due = anchor + (t - t0) / speed`, with `anchor` the job's start and `t0` = `[job] begin`
//! when set, else the first record's time. A live change of speed re-anchors the schedule at
//! the last record released (or now, if that is past): the new speed applies from the next
//! record on, continuing from the last one, so there is neither a burst nor a gap. A pause
//! moves the anchor by its length. At speed "max" a record is due when it is released. Records are released slot by slot (10 ms slots), [`LEAD`] ahead of their
//! due instant, so a replayer holds each one before its instant and fires it on time; the
//! dispatcher sleeps until a slot's absolute start, so no error accumulates over a long job.
//!
//! `qps` paces by arrival rate instead. An even schedule gives the n-th request (copies
//! counted) the instant `n / qps` after the start; each record is due within [`QPS_SHAPE`]
//! of its place on it, so over any stretch of the job the rate is `qps` give or take
//! [`QPS_SHAPE`]'s worth of requests, whatever the recording's shape (a long silence in it
//! cannot speed the rest up). Inside that window the recorded shape is kept: each record
//! follows the one before by its recorded gap, scaled by the recording's average rate so
//! far over `qps`, so short bursts and lulls stay as recorded. It needs no pass ahead and
//! works on live input; when the input falls behind the even schedule (a slow source), the
//! schedule goes on from now rather than catching up in a burst.
//!
//! `max_gap` cuts idle time: a gap between records longer than it counts as `max_gap` on the
//! schedule, in every mode, so a recording's quiet nights do not make a replay wait.
//!
//! `rate` is copies per record: `floor(rate)` copies always, plus one more with probability
//! `fract(rate)`, decided by a hash of `(seed, record index)`: the same seed chooses the same
//! records on every run.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Speed;

/// Width of one slot.
pub const SLOT: Duration = Duration::from_millis(10);
/// How long before its due instant a record is handed to a replayer.
pub const LEAD: Duration = Duration::from_millis(200);
/// At `qps`, how far a record's due instant may stray from its place on the even schedule
/// to keep the recorded shape: the bound on the rate's error over a stretch of the job.
pub const QPS_SHAPE: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct TimeWheel {
    speed: Speed,
    /// The job's start: due offsets on the wire count from it; the slot grid starts at it.
    start: Instant,
    /// The schedule: recorded time `t0` is due at `anchor`.
    anchor: Instant,
    t0: Option<i64>,
    rate: f64,
    seed: u64,
    /// The last record released: (recorded time, due).
    last: Option<(i64, Instant)>,
    /// Gaps longer than this (ns) are cut to it.
    max_gap: Option<i64>,
    /// Recorded ns cut so far, up to the last record released: a record's time on the
    /// schedule's timeline is its recorded time less this (and its own gap's cut).
    cut: i64,
    /// The recorded time gaps are measured from: the last record released, or `begin`.
    prev_ts: Option<i64>,
    /// For `qps`: the first record's time on the timeline, and records released since.
    seen: Option<(i64, u64)>,
    /// For `qps`: where the next record stands on the even schedule.
    even: Option<Even>,
}

/// At `qps`: the next record's place on the even schedule, and how far from it (ns) it is
/// due if its recorded gap is 0 (the last record's offset, faded, less the step between
/// their places).
#[derive(Clone, Copy, Debug)]
struct Even {
    place: Instant,
    lead: f64,
}

/// [`QPS_SHAPE`] in ns.
const QPS_SHAPE_NS: f64 = QPS_SHAPE.as_nanos() as f64;
/// How much of its offset from the even schedule a record passes on to the next: a steady
/// bias in the estimate of the recording's rate (early in a job) fades instead of pinning
/// the schedule to the edge of [`QPS_SHAPE`], while a gap's shape (tens of records) stays.
const QPS_FADE: f64 = 0.999;

/// `at` moved by `ns` (either way).
fn offset(at: Instant, ns: f64) -> Instant {
    let d = Duration::from_nanos(ns.abs().min(u64::MAX as f64) as u64);
    if ns >= 0.0 { at + d } else { at.checked_sub(d).unwrap_or(at) }
}

/// `a - b` in ns, signed.
fn signed_ns(a: Instant, b: Instant) -> f64 {
    if a >= b { (a - b).as_nanos() as f64 } else { -((b - a).as_nanos() as f64) }
}

impl TimeWheel {
    /// `start` is the instant recorded time `t0` maps to.
    pub fn new(speed: Speed, start: Instant, t0: Option<i64>, rate: f64, seed: u64) -> Self {
        Self {
            speed,
            start,
            anchor: start,
            t0,
            rate,
            seed,
            last: None,
            max_gap: None,
            cut: 0,
            prev_ts: t0,
            seen: None,
            even: None,
        }
    }

    /// Cuts gaps in the recording longer than `max_gap` to it.
    pub fn with_max_gap(mut self, max_gap: Option<Duration>) -> Self {
        self.max_gap = max_gap.map(|g| g.as_nanos().min(i64::MAX as u128) as i64);
        self
    }

    /// How much of the gap before a record recorded at `ts` is cut.
    fn gap_cut(&self, ts: i64) -> i64 {
        match (self.max_gap, self.prev_ts) {
            (Some(max), Some(prev)) => ts.saturating_sub(prev).saturating_sub(max).max(0),
            _ => 0,
        }
    }

    /// `ts` on the schedule's timeline: recorded time less the gaps cut before it.
    fn timeline(&self, ts: i64) -> i64 {
        ts.saturating_sub(self.cut).saturating_sub(self.gap_cut(ts))
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The instant a record recorded at `ts` is due, `now` being the time (read once by the
    /// caller, who compares it with the release instant too).
    pub fn due(&mut self, ts: i64, now: Instant) -> Instant {
        let t = self.timeline(ts);
        let t0 = *self.t0.get_or_insert(t);
        let after = t.saturating_sub(t0).max(0) as f64;
        let ns = match self.speed {
            Speed::Max => return now.max(self.start),
            Speed::Factor(f) => after / f,
            Speed::Qps(qps) => {
                // The recorded gap, scaled: records per recorded ns (this one's gap
                // included) over requests per ns.
                let gap = match self.seen {
                    Some((first, released)) if t > first && released > 0 => {
                        let recorded_rate = released as f64 / (t - first) as f64 * self.rate;
                        after * recorded_rate / (qps * 1e-9)
                    }
                    _ => 0.0,
                };
                let (place, lead) = self.even.map_or((self.anchor, 0.0), |e| (e.place, e.lead));
                // Input that fell behind the even schedule goes on from now, not in a burst.
                return offset(place.max(now), (lead + gap).clamp(-QPS_SHAPE_NS, QPS_SHAPE_NS));
            }
        };
        self.anchor + Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    /// Notes that the record recorded at `ts` was released, due at `due`, in `copies`
    /// copies.
    pub fn released(&mut self, ts: i64, due: Instant, copies: u32) {
        let t = self.timeline(ts);
        self.cut = self.cut.saturating_add(self.gap_cut(ts));
        if self.prev_ts.is_none_or(|p| ts > p) {
            self.prev_ts = Some(ts);
        }
        self.last = Some((ts, due));
        let (first, released) = self.seen.get_or_insert((t, 0));
        *released += 1;
        if t < *first {
            *first = t;
        }
        // At qps each record follows the one before it, at the pace of the moment, and the
        // even schedule moves on by its copies.
        if let Speed::Qps(qps) = self.speed {
            self.anchor = due;
            self.t0 = Some(t);
            let place = self.even.map_or(due, |e| e.place);
            let strayed = signed_ns(due, place).clamp(-QPS_SHAPE_NS, QPS_SHAPE_NS);
            let step = f64::from(copies) / qps * 1e9;
            self.even =
                Some(Even { place: offset(offset(due, -strayed), step), lead: strayed * QPS_FADE - step });
        }
    }

    /// A new speed, from the next record on: the schedule continues from the last record
    /// released (or from now, if that one is already past).
    pub fn set_speed(&mut self, speed: Speed) {
        if let Some((ts, due)) = self.last {
            self.anchor = due.max(Instant::now());
            self.t0 = Some(ts.saturating_sub(self.cut));
        }
        if !matches!(speed, Speed::Qps(_)) {
            self.even = None;
        }
        self.speed = speed;
    }

    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
    }

    /// After a pause: everything not yet released moves later by its length.
    pub fn shift(&mut self, paused: Duration) {
        self.anchor += paused;
        if let Some(even) = &mut self.even {
            even.place += paused;
        }
    }

    /// The start of the slot in which a record due at `due` is released: [`LEAD`] before it,
    /// on the slot grid. Records due within `LEAD` of the start go out before the start (the
    /// job starts a little after replayers get its configuration), so none arrives late.
    pub fn release_at(&self, due: Instant) -> Instant {
        let from_start = due.saturating_duration_since(self.start);
        match from_start.checked_sub(LEAD) {
            Some(after) => self.start + SLOT * (after.as_nanos() / SLOT.as_nanos()) as u32,
            None => due.checked_sub(LEAD).unwrap_or(self.start.min(due)),
        }
    }

    /// Copies of the record with this index (0, 1, …, in time order).
    pub fn copies(&self, index: u64) -> u32 {
        let whole = self.rate.floor();
        let frac = self.rate - whole;
        let extra = frac > 0.0 && unit_hash(self.seed, index) < frac;
        whole as u32 + u32::from(extra)
    }
}

/// A uniform number in [0, 1) from (seed, index): splitmix64.
fn unit_hash(seed: u64, index: u64) -> f64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[tokio::test(start_paused = true)]
    async fn due_instants_are_absolute_and_scaled_by_speed() {
        let start = Instant::now();
        let mut w = TimeWheel::new(Speed::Factor(2.0), start, None, 1.0, 0);
        assert_eq!(w.due(1_000 * MS, Instant::now()), start);
        assert_eq!(w.due(1_500 * MS, Instant::now()), start + Duration::from_millis(250));
        // an hour in: no drift, the same formula
        assert_eq!(w.due(1_000 * MS + 3_600_000 * MS, Instant::now()), start + Duration::from_secs(1800));
        let mut max = TimeWheel::new(Speed::Max, start, None, 1.0, 0);
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(
            max.due(9_999 * MS, Instant::now()),
            start + Duration::from_millis(5),
            "at max, due when released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn begin_anchors_the_schedule() {
        let start = Instant::now();
        let mut w = TimeWheel::new(Speed::Factor(1.0), start, Some(0), 1.0, 0);
        assert_eq!(w.due(500 * MS, Instant::now()), start + Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_released_a_lead_ahead_on_slot_boundaries() {
        let start = Instant::now() + Duration::from_secs(1);
        let w = TimeWheel::new(Speed::Factor(1.0), start, None, 1.0, 0);
        assert_eq!(w.release_at(start + Duration::from_millis(100)), start - Duration::from_millis(100));
        assert_eq!(w.release_at(start + Duration::from_millis(200)), start);
        assert_eq!(w.release_at(start + Duration::from_millis(1_234)), start + Duration::from_millis(1_030));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wheel_sleeps_until_slots_without_drift() {
        let start = Instant::now();
        let w = TimeWheel::new(Speed::Factor(1.0), start, None, 1.0, 0);
        for i in 0..1000u64 {
            let due = start + Duration::from_millis(10 * i + 200);
            tokio::time::sleep_until(w.release_at(due)).await;
            assert_eq!(Instant::now() - start, Duration::from_millis(10 * i));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_speed_change_continues_from_the_last_record_released() {
        let start = Instant::now();
        let mut w = TimeWheel::new(Speed::Factor(1.0), start, None, 1.0, 0);
        for t in [0, 100, 200] {
            let due = w.due(t * MS, Instant::now());
            w.released(t * MS, due, 1);
        }
        w.set_speed(Speed::Factor(2.0));
        // 200 ms was due at start + 200 ms; 300 ms recorded is 50 ms after it at speed 2.
        assert_eq!(w.due(300 * MS, Instant::now()), start + Duration::from_millis(250));
        assert_eq!(w.due(600 * MS, Instant::now()), start + Duration::from_millis(400));
        tokio::time::advance(Duration::from_secs(1)).await;
        w.released(600 * MS, start + Duration::from_millis(400), 1);
        w.set_speed(Speed::Factor(1.0));
        // The last release is past: the schedule goes on from now, not in a burst.
        assert_eq!(w.due(700 * MS, Instant::now()), start + Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_moves_what_is_not_released_by_its_length() {
        let start = Instant::now();
        let mut w = TimeWheel::new(Speed::Factor(1.0), start, None, 1.0, 0);
        assert_eq!(w.due(0, Instant::now()), start);
        w.shift(Duration::from_secs(3));
        assert_eq!(w.due(500 * MS, Instant::now()), start + Duration::from_millis(3500));
    }

    /// Releases records recorded at `ts_ms` as the dispatch loop does; their due offsets, ms.
    fn schedule(w: &mut TimeWheel, ts_ms: &[i64]) -> Vec<u128> {
        ts_ms
            .iter()
            .map(|&t| {
                let due = w.due(t * MS, w.start());
                w.released(t * MS, due, w.copies(0));
                (due - w.start()).as_millis()
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn gaps_longer_than_max_gap_are_cut_to_it() {
        let mut w = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0)
            .with_max_gap(Some(Duration::from_millis(500)));
        // Gaps of 100, 5,000 (cut to 500), 200, 60,000 (cut to 500) ms.
        assert_eq!(schedule(&mut w, &[0, 100, 5_100, 5_300, 65_300]), vec![0, 100, 600, 800, 1_300]);
        let mut w = TimeWheel::new(Speed::Factor(2.0), Instant::now(), Some(0), 1.0, 0)
            .with_max_gap(Some(Duration::from_millis(500)));
        assert_eq!(
            schedule(&mut w, &[10_000, 10_400, 20_000]),
            vec![250, 450, 700],
            "from begin too; at speed 2"
        );
        w.set_speed(Speed::Factor(1.0));
        assert_eq!(schedule(&mut w, &[20_100, 90_000]), vec![800, 1_300], "a speed change keeps the cuts");
    }

    #[tokio::test(start_paused = true)]
    async fn qps_scales_the_recorded_gaps_to_the_average_rate() {
        // Evenly spaced at 10 a second: at 20 a second, every gap is halved.
        let even: Vec<i64> = (0..21).map(|i| i * 100).collect();
        let mut w = TimeWheel::new(Speed::Qps(20.0), Instant::now(), None, 1.0, 0);
        assert_eq!(schedule(&mut w, &even), (0..21).map(|i| i * 50).collect::<Vec<u128>>());
        // Two copies of each: the same 20 requests a second from half the records.
        let mut w = TimeWheel::new(Speed::Qps(20.0), Instant::now(), None, 2.0, 0);
        assert_eq!(*schedule(&mut w, &even).last().expect("some"), 2_000);
        // Gaps of 140 and 60 ms in turn, 10 a second on average: the estimate settles, the
        // whole is halved within 1 % and the late gaps keep their 140/60 shape.
        let uneven: Vec<i64> = (0..2001).map(|i| i * 100 + if i % 2 == 1 { 40 } else { 0 }).collect();
        let mut w = TimeWheel::new(Speed::Qps(20.0), Instant::now(), None, 1.0, 0);
        let due = schedule(&mut w, &uneven);
        assert!((99_000..=101_000).contains(&due[2000]), "2,000 gaps at 20 a second: {} ms", due[2000]);
        assert!(due.windows(2).all(|p| p[0] <= p[1]), "in the recorded order");
        assert_eq!((due[1999] - due[1998], due[2000] - due[1999]), (70, 30));
        // A live change to qps goes on from the last record released.
        let mut w = TimeWheel::new(Speed::Factor(1.0), Instant::now(), None, 1.0, 0);
        assert_eq!(schedule(&mut w, &[0, 100, 200]), vec![0, 100, 200]);
        w.set_speed(Speed::Qps(100.0));
        assert_eq!(schedule(&mut w, &[300, 400]), vec![210, 220]);
    }

    #[tokio::test(start_paused = true)]
    async fn qps_holds_its_rate_over_a_recording_with_a_long_silence() {
        // 100 records 10 ms apart, 10 s of silence, 100 more; looped pass after pass (each
        // pass a mean gap after the last). The average so far would make the silence
        // shrink and the burst after it run fast; the even schedule holds the job at qps.
        let pass: Vec<i64> = (0..100).map(|i| i * 10).chain((0..100).map(|i| 10_990 + i * 10)).collect();
        let length = 11_980 + 11_980 / 199;
        let looped: Vec<i64> = (0..25).flat_map(|p| pass.iter().map(move |t| t + p * length)).collect();
        for (qps, rate) in [(200.0, 1.0), (200.0, 2.0), (37.0, 1.0)] {
            let mut w = TimeWheel::new(Speed::Qps(qps), Instant::now(), None, rate, 0);
            let due = schedule(&mut w, &looped);
            let requests = |secs: u128| due.iter().filter(|&&d| d < secs * 1000).count() as f64 * rate;
            for secs in [3, 8, 20] {
                let want = qps * secs as f64;
                let got = requests(secs);
                assert!(
                    (got - want).abs() <= 0.02 * want,
                    "qps {qps} × {rate}: {got} in {secs} s, not {want}"
                );
            }
            assert!(due.windows(2).all(|p| p[0] <= p[1]), "in the recorded order");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn qps_after_a_pause_or_a_slow_source_goes_on_from_now() {
        let mut w = TimeWheel::new(Speed::Qps(100.0), Instant::now(), None, 1.0, 0);
        let start = w.start();
        assert_eq!(schedule(&mut w, &[0, 10, 20]), vec![0, 10, 20]);
        w.shift(Duration::from_secs(1));
        assert_eq!(schedule(&mut w, &[30]), vec![1_030], "a pause moves the even schedule too");
        // The source was silent for 5 s of wall time: no burst of catching up.
        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        let due = w.due(40 * MS, now);
        assert!(due >= now - QPS_SHAPE && due - start < Duration::from_secs(7), "{:?}", due - start);
    }

    #[test]
    fn whole_rates_copy_exactly() {
        let w = TimeWheel::new(Speed::Max, Instant::now(), None, 2.0, 7);
        assert!((0..1000).all(|i| w.copies(i) == 2));
    }

    #[test]
    fn fractional_rates_sample_deterministically() {
        let w = TimeWheel::new(Speed::Max, Instant::now(), None, 0.3, 42);
        let picks: Vec<u32> = (0..10_000).map(|i| w.copies(i)).collect();
        let n: u32 = picks.iter().sum();
        assert!((2_850..=3_150).contains(&n), "{n}");
        let again: Vec<u32> = (0..10_000).map(|i| w.copies(i)).collect();
        assert_eq!(picks, again);
        let other = TimeWheel::new(Speed::Max, Instant::now(), None, 0.3, 43);
        assert_ne!(picks, (0..10_000).map(|i| other.copies(i)).collect::<Vec<_>>());
        let two_and_half = TimeWheel::new(Speed::Max, Instant::now(), None, 2.5, 1);
        let n: u32 = (0..10_000).map(|i| two_and_half.copies(i)).sum();
        assert!((24_700..=25_300).contains(&n), "{n}");
    }
}
