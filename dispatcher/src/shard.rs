//! Shards: several dispatchers reading one recording together, each its share
//! (`reprise dispatcher --shard I/N`). Every record of the source belongs to exactly one
//! shard, decided from the source alone, so shards need not talk to split it:
//! - parts (files of a glob, objects of a bucket) by their place in the sorted list of
//!   names, I of every N, when there are more parts than shards; Kafka partitions by their
//!   ids likewise when there are at least as many partitions as shards. A hash of the
//!   names would not need the shards to list the same parts, but it leaves shards without
//!   any when parts are few (4 files over 3 shards left one shard idle); the shards of a
//!   bounded replay list the same files, and S3 lists consistently;
//! - otherwise every shard reads every part and keeps the records whose routing key
//!   (`[proxy] key`) hashes to it, so a user's session stays on one shard and, with
//!   `ordered`, in order. A record without a key, and a unit that is not a record (a
//!   malformed line, a GoReplay answer), goes by its position in its part.
//!
//! A key's hash is FNV-1a with a salt of its own, reduced to `0..N` by its high bits: replayers are picked by FNV of the same key (`routing`), and without the salt
//! a shard's keys would all share their low bits and land on the same few of its replayers.

use std::fmt;

/// One shard of `count`: `index` in `0..count`. The whole source is shard 0 of 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// The most shards a job may have.
pub const MAX_SHARDS: u32 = 1024;

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl Shard {
    /// The whole source: one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; the error says what is wrong.
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("{count} shards: give 1 to {MAX_SHARDS}"));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count}: shards count from 0, so the last is {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// Whether a record with routing key `key`, unit `unit` of its part, is this shard's.
    pub fn takes_record(self, key: Option<&str>, unit: u64) -> bool {
        match key {
            Some(k) => self.of_hash(salted(k.as_bytes())),
            None => self.takes_unit(unit),
        }
    }

    /// Whether unit `unit` of a part (counted from 1) is this shard's, by position.
    pub fn takes_unit(self, unit: u64) -> bool {
        self.is_whole() || unit % u64::from(self.count) == u64::from(self.index)
    }

    /// What this shard reads of a source of `parts` (sorted): its own parts whole, I of every
    /// N, when there are `enough` of them; else every part, split by record with the shard
    /// returned (the whole source's records split by part need no split inside a part).
    pub fn parts<T>(self, parts: Vec<T>, enough: bool) -> (Vec<T>, Shard) {
        if enough { (self.of_sorted(parts), Shard::WHOLE) } else { (parts, self) }
    }

    /// The parts of `all` (sorted) this shard reads whole: I of every N.
    pub fn of_sorted<T>(self, all: Vec<T>) -> Vec<T> {
        all.into_iter().skip(self.index as usize).step_by(self.count as usize).collect()
    }

    fn of_hash(self, h: u64) -> bool {
        self.is_whole() || ((u128::from(h) * u128::from(self.count)) >> 64) as u32 == self.index
    }
}

/// FNV-1a of `bytes` after a salt of the shards' own.
fn salted(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = fnv::FnvHasher::default();
    h.write(b"reprise-shard\0");
    h.write(bytes);
    // FNV's last step leaves the high bits poorly mixed for short inputs; a final multiply
    // (a 64-bit odd constant) spreads them.
    h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `I/N`, as given on the command line.
impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let how = "give it as INDEX/COUNT, e.g. 0/3 for the first of three shards";
        let (i, n) = s.split_once('/').ok_or_else(|| format!("shard {s:?}: {how}"))?;
        let parse = |v: &str| {
            v.trim().parse::<u32>().map_err(|_| format!("shard {s:?}: {v:?} is not a number; {how}"))
        };
        Shard::new(parse(i)?, parse(n)?)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: u32) -> Vec<Shard> {
        (0..n).map(|i| Shard::new(i, n).expect("shard")).collect()
    }

    #[test]
    fn every_key_name_and_unit_has_exactly_one_shard() {
        for n in [1, 2, 3, 7] {
            let all = shards(n);
            for i in 0..2_000u64 {
                let key = format!("user-{i}");
                assert_eq!(all.iter().filter(|s| s.takes_record(Some(&key), i)).count(), 1, "{key} of {n}");
                assert_eq!(all.iter().filter(|s| s.takes_record(None, i)).count(), 1, "unit {i} of {n}");
            }
            let parts: Vec<i32> = (0..10).collect();
            let mut read: Vec<i32> = all.iter().flat_map(|s| s.of_sorted(parts.clone())).collect();
            read.sort_unstable();
            assert_eq!(read, parts, "each partition read by one of {n} shards");
        }
    }

    /// Keys spread evenly over the shards, and a shard's keys still spread evenly over
    /// replayers picked by FNV of the same key.
    #[test]
    fn keys_spread_evenly_and_independently_of_the_replayers_hash() {
        let all = shards(2);
        let mut per_replayer = [0u32; 2];
        let mut taken = 0;
        for i in 0..10_000 {
            let key = format!("session-{i}");
            if all[0].takes_record(Some(&key), 0) {
                taken += 1;
                let h = {
                    use std::hash::Hasher as _;
                    let mut h = fnv::FnvHasher::default();
                    h.write(key.as_bytes());
                    h.finish()
                };
                per_replayer[(h % 2) as usize] += 1;
            }
        }
        assert!((4_700..5_300).contains(&taken), "shard 0 of 2 took {taken} of 10,000 keys");
        assert!(per_replayer.iter().all(|&n| n > taken * 45 / 100), "{per_replayer:?} of {taken}");
    }

    #[test]
    fn a_shard_is_written_index_over_count() {
        assert_eq!("2/3".parse::<Shard>().expect("shard"), Shard::new(2, 3).expect("shard"));
        assert_eq!(Shard::new(2, 3).expect("shard").to_string(), "2/3");
        assert!("3/3".parse::<Shard>().expect_err("too high").contains("the last is 2"));
        assert!("1".parse::<Shard>().expect_err("no count").contains("INDEX/COUNT"));
        assert!("0/0".parse::<Shard>().expect_err("none").contains("give 1 to"));
        assert!("a/2".parse::<Shard>().expect_err("nan").contains("not a number"));
    }
}
