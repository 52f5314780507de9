//! What is kept of production traffic: a deterministic sample of it, with chosen headers
//! redacted. Both act on the recording only; what is forwarded is never changed.
//!
//! - **Sampling** (`--sample 0.1`) keeps an exchange when the hash of its key falls under
//!   the rate. With `--sample-key HEADER` the key is that header's value (a session
//!   cookie, a user id), so a session is recorded whole or not at all; without it, each
//!   exchange is drawn on its own.
//! - **Redaction** (`--redact HEADER`) replaces a header's value by `redacted:` and a keyed
//!   hash of it (HMAC-SHA256 under `REPRISE_REDACT_KEY`, cut to 128 bits). The same value
//!   always gives the same hash under the same key, so a `[[substitute]]` table can map
//!   each recorded token to a staging one, and the value cannot be found from its hash
//!   without the key.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::{HeaderMap, HeaderName};
use reprise_proto::expected::{fnv_start, fnv1a};

/// The environment variable that holds redaction's key.
pub const REDACT_KEY_VAR: &str = "REPRISE_REDACT_KEY";

/// Which exchanges are recorded.
#[derive(Debug)]
pub struct Sample {
    /// The share kept, in (0, 1].
    pub rate: f64,
    /// The header whose value decides (all or none of a session); without it, each
    /// exchange is drawn by its sequence number.
    pub key: Option<HeaderName>,
    seq: AtomicU64,
}

impl Sample {
    pub fn new(rate: f64, key: Option<HeaderName>) -> Self {
        Sample { rate, key, seq: AtomicU64::new(0) }
    }

    /// Whether the exchange with these request headers is recorded.
    pub fn keeps(&self, headers: &HeaderMap) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        let hash = match self.key.as_ref().and_then(|k| headers.get(k)) {
            Some(v) => mix(fnv1a(fnv_start(), v.as_bytes())),
            None => mix(self.seq.fetch_add(1, Relaxed)),
        };
        ((hash >> 11) as f64 / (1u64 << 53) as f64) < self.rate
    }
}

/// splitmix64's finalizer: spreads a hash or a counter over the whole range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Headers whose recorded values are replaced by their keyed hash.
pub struct Redact {
    names: Vec<HeaderName>,
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Redact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redact").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Redact {
    pub fn new(names: Vec<HeaderName>, key: &[u8]) -> Self {
        Redact { names, key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key) }
    }

    /// What is recorded of `name`'s `value`: its keyed hash when `name` is redacted.
    pub fn value(&self, name: &HeaderName, value: &[u8]) -> Option<String> {
        self.names.contains(name).then(|| self.hash(value))
    }

    fn hash(&self, value: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.key, value);
        let mut s = String::from("redacted:");
        for b in &tag.as_ref()[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(name, value.parse().expect("a value"));
        h
    }

    /// A session is kept whole or not at all, and about the rate of sessions is kept.
    #[test]
    fn sampling_by_key_keeps_whole_sessions_at_about_the_rate() {
        let s = Sample::new(0.1, Some(HeaderName::from_static("x-session")));
        let kept = (0..10_000).filter(|i| s.keeps(&with("x-session", &format!("s{i}")))).count();
        assert!((800..1200).contains(&kept), "{kept} of 10000 at 0.1");
        for i in 0..100 {
            let h = with("x-session", &format!("s{i}"));
            let first = s.keeps(&h);
            assert!((0..5).all(|_| s.keeps(&h) == first), "session s{i} split");
        }
        let unkeyed = Sample::new(0.5, None);
        let kept = (0..10_000).filter(|_| unkeyed.keeps(&HeaderMap::new())).count();
        assert!((4500..5500).contains(&kept), "{kept} of 10000 at 0.5");
    }

    /// A redacted value is the same hash each time under one key, another under another
    /// key, and never the value itself; other headers are left alone.
    #[test]
    fn redaction_is_a_stable_keyed_hash() {
        let auth = HeaderName::from_static("authorization");
        let r = Redact::new(vec![auth.clone()], b"k1");
        let a = r.value(&auth, b"Bearer secret").expect("redacted");
        assert!(a.starts_with("redacted:") && !a.contains("secret"), "{a}");
        assert_eq!(r.value(&auth, b"Bearer secret"), Some(a.clone()));
        assert_eq!(r.value(&HeaderName::from_static("accept"), b"*/*"), None);
        let other = Redact::new(vec![auth.clone()], b"k2").value(&auth, b"Bearer secret");
        assert_ne!(other, Some(a));
    }
}
