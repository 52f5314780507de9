//! Routing: which replayer gets a record. Round-robin by default; FNV or
//! consistent hashing on the record's key keeps a key (a user, a session) on one replayer.
//! Consistent hashing places 128 virtual nodes per replayer on a ring, so when one leaves only
//! its keys move. Records without a key go round-robin under every strategy.

use serde::Deserialize;

/// How records are spread over replayers (`[proxy] hash`, Havok's table name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashStrategy {
    #[default]
    RoundRobin,
    Fnv,
    Consistent,
}

const VNODES: u32 = 128;

#[derive(Clone, Debug)]
pub struct Picker {
    strategy: HashStrategy,
    members: Vec<String>,
    ring: Vec<(u64, usize)>,
    next: usize,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// The order key of a keyed record in an ordered job (`[proxy] ordered`): its key's
/// FNV-1a hash, never 0 (which marks a record without one). Two keys of one hash share a
/// order key at a replayer: their requests wait for each other, which keeps both in order.
pub fn order_key_of(key: &str) -> u64 {
    fnv1a(key.as_bytes()).max(1)
}

/// FNV-1a spreads short, similar keys poorly over the high bits; a 64-bit finalizer
/// (murmur3's fmix64) evens the ring without changing which key maps where on reruns.
fn ring_hash(bytes: &[u8]) -> u64 {
    let mut z = fnv1a(bytes);
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

impl Picker {
    pub fn new(strategy: HashStrategy) -> Self {
        Self { strategy, members: Vec::new(), ring: Vec::new(), next: 0 }
    }

    /// Replaces the membership (ids, in any order); keys on remaining members stay put under
    /// consistent hashing.
    pub fn set_members(&mut self, mut ids: Vec<String>) {
        ids.sort();
        self.ring.clear();
        if self.strategy == HashStrategy::Consistent {
            for (i, id) in ids.iter().enumerate() {
                for v in 0..VNODES {
                    self.ring.push((ring_hash(format!("{id}#{v}").as_bytes()), i));
                }
            }
            self.ring.sort_unstable();
        }
        self.members = ids;
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The replayer for a record with this key, as an index into [`Picker::members`];
    /// `None` when there is none.
    pub fn pick(&mut self, key: Option<&str>) -> Option<usize> {
        if self.members.is_empty() {
            return None;
        }
        let i = match (self.strategy, key) {
            (HashStrategy::Fnv, Some(k)) => (fnv1a(k.as_bytes()) % self.members.len() as u64) as usize,
            (HashStrategy::Consistent, Some(k)) => {
                let h = ring_hash(k.as_bytes());
                let at = self.ring.partition_point(|(p, _)| *p < h);
                self.ring[at % self.ring.len()].1
            }
            _ => self.round_robin(),
        };
        Some(i)
    }

    /// The next member in turn.
    pub fn round_robin(&mut self) -> usize {
        self.next = (self.next + 1) % self.members.len().max(1);
        self.next
    }

    /// Whether a full member may be skipped for another (only without key affinity).
    pub fn may_skip(&self, key: Option<&str>) -> bool {
        key.is_none() || self.strategy == HashStrategy::RoundRobin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of the member picked for `key`.
    fn pick_id(p: &mut Picker, key: &str) -> String {
        let i = p.pick(Some(key)).expect("member");
        p.members()[i].clone()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn round_robin_takes_turns() {
        let mut p = Picker::new(HashStrategy::RoundRobin);
        p.set_members(ids(3));
        let picks: Vec<String> = (0..6).map(|_| pick_id(&mut p, "k")).collect();
        assert_eq!(picks, ["r1", "r2", "r0", "r1", "r2", "r0"]);
    }

    #[test]
    fn hashing_sticks_a_key_to_one_member() {
        for s in [HashStrategy::Fnv, HashStrategy::Consistent] {
            let mut p = Picker::new(s);
            p.set_members(ids(4));
            let first = p.pick(Some("user-7")).expect("member");
            assert!((0..50).all(|_| p.pick(Some("user-7")) == Some(first)));
        }
    }

    #[test]
    fn consistent_hashing_moves_only_the_leavers_keys() {
        let mut p = Picker::new(HashStrategy::Consistent);
        p.set_members(ids(4));
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| pick_id(&mut p, k)).collect();
        p.set_members(vec!["r0".into(), "r1".into(), "r3".into()]);
        for (k, was) in keys.iter().zip(&before) {
            let now = &pick_id(&mut p, k);
            if was != "r2" {
                assert_eq!(now, was, "key {k} moved although its member stayed");
            }
        }
        let on_r2 = before.iter().filter(|m| *m == "r2").count();
        assert!((300..=700).contains(&on_r2), "uneven ring: {on_r2}");
    }

    #[test]
    fn no_members_no_pick() {
        let mut p = Picker::new(HashStrategy::Fnv);
        assert_eq!(p.pick(Some("k")), None);
    }
}
