//! Response comparison's counts for one endpoint (issue 13), as a replayer records them and
//! the dispatcher merges them, with their wire form (`pb::CompareDelta`).
//!
//! Noise is cancelled as Diffy does, and decided at the end. For each request a replayer
//! gives the fields where the candidate differed from the baseline and, in live mode, those
//! where the two baselines differed from each other. A field is **noisy** for the endpoint
//! when the baselines differ on it at least half as often as the candidate differs from
//! them ([`FieldCounts::is_noisy`]): a random id or a clock differs between any two answers,
//! a regression only in the candidate's. Whether a request differs depends on that, which is
//! known only once all requests are in, so requests are kept by their *signature* (the set
//! of fields that differed from the baseline and not between the baselines in the same
//! request) with a count, and a request differs when its signature holds a field that is
//! not noisy. Memory is bounded: [`MAX_FIELDS`] fields and [`MAX_SIGNATURES`] signatures per
//! endpoint; past the last, a request is judged when it comes, with the noise known then.

use std::collections::BTreeMap;

use crate::pb;

/// Largest `max_body` a job may set: each of a connection's three answers may hold this much.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;
/// Fields counted apart per endpoint; the rest count as [`OTHER_FIELDS`].
pub const MAX_FIELDS: usize = 128;
/// Distinct signatures kept per endpoint.
pub const MAX_SIGNATURES: usize = 256;
/// Example pairs kept per field.
pub const SAMPLES: usize = 3;
/// Longest example value, in bytes (cut at a character boundary, `…` added).
pub const SAMPLE_BYTES: usize = 120;
/// Longest field name kept, in bytes (a longer JSON path is cut, and counts with the others
/// cut the same).
pub const FIELD_BYTES: usize = 256;
/// The field the fields past [`MAX_FIELDS`] count under.
pub const OTHER_FIELDS: &str = "(other fields)";

/// A difference seen in one request: the field, and an example of each side (`None`: the
/// field was missing there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    pub field: &'a str,
    pub left: Option<&'a str>,
    pub right: Option<&'a str>,
}

/// One example of a difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub left: Option<String>,
    pub right: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldCounts {
    /// Requests where the candidate differed from the baseline on this field.
    pub differing: u64,
    /// Requests where the two baselines differed on it (live mode).
    pub noise: u64,
    pub samples: Vec<Sample>,
}

impl FieldCounts {
    /// The baselines differ on this field at least half as often as the candidate does.
    pub fn is_noisy(&self) -> bool {
        self.noise > 0 && self.noise.saturating_mul(2) >= self.differing
    }
}

/// One endpoint's comparison counts over an interval or a whole job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointCompare {
    pub compared: u64,
    /// Field names by id (a signature holds ids).
    names: Vec<String>,
    counts: Vec<FieldCounts>,
    /// Ids, increasing, and how many requests had exactly that set.
    signatures: BTreeMap<Vec<u32>, u64>,
    /// Requests judged when they came (past the signature cap), and of those, differing.
    pub judged: u64,
    pub judged_differing: u64,
    /// Requests whose bodies were compared by length and hash (longer than `max_body`).
    pub over_max_body: u64,
    /// Requests not compared: one of the three did not answer.
    pub uncompared: u64,
}

/// An endpoint's result, noise decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub compared: u64,
    pub differing: u64,
    /// `differing / compared`, 0 when nothing was compared.
    pub diff_rate: f64,
    /// Fields that differed, most often first (noisy ones included, marked).
    pub fields: Vec<FieldSummary>,
    pub over_max_body: u64,
    /// Requests judged when they came, past the signature cap.
    pub judged: u64,
    /// Requests not compared: one of the three did not answer.
    pub uncompared: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSummary {
    pub field: String,
    pub counts: FieldCounts,
    pub noisy: bool,
}

impl EndpointCompare {
    /// Counts one compared request: `differing` from the baseline, and `noise` between the
    /// two baselines (empty in recorded mode).
    pub fn record(&mut self, differing: &[Seen<'_>], noise: &[&str], over_max_body: bool) {
        self.compared += 1;
        self.over_max_body += u64::from(over_max_body);
        let noise: Vec<u32> = noise.iter().map(|f| self.id(f)).collect();
        for &id in &noise {
            self.counts[id as usize].noise += 1;
        }
        let mut signature = Vec::with_capacity(differing.len());
        for d in differing {
            let id = self.id(d.field);
            let counts = &mut self.counts[id as usize];
            counts.differing += 1;
            if counts.samples.len() < SAMPLES {
                counts.samples.push(Sample { left: d.left.map(cut), right: d.right.map(cut) });
            }
            if !noise.contains(&id) {
                signature.push(id);
            }
        }
        signature.sort_unstable();
        signature.dedup();
        self.add_signature(signature, 1);
    }

    /// Counts a request that could not be compared (one of the three did not answer).
    pub fn uncompared(&mut self) {
        self.uncompared += 1;
    }

    /// The id of `field`, or of [`OTHER_FIELDS`] once the cap is reached.
    fn id(&mut self, field: &str) -> u32 {
        let cut;
        let field = if field.len() > FIELD_BYTES {
            cut = cut_to(field, FIELD_BYTES);
            cut.as_str()
        } else {
            field
        };
        if let Some(i) = self.names.iter().position(|n| n == field) {
            return i as u32;
        }
        let name = if self.names.len() + 1 < MAX_FIELDS { field } else { OTHER_FIELDS };
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i as u32;
        }
        self.names.push(name.to_owned());
        self.counts.push(FieldCounts::default());
        (self.names.len() - 1) as u32
    }

    fn add_signature(&mut self, signature: Vec<u32>, count: u64) {
        if let Some(n) = self.signatures.get_mut(&signature) {
            *n = n.saturating_add(count);
        } else if self.signatures.len() < MAX_SIGNATURES {
            self.signatures.insert(signature, count);
        } else {
            self.judged = self.judged.saturating_add(count);
            if self.differs(&signature) {
                self.judged_differing = self.judged_differing.saturating_add(count);
            }
        }
    }

    /// A request with this signature differs: one of its fields is not noisy.
    fn differs(&self, signature: &[u32]) -> bool {
        signature.iter().any(|&id| !self.counts[id as usize].is_noisy())
    }

    pub fn merge(&mut self, other: &EndpointCompare) {
        // Saturating: counts come from replayers, which cannot be trusted to stay in range.
        self.compared = self.compared.saturating_add(other.compared);
        self.over_max_body = self.over_max_body.saturating_add(other.over_max_body);
        self.uncompared = self.uncompared.saturating_add(other.uncompared);
        self.judged = self.judged.saturating_add(other.judged);
        self.judged_differing = self.judged_differing.saturating_add(other.judged_differing);
        let ids: Vec<u32> = other.names.iter().map(|n| self.id(n)).collect();
        for (from, counts) in other.counts.iter().enumerate() {
            let mine = &mut self.counts[ids[from] as usize];
            mine.differing = mine.differing.saturating_add(counts.differing);
            mine.noise = mine.noise.saturating_add(counts.noise);
            let room = SAMPLES.saturating_sub(mine.samples.len());
            mine.samples.extend(counts.samples.iter().take(room).cloned());
        }
        for (signature, &count) in &other.signatures {
            let mut mapped: Vec<u32> = signature.iter().map(|&id| ids[id as usize]).collect();
            mapped.sort_unstable();
            mapped.dedup();
            self.add_signature(mapped, count);
        }
    }

    /// The result, with noise decided on everything counted so far.
    pub fn summary(&self) -> Summary {
        let differing = self
            .signatures
            .iter()
            .filter(|(s, _)| self.differs(s))
            .fold(self.judged_differing, |sum, (_, n)| sum.saturating_add(*n));
        let mut fields: Vec<FieldSummary> = self
            .names
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| c.differing > 0 || c.noise > 0)
            .map(|(n, c)| FieldSummary { field: n.clone(), counts: c.clone(), noisy: c.is_noisy() })
            .collect();
        fields
            .sort_by(|a, b| b.counts.differing.cmp(&a.counts.differing).then_with(|| a.field.cmp(&b.field)));
        Summary {
            compared: self.compared,
            differing,
            diff_rate: if self.compared == 0 { 0.0 } else { differing as f64 / self.compared as f64 },
            fields,
            over_max_body: self.over_max_body,
            judged: self.judged,
            uncompared: self.uncompared,
        }
    }

    /// Requests of these counts (a window of them) that differ, with noise decided on
    /// `job`'s counts (the same endpoint's over a whole job) instead of their own: a field
    /// is noise when it is noisy over the job.
    pub fn differing_with_noise_of(&self, job: &EndpointCompare) -> u64 {
        let noisy: Vec<bool> = self
            .names
            .iter()
            .map(|n| job.names.iter().position(|m| m == n).is_some_and(|i| job.counts[i].is_noisy()))
            .collect();
        self.signatures
            .iter()
            .filter(|(s, _)| s.iter().any(|&id| !noisy[id as usize]))
            .fold(self.judged_differing, |sum, (_, n)| sum.saturating_add(*n))
    }

    pub fn reset(&mut self) {
        *self = EndpointCompare::default();
    }

    pub fn to_wire(&self, endpoint: u32) -> pb::CompareDelta {
        pb::CompareDelta {
            endpoint,
            compared: self.compared,
            fields: self.names.clone(),
            field_counts: self
                .counts
                .iter()
                .map(|c| pb::FieldDelta {
                    differing: c.differing,
                    noise: c.noise,
                    samples: c
                        .samples
                        .iter()
                        .map(|s| pb::Sample { left: s.left.clone(), right: s.right.clone() })
                        .collect(),
                })
                .collect(),
            signatures: self
                .signatures
                .iter()
                .map(|(s, n)| pb::Signature { fields: s.clone(), count: *n })
                .collect(),
            judged: self.judged,
            judged_differing: self.judged_differing,
            over_max_body: self.over_max_body,
            uncompared: self.uncompared,
        }
    }

    /// Reads a replayer's delta. What does not hold together (a field index out of range,
    /// counts past the requests compared) is cut to what can be believed, and never more
    /// than the caps is kept: a replayer cannot make the dispatcher grow without bound.
    pub fn from_wire(w: &pb::CompareDelta) -> EndpointCompare {
        let mut out = EndpointCompare {
            compared: w.compared,
            judged: w.judged.min(w.compared),
            over_max_body: w.over_max_body.min(w.compared),
            uncompared: w.uncompared,
            ..EndpointCompare::default()
        };
        out.judged_differing = w.judged_differing.min(out.judged);
        let ids: Vec<u32> = w.fields.iter().map(|n| out.id(n)).collect();
        for (from, counts) in w.field_counts.iter().enumerate().take(ids.len()) {
            let mine = &mut out.counts[ids[from] as usize];
            mine.differing = mine.differing.saturating_add(counts.differing).min(w.compared);
            mine.noise = mine.noise.saturating_add(counts.noise).min(w.compared);
            let room = SAMPLES.saturating_sub(mine.samples.len());
            mine.samples.extend(
                counts
                    .samples
                    .iter()
                    .take(room)
                    .map(|s| Sample { left: s.left.as_deref().map(cut), right: s.right.as_deref().map(cut) }),
            );
        }
        // Requests judged at once are not among the signatures.
        let mut counted = out.judged;
        for s in &w.signatures {
            if s.fields.iter().any(|&id| id as usize >= ids.len()) {
                continue;
            }
            let count = s.count.min(w.compared - counted);
            counted += count;
            let mut mapped: Vec<u32> = s.fields.iter().map(|&id| ids[id as usize]).collect();
            mapped.sort_unstable();
            mapped.dedup();
            out.add_signature(mapped, count);
        }
        out
    }
}

/// `text` cut to [`SAMPLE_BYTES`] at a character boundary, with `…` when cut.
pub fn cut(text: &str) -> String {
    cut_to(text, SAMPLE_BYTES)
}

fn cut_to(text: &str, bytes: usize) -> String {
    if text.len() <= bytes {
        return text.to_owned();
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(field: &str) -> Seen<'_> {
        Seen { field, left: Some("1"), right: Some("2") }
    }

    /// The test issue 13 names, in small: primary and secondary answer with a random id and
    /// timestamp, the candidate also changes `$.price` in 1 request of 10.
    /// A part of a job (a window of it) is judged with the job's noise: `$.ts` noisy over
    /// the job is noise in a window where the baselines happened to agree on it, and
    /// `$.price`, noise in the window alone, is not over the job.
    #[test]
    fn a_part_is_judged_with_the_noise_of_the_whole() {
        let mut job = EndpointCompare::default();
        for _ in 0..10 {
            job.record(&[seen("$.ts"), seen("$.price")], &["$.ts"], false);
        }
        let mut part = EndpointCompare::default();
        part.record(&[seen("$.ts")], &[], false);
        part.record(&[seen("$.price")], &["$.price"], false);
        part.record(&[], &[], false);
        assert_eq!(part.summary().differing, 1, "on its own noise: the ts request differs");
        assert_eq!(part.differing_with_noise_of(&job), 0, "ts is noise, price was noise in it");
        job.record(&[seen("$.price")], &[], false);
        part.record(&[seen("$.price")], &[], false);
        assert_eq!(part.differing_with_noise_of(&job), 1);
    }

    #[test]
    fn random_fields_are_noise_and_a_real_change_is_counted() {
        let mut e = EndpointCompare::default();
        for i in 0..100 {
            // The timestamp has ms resolution: primary and secondary agree on it 7 times in
            // 10, and the candidate differs from primary about as often.
            let ts_noise = i % 10 < 3;
            let ts_differs = i % 10 >= 6;
            let mut differing = vec![seen("$.request_id")];
            if ts_differs {
                differing.push(seen("$.ts"));
            }
            if i % 10 == 0 {
                differing.push(seen("$.price"));
            }
            let mut noise = vec!["$.request_id"];
            if ts_noise {
                noise.push("$.ts");
            }
            e.record(&differing, &noise, false);
        }
        let s = e.summary();
        assert_eq!((s.compared, s.differing), (100, 10));
        assert!((s.diff_rate - 0.1).abs() < 1e-9);
        let field = |name: &str| s.fields.iter().find(|f| f.field == name).expect(name);
        assert!(field("$.request_id").noisy);
        assert!(field("$.ts").noisy, "{:?}", field("$.ts"));
        assert!(!field("$.price").noisy);
        assert_eq!(field("$.price").counts.differing, 10);
        assert_eq!(s.fields[0].counts.differing, 100, "most often first");
    }

    #[test]
    fn without_a_second_baseline_every_difference_counts() {
        let mut e = EndpointCompare::default();
        e.record(&[seen("status")], &[], false);
        e.record(&[], &[], false);
        e.record(&[seen("$.a"), seen("$.b")], &[], true);
        let s = e.summary();
        assert_eq!((s.compared, s.differing, s.over_max_body), (3, 2, 1));
        assert_eq!(s.fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["$.a", "$.b", "status"]);
        assert_eq!(
            s.fields[2].counts.samples,
            vec![Sample { left: Some("1".into()), right: Some("2".into()) }]
        );
    }

    /// Halves merged give what the whole gives, and so does the wire.
    #[test]
    fn halves_merged_and_through_the_wire_equal_the_whole() {
        let (mut whole, mut a, mut b) = Default::default();
        let fields = ["status", "$.x", "$.y[*].z", "header:etag"];
        for i in 0..500usize {
            let differing: Vec<Seen<'_>> =
                fields.iter().enumerate().filter(|(k, _)| i % (k + 2) == 0).map(|(_, f)| seen(f)).collect();
            let noise: Vec<&str> = if i % 3 == 0 { vec!["$.x"] } else { vec![] };
            let over = i % 50 == 0;
            let half: &mut EndpointCompare = if i % 2 == 0 { &mut a } else { &mut b };
            if i % 97 == 0 {
                EndpointCompare::uncompared(&mut whole);
                half.uncompared();
                continue;
            }
            EndpointCompare::record(&mut whole, &differing, &noise, over);
            half.record(&differing, &noise, over);
        }
        let mut merged = EndpointCompare::from_wire(&a.to_wire(1));
        merged.merge(&EndpointCompare::from_wire(&b.to_wire(1)));
        let (w, m) = (whole.summary(), merged.summary());
        assert_eq!(
            (m.compared, m.differing, m.over_max_body, m.uncompared),
            (w.compared, w.differing, w.over_max_body, w.uncompared)
        );
        let counts = |s: &Summary| {
            s.fields
                .iter()
                .map(|f| (f.field.clone(), f.counts.differing, f.counts.noise, f.noisy))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&m), counts(&w));
        assert!(w.differing > 0 && w.differing < 500);
        assert_eq!(w.uncompared, 6);
    }

    #[test]
    fn fields_and_signatures_are_capped() {
        let mut e = EndpointCompare::default();
        let names: Vec<String> = (0..400).map(|i| format!("$.f{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            // Two fields a request: many distinct signatures.
            e.record(&[seen(name), seen(&names[(i * 7 + 1) % 400])], &[], false);
        }
        let s = e.summary();
        assert!(s.fields.len() <= MAX_FIELDS, "{}", s.fields.len());
        assert!(s.fields.iter().any(|f| f.field == OTHER_FIELDS));
        assert!(e.signatures.len() <= MAX_SIGNATURES);
        assert_eq!(s.differing, 400, "every request differs, judged late or at once");
    }

    #[test]
    fn a_delta_that_does_not_hold_together_is_cut_to_what_can_be_believed() {
        let w = pb::CompareDelta {
            endpoint: 1,
            compared: 10,
            fields: vec!["$.a".into(), "x".repeat(1000)],
            field_counts: vec![pb::FieldDelta { differing: u64::MAX, noise: 3, samples: vec![] }; 5],
            signatures: vec![
                pb::Signature { fields: vec![0], count: 8 },
                pb::Signature { fields: vec![7], count: 1 },
                pb::Signature { fields: vec![1], count: u64::MAX },
            ],
            judged: 99,
            judged_differing: 99,
            over_max_body: 99,
            uncompared: 2,
        };
        let e = EndpointCompare::from_wire(&w);
        let s = e.summary();
        assert_eq!(s.compared, 10);
        assert!(s.differing <= 10, "{}", s.differing);
        assert!(s.fields.iter().all(|f| f.counts.differing <= 10 && f.field.len() <= FIELD_BYTES + 3));
        assert_eq!((e.judged, e.over_max_body), (10, 10));
    }
}
