//! [`Hdr`]: the job's totals as an HdrHistogram (see the parent module).

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use super::{Dist, MAX_MICROS};

/// An HdrHistogram of µs with 3 significant figures, sized to the largest value recorded
/// so far (one that has only seen milliseconds is a quarter of the 1 µs..60 s layout).
#[derive(Clone, Debug)]
pub struct Hdr(Histogram<u64>);

impl Default for Hdr {
    fn default() -> Self {
        // invariant: 3 significant figures is within hdrhistogram's 0..=5.
        #[allow(clippy::unwrap_used)]
        let mut h = Histogram::new(3).unwrap();
        h.auto(true);
        Self(h)
    }
}

impl Hdr {
    /// HdrHistogram V2 without deflate: it already run-length encodes the empty buckets, and
    /// compressing every second cost CPU right when requests were due.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // invariant: serializing into a Vec cannot fail for a histogram within its own bounds.
        #[allow(clippy::unwrap_used)]
        V2Serializer::new().serialize(&self.0, &mut out).unwrap();
        out
    }

    /// Checks what a peer sent before anything is allocated for it: the deserializer sizes
    /// its buffers by the header (a 300-byte report once asked it for gigabytes), so only
    /// the plain V2 encoding is taken, with this crate's precision, a range no wider than an
    /// auto-sized histogram of [`MAX_MICROS`] reaches, and a payload the bytes hold.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, String> {
        const V2_PLAIN: u32 = 0x1c84_9313;
        const HEADER: usize = 40;
        let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let be64 = |at: usize| {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        let (Some(cookie), Some(payload), Some(digits), Some(low), Some(high)) =
            (be32(0), be32(4), be32(12), be64(16), be64(24))
        else {
            return Err(format!("histogram of {} bytes: shorter than its header", bytes.len()));
        };
        if cookie != V2_PLAIN {
            return Err(format!("histogram encoding {cookie:#x}: only plain HdrHistogram V2 is taken"));
        }
        if digits > 3 || low == 0 || low > high || high > MAX_MICROS.saturating_mul(1 << 12) {
            return Err(format!("histogram of {digits} digits over {low}..{high}: out of bounds"));
        }
        if payload as usize > bytes.len() - HEADER {
            return Err(format!("histogram payload of {payload} bytes in {} bytes", bytes.len()));
        }
        if let Some(run) = impossible_zero_run(&bytes[HEADER..HEADER + payload as usize]) {
            return Err(format!("histogram payload skips {run} empty buckets: more than a histogram has"));
        }
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .map_err(|e| format!("{e:?}"))?;
        // Re-home into the standard bounds so later merges cannot fail on a foreign histogram.
        let mut h = Self::default();
        h.0.add(&decoded).map_err(|e| format!("{e:?}"))?;
        Ok(h)
    }
}

impl Dist for Hdr {
    fn record(&mut self, v: u64) {
        // `record` grows an auto-sized histogram (`saturating_record` would clamp to its
        // current size); the clamp keeps it within 60 s, so it cannot fail.
        let _ = self.0.record(v.clamp(1, MAX_MICROS));
    }

    fn add(&mut self, other: &Self) {
        // invariant: an auto-sized target grows to fit, so `add` cannot fail.
        #[allow(clippy::unwrap_used)]
        self.0.add(&other.0).unwrap();
    }

    fn reset(&mut self) {
        self.0.reset();
    }

    fn len(&self) -> u64 {
        self.0.len()
    }

    fn min(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.min() }
    }

    fn max(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.max() }
    }

    fn mean(&self) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.mean() }
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.value_at_quantile(q) }
    }

    fn count_at_or_below(&self, v: u64) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.count_between(0, v) }
    }
}

/// The first run of empty buckets in an HdrHistogram V2 payload longer than any histogram
/// has (2^32), if any. The payload is zig-zag LEB128 numbers (at most 9 bytes each, the
/// ninth carrying 8 bits), a negative one a run of empty buckets. hdrhistogram's decoder
/// negates that number unchecked: `i64::MIN` overflows, a panic where overflow is checked.
fn impossible_zero_run(payload: &[u8]) -> Option<i128> {
    let mut at = 0;
    while at < payload.len() {
        let mut n: u64 = 0;
        for i in 0..9 {
            let &b = payload.get(at)?;
            at += 1;
            if i == 8 {
                n |= u64::from(b) << 56;
                break;
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let v = i128::from((n >> 1) as i64 ^ -((n & 1) as i64));
        if v < -(1i128 << 32) {
            return Some(-v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `report` fuzz target: a run of i64::MIN empty buckets made hdrhistogram's
    /// decoder negate it, which panics where overflow is checked (debug builds, fuzzing).
    #[test]
    fn a_payload_skipping_more_buckets_than_exist_is_an_error() {
        let mut h = Hdr::default();
        h.record(1_000);
        let mut bytes = h.to_wire();
        bytes.truncate(40);
        bytes[4..8].copy_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(&[0x02]); // a count of 1
        bytes.extend_from_slice(&[0xff; 9]); // zig-zag u64::MAX: i64::MIN
        let err = Hdr::from_wire(&bytes).expect_err("refused");
        assert!(err.contains("empty buckets"), "{err}");
        assert_eq!(impossible_zero_run(&[0x02, 0x04]), None, "counts");
        assert_eq!(impossible_zero_run(&[0x03]), None, "a run of 2");
    }
}
