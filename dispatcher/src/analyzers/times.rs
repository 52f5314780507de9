//! Plausible recorded times. A record dated before `[analyzer] earliest` (default 2000) or
//! more than `[analyzer] max_ahead` (default a day) past now is malformed: replayed at its
//! recorded time, one such record makes a job wait for decades (or, first in a recording,
//! start decades before the rest), showing `0 req/s` all the while. Most often the unit is
//! wrong (seconds read as milliseconds land in 1970), and the error says so.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AnalyzerConfig;
#[cfg(test)]
use crate::config::{EARLIEST_DEFAULT_NS, MAX_AHEAD_DEFAULT};

/// The range of recorded times a job takes.
#[derive(Clone, Copy, Debug)]
pub struct Plausible {
    earliest: i64,
    max_ahead_ns: i64,
}

impl Plausible {
    pub fn new(cfg: &AnalyzerConfig) -> Self {
        let max_ahead_ns = i64::try_from(cfg.max_ahead.0.as_nanos()).unwrap_or(i64::MAX);
        Self { earliest: cfg.earliest.0, max_ahead_ns }
    }

    /// Every time (fetchers tested alone).
    #[cfg(test)]
    pub fn any() -> Self {
        Self { earliest: i64::MIN, max_ahead_ns: i64::MAX }
    }

    /// The latest plausible time now; callers read it once per many records (a clock read
    /// per record would cost more than the check).
    pub fn latest(&self) -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        now.saturating_add(self.max_ahead_ns)
    }

    /// Why `ts` is not plausible, given [`Plausible::latest`]'s `latest`.
    pub fn check(&self, ts: i64, latest: i64) -> Result<(), String> {
        if ts < self.earliest {
            Err(format!(
                "recorded time {} is before [analyzer] earliest = {}; if the recording is that old, set earliest; \
                 if its times are in another unit, set [analyzer] timestamp_unit",
                rfc3339(ts),
                rfc3339(self.earliest)
            ))
        } else if ts > latest {
            Err(format!(
                "recorded time {} is more than [analyzer] max_ahead = {} past now; if that is meant, raise max_ahead; \
                 if its times are in another unit, set [analyzer] timestamp_unit",
                rfc3339(ts),
                humantime::format_duration(Duration::from_nanos(self.max_ahead_ns.max(0) as u64))
            ))
        } else {
            Ok(())
        }
    }
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_2000_or_over_a_day_ahead_are_refused_with_what_to_set() {
        let p = Plausible::new(&AnalyzerConfig::default());
        let latest = p.latest();
        let now = latest - MAX_AHEAD_DEFAULT.as_nanos() as i64;
        assert!(p.check(now, latest).is_ok());
        assert!(p.check(EARLIEST_DEFAULT_NS, latest).is_ok());
        let old = p.check(-5_000_000, latest).expect_err("1969");
        assert!(old.contains("1969-12-31T23:59:59.995Z") && old.contains("earliest = 2000-01-01"), "{old}");
        assert!(old.contains("timestamp_unit"), "{old}");
        let far = p.check(4_102_444_800_000_000_000, latest).expect_err("2100");
        assert!(far.contains("2100-01-01") && far.contains("max_ahead = 1day"), "{far}");
        assert!(Plausible::any().check(i64::MIN, Plausible::any().latest()).is_ok());
    }
}
