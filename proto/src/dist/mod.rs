//! Distributions of µs values: what a histogram must answer (quantiles, mean, counts below a
//! bound) and its two forms.
//!
//! - [`Sparse`], per endpoint: only the buckets that hold values are stored, so an endpoint
//!   seen once costs a few dozen bytes, not the ~40 KB of a full HdrHistogram. Buckets are
//!   exact below 256 µs and 1/128 of a power of two above (at most 0.8 % wide); min, max and
//!   the sum are kept exactly. Recording, merging, encoding and decoding cost follows the
//!   number of buckets in use.
//! - [`Hdr`], for the job's totals: an HdrHistogram with 3 significant figures (0.1 %).
//!
//! A profile of a replay with every path distinct showed a third of all CPU time in the
//! kernel zeroing pages for growing full histograms per endpoint; its figures are in
//! this file's git history.

use crate::pb;

mod hdr;

pub use hdr::Hdr;

/// Largest value a distribution holds, µs (60 s); longer values are clamped to it.
pub const MAX_MICROS: u64 = 60_000_000;

/// What reports, thresholds and sinks ask of a distribution.
pub trait Dist: Clone + Default + std::fmt::Debug {
    /// Records `v` (callers clamp it to 1..=[`MAX_MICROS`]).
    fn record(&mut self, v: u64);
    /// Adds `other` into `self`: merging two halves gives the whole.
    fn add(&mut self, other: &Self);
    /// Back to empty, keeping memory.
    fn reset(&mut self);
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Smallest and largest value; 0 when empty.
    fn min(&self) -> u64;
    fn max(&self) -> u64;
    /// 0.0 when empty.
    fn mean(&self) -> f64;
    /// The value at quantile `q` (0..=1); 0 when empty.
    fn value_at_quantile(&self, q: f64) -> u64;
    /// How many values are at most `v` (values sharing `v`'s bucket count as at most `v`).
    fn count_at_or_below(&self, v: u64) -> u64;
}

/// Values below this have a bucket each.
const LINEAR: u64 = 256;
/// Buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 7;
const SUB: u32 = 1 << SUB_BITS;
/// One past the largest bucket index (the bucket of [`MAX_MICROS`] and below).
pub const BUCKETS: u32 = bucket(MAX_MICROS) + 1;
// A wire `Distribution` holds at most this many buckets.
const _: () = assert!(BUCKETS < 3_000);

/// The bucket holding `v`.
const fn bucket(v: u64) -> u32 {
    if v < LINEAR {
        return v as u32;
    }
    // v >> shift is in [SUB, 2 * SUB): the top SUB_BITS + 1 bits of v.
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    LINEAR as u32 + (shift - 1) * SUB + ((v >> shift) as u32 - SUB)
}

/// The largest value in bucket `b`.
const fn highest(b: u32) -> u64 {
    if (b as u64) < LINEAR {
        return b as u64;
    }
    let shift = (b - LINEAR as u32) / SUB + 1;
    let top = (b - LINEAR as u32) % SUB + SUB;
    ((top as u64 + 1) << shift) - 1
}

/// A histogram storing only its non-empty buckets, sorted.
///
/// Bucket indices (u16: [`BUCKETS`] < 3,000) and counts are two vectors. Recording appends
/// the value's bucket to a short unsorted list; when that list is as long as the sorted one
/// (and at least 32), it is sorted and merged in one pass. Memory stays within
/// about twice the buckets in use, and a record is a push, not a search and an insert into
/// the middle: a replay's profile had that search and insert as its largest user-space cost
/// per request (measured in this file's git history).
/// Readers see the pending values too: folded into a copy when any are waiting;
/// [`EndpointStats::settle`] folds them in place before a report is encoded.
///
/// [`EndpointStats::settle`]: crate::stats::EndpointStats
#[derive(Clone, Debug, Default)]
pub struct Sparse {
    /// Bucket indices in use, increasing.
    keys: Vec<u16>,
    /// The count of each bucket in `keys`, none zero.
    counts: Vec<u64>,
    /// Buckets recorded since the last fold, one per value, in arrival order.
    pending: Vec<u16>,
    len: u64,
    min: u64,
    max: u64,
    sum: u64,
}

/// Values recorded before the first fold (and the least that waits between two).
const PENDING_MIN: usize = 32;

impl PartialEq for Sparse {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.settled(), other.settled());
        (&a.keys, &a.counts, a.len, a.min, a.max, a.sum) == (&b.keys, &b.counts, b.len, b.min, b.max, b.sum)
    }
}

impl Eq for Sparse {}

impl Sparse {
    /// Folds the values waiting unsorted into the sorted buckets.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        let runs = pending.chunk_by(|a, b| a == b).map(|run| (run[0], run.len() as u64));
        self.merge(runs, pending.len());
        pending.clear();
        self.pending = pending;
    }

    /// `self`, with nothing pending: borrowed when nothing is.
    fn settled(&self) -> std::borrow::Cow<'_, Sparse> {
        if self.pending.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut copy = self.clone();
        copy.settle();
        std::borrow::Cow::Owned(copy)
    }

    /// Adds increasing (bucket, count) pairs into the sorted buckets, in one pass.
    /// At most `more` of them are new buckets.
    fn merge(&mut self, theirs: impl Iterator<Item = (u16, u64)>, more: usize) {
        let n = self.keys.len();
        let (mut keys, mut counts) = (Vec::with_capacity(n + more), Vec::with_capacity(n + more));
        let mut i = 0;
        for (b, y) in theirs {
            while i < n && self.keys[i] < b {
                keys.push(self.keys[i]);
                counts.push(self.counts[i]);
                i += 1;
            }
            if i < n && self.keys[i] == b {
                keys.push(b);
                counts.push(self.counts[i] + y);
                i += 1;
            } else {
                keys.push(b);
                counts.push(y);
            }
        }
        keys.extend_from_slice(&self.keys[i..]);
        counts.extend_from_slice(&self.counts[i..]);
        (self.keys, self.counts) = (keys, counts);
    }

    /// Prefetches the fields recording touches (see [`crate::stats::EndpointStats::prefetch`]).
    pub fn prefetch(&self) {
        crate::hint::prefetch(&self.pending);
        crate::hint::prefetch(&self.keys);
        crate::hint::prefetch(&self.len);
        crate::hint::prefetch(&self.sum);
    }

    /// Prefetches where the next value will be kept: reads this histogram's fields, so call
    /// it once [`Sparse::prefetch`] had time to bring them.
    pub fn prefetch_pending(&self) {
        if let Some(last) = self.pending.last() {
            crate::hint::prefetch(last);
        }
    }

    /// (bucket, count) pairs in increasing bucket order (of the folded buckets only).
    fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.keys.iter().map(|&k| u32::from(k)).zip(self.counts.iter().copied())
    }

    fn add_extremes(&mut self, len: u64, min: u64, max: u64, sum: u64) {
        self.min = if self.len == 0 { min } else { self.min.min(min) };
        self.max = self.max.max(max);
        self.len += len;
        self.sum = self.sum.saturating_add(sum);
    }

    pub fn to_wire(&self) -> pb::Distribution {
        let s = self.settled();
        pb::Distribution {
            bucket: s.keys.iter().map(|&k| u32::from(k)).collect(),
            count: s.counts.clone(),
            min: s.min,
            max: s.max,
            sum: s.sum,
        }
    }

    /// Checks what a peer sent: buckets in range and strictly increasing, counts that add up.
    pub fn from_wire(w: &pb::Distribution) -> Result<Self, String> {
        if w.bucket.len() != w.count.len() {
            return Err(format!("{} buckets but {} counts", w.bucket.len(), w.count.len()));
        }
        let mut keys: Vec<u16> = Vec::with_capacity(w.bucket.len());
        let mut len = 0u64;
        for (&b, &n) in w.bucket.iter().zip(&w.count) {
            let key = u16::try_from(b).ok().filter(|&k| u32::from(k) < BUCKETS);
            let Some(key) = key.filter(|&k| keys.last().is_none_or(|&prev| prev < k) && n > 0) else {
                return Err(format!("bucket {b} (count {n}) out of range or order"));
            };
            len = len.checked_add(n).ok_or("counts overflow")?;
            keys.push(key);
        }
        if len > 0 && (w.min > w.max || w.max > MAX_MICROS) {
            return Err(format!("min {} and max {} do not fit", w.min, w.max));
        }
        let counts = w.count.clone();
        Ok(Self { keys, counts, pending: Vec::new(), len, min: w.min, max: w.max, sum: w.sum })
    }
}

impl Dist for Sparse {
    fn record(&mut self, v: u64) {
        // A bucket index fits a u16: BUCKETS < 3,000 (asserted above).
        self.pending.push(bucket(v.min(MAX_MICROS)) as u16);
        if self.pending.len() >= self.keys.len().max(PENDING_MIN) {
            self.settle();
        }
        self.add_extremes(1, v, v, v);
    }

    fn add(&mut self, other: &Self) {
        if other.len == 0 {
            return;
        }
        self.settle();
        let other = other.settled();
        self.merge(other.keys.iter().copied().zip(other.counts.iter().copied()), other.keys.len());
        self.add_extremes(other.len, other.min, other.max, other.sum);
    }

    fn reset(&mut self) {
        self.keys.clear();
        self.counts.clear();
        self.pending.clear();
        (self.len, self.min, self.max, self.sum) = (0, 0, 0, 0);
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn min(&self) -> u64 {
        self.min
    }

    fn max(&self) -> u64 {
        self.max
    }

    fn mean(&self) -> f64 {
        if self.len == 0 { 0.0 } else { self.sum as f64 / self.len as f64 }
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        if self.len == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.len as f64).ceil() as u64).clamp(1, self.len);
        let mut seen = 0;
        for (b, n) in self.settled().buckets() {
            seen += n;
            if seen >= rank {
                return highest(b).clamp(self.min, self.max);
            }
        }
        self.max
    }

    fn count_at_or_below(&self, v: u64) -> u64 {
        let last = bucket(v.min(MAX_MICROS));
        self.settled().buckets().take_while(|&(b, _)| b <= last).map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_low_and_under_one_percent_wide_above() {
        for v in [0, 1, 255, 256, 257, 1_000, 12_345, 999_999, MAX_MICROS] {
            let b = bucket(v);
            assert!(highest(b) >= v, "{v} is in its bucket");
            assert!(b == 0 || highest(b - 1) < v, "{v} is not in the bucket before");
            assert!((highest(b) - v) as f64 <= v as f64 / 128.0, "{v}: bucket top {}", highest(b));
        }
        for v in 0..LINEAR {
            assert_eq!(highest(bucket(v)), v);
        }
    }

    #[test]
    fn sparse_quantiles_follow_the_hdr_ones_within_a_bucket() {
        let (mut s, mut h) = (Sparse::default(), Hdr::default());
        for i in 0..10_000u64 {
            let v = 50 + (i * 7919) % 40_000;
            s.record(v);
            h.record(v);
        }
        assert_eq!((s.len(), s.min()), (h.len(), h.min()));
        assert!(s.max() <= h.max() && h.max() - s.max() <= s.max() / 1000, "{} {}", s.max(), h.max());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (a, b) = (s.value_at_quantile(q) as f64, h.value_at_quantile(q) as f64);
            assert!((a - b).abs() <= b / 100.0, "q {q}: sparse {a}, hdr {b}");
        }
        assert!((s.mean() - h.mean()).abs() < h.mean() / 1000.0);
        let (a, b) = (s.count_at_or_below(20_000) as f64, h.count_at_or_below(20_000) as f64);
        assert!((a - b).abs() <= 10_000.0 / 100.0, "{a} vs {b}");
    }

    #[test]
    fn sparse_merging_two_halves_equals_the_whole_and_the_wire_keeps_it() {
        let (mut whole, mut a, mut b) = (Sparse::default(), Sparse::default(), Sparse::default());
        for i in 0..1_000u64 {
            let v = 1 + i * i % 70_000;
            whole.record(v);
            if i % 3 == 0 { a.record(v) } else { b.record(v) }
        }
        a.add(&b);
        assert_eq!(a, whole);
        assert_eq!(Sparse::from_wire(&whole.to_wire()), Ok(whole));
        let mut one = Sparse::default();
        one.record(4_711);
        assert_eq!(one.to_wire().bucket.len(), 1, "an endpoint seen once holds one bucket");
    }

    /// The buckets as a plain map built from the values: what a `Sparse` must hold.
    fn reference(values: impl Iterator<Item = u64>) -> Vec<(u32, u64)> {
        let mut m = std::collections::BTreeMap::new();
        values.for_each(|v| *m.entry(bucket(v)).or_insert(0u64) += 1);
        m.into_iter().collect()
    }

    #[test]
    fn values_waiting_unsorted_are_seen_by_every_reader_and_memory_stays_near_the_buckets() {
        let values = |n: u64| (0..n).map(|i| 1 + (i * 2_654_435_761) % 900_000);
        for n in [1, 31, 32, 33, 100, 1_000, 5_000] {
            let mut s = Sparse::default();
            values(n).for_each(|v| s.record(v));
            assert!(s.pending.len() <= s.keys.len().max(PENDING_MIN), "{n}: {} waiting", s.pending.len());
            let wire = s.to_wire();
            let held: Vec<(u32, u64)> = wire.bucket.iter().copied().zip(wire.count.iter().copied()).collect();
            assert_eq!(held, reference(values(n)), "{n} values, some not folded yet");
            let (p50, below) = (s.value_at_quantile(0.5), s.count_at_or_below(450_000));
            let mut settled = s.clone();
            settled.settle();
            assert!(settled.pending.is_empty());
            assert_eq!(settled, s, "settling changes nothing a reader sees");
            assert_eq!((settled.value_at_quantile(0.5), settled.count_at_or_below(450_000)), (p50, below));
            // Adding a histogram with values still waiting, into one with some too.
            let mut twice = s.clone();
            twice.add(&s);
            let doubled: Vec<(u32, u64)> =
                reference(values(n)).into_iter().map(|(b, c)| (b, 2 * c)).collect();
            let w = twice.to_wire();
            assert_eq!(w.bucket.iter().copied().zip(w.count.iter().copied()).collect::<Vec<_>>(), doubled);
            assert_eq!(twice.len(), 2 * n);
        }
    }

    /// A histogram from the wire is checked before the deserializer sizes anything by its
    /// header: a hostile one is an error, not gigabytes.
    #[test]
    fn a_histogram_header_out_of_bounds_is_refused_before_it_is_decoded() {
        let mut h = Hdr::default();
        h.record(1_500);
        let good = h.to_wire();
        assert_eq!(Hdr::from_wire(&good).map(|d| d.len()), Ok(1));
        let set = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            Hdr::from_wire(&b)
        };
        let compressed = set(0, &0x1c84_9314u32.to_be_bytes()).expect_err("deflate");
        assert!(compressed.contains("only plain"), "{compressed}");
        assert!(set(4, &u32::MAX.to_be_bytes()).expect_err("payload").contains("payload"));
        assert!(set(12, &5u32.to_be_bytes()).expect_err("digits").contains("out of bounds"));
        assert!(set(24, &(u64::MAX / 2).to_be_bytes()).expect_err("range").contains("out of bounds"));
        assert!(Hdr::from_wire(&good[..20]).is_err());
    }

    #[test]
    fn a_bad_distribution_from_the_wire_is_an_error() {
        let mut s = Sparse::default();
        s.record(10);
        s.record(20);
        let good = s.to_wire();
        let mut unordered = good.clone();
        unordered.bucket.reverse();
        let mut short = good.clone();
        short.count.pop();
        let mut far = good.clone();
        far.bucket[1] = BUCKETS;
        for bad in [unordered, short, far] {
            assert!(Sparse::from_wire(&bad).is_err(), "{bad:?}");
        }
        assert!(Hdr::from_wire(&[1, 2, 3]).is_err());
    }
}
