//! Typed values of the job file that serde has no type for: durations ("250ms", "3s" or a
//! number of ms), instants (epoch ms or RFC 3339), speed (a number or "max"), listen
//! addresses (Go-style ":8080" as Havok writes them, or "host:port").

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration written as "250ms", "1s", "2m" or as a number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "expected a duration like \"3s\" or \"250ms\", or milliseconds")]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(ms) => Ok(Millis(Duration::from_millis(ms))),
            Raw::Text(s) => humantime::parse_duration(&s).map(Millis).map_err(|e| {
                de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write e.g. \"250ms\", \"3s\" or a number of ms"
                ))
            }),
        }
    }
}

/// An instant in Unix nanoseconds, written as epoch milliseconds (Havok) or RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub i64);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "expected epoch milliseconds or an RFC 3339 time like \"2024-05-01T12:00:00Z\""
        )]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(ms) => ms
                .checked_mul(1_000_000)
                .map(Instant)
                .ok_or_else(|| de::Error::custom(format!("{ms} ms is out of range"))),
            Raw::Text(s) => parse_rfc3339_ns(&s).map(Instant).ok_or_else(|| {
                de::Error::custom(format!(
                    "`{s}` is neither epoch milliseconds nor an RFC 3339 time like \"2024-05-01T12:00:00Z\""
                ))
            }),
        }
    }
}

/// Parses an RFC 3339 time into Unix nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim()).ok().and_then(|t| t.timestamp_nanos_opt())
}

/// How fast recorded time passes during replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// `due = start + (t - t0) / factor`.
    Factor(f64),
    /// As fast as the replayers take records.
    Max,
    /// `[job] qps`: recorded gaps scaled so the average arrival rate is this many requests
    /// a second (see `crate::timewheel`). Not a value of `speed` in a job file.
    Qps(f64),
}

impl Default for Speed {
    fn default() -> Self {
        Speed::Factor(1.0)
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}"),
            Speed::Max => f.write_str("max"),
            Speed::Qps(q) => write!(f, "{q} requests/s"),
        }
    }
}

impl<'de> Deserialize<'de> for Speed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "expected a number > 0 (2 = twice as fast) or \"max\"")]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(Speed::Factor(i as f64)),
            Raw::Float(x) => Ok(Speed::Factor(x)),
            Raw::Text(s) if s == "max" => Ok(Speed::Max),
            Raw::Text(s) => Err(de::Error::custom(format!(
                "`{s}` is not a speed; write a number > 0 (2 = twice as fast) or \"max\""
            ))),
        }
    }
}

/// A listen address: "host:port", "\[::1\]:port", or Go-style ":port" (all interfaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

/// Text that is not a listen address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a listen address; write \"127.0.0.1:8080\", \"[::1]:0\" or \":8080\"")]
pub struct AddrError(String);

impl std::str::FromStr for ListenAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
        full.parse::<SocketAddr>().map(ListenAddr).map_err(|_| AddrError(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        d: Option<Millis>,
        i: Option<Instant>,
        s: Option<Speed>,
        a: Option<ListenAddr>,
    }

    fn parse(s: &str) -> Result<T, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_take_text_or_ms() {
        assert_eq!(parse("d = 250").expect("ms").d, Some(Millis(Duration::from_millis(250))));
        assert_eq!(parse("d = \"3s\"").expect("text").d, Some(Millis(Duration::from_secs(3))));
        assert!(parse("d = \"soon\"").expect_err("bad").contains("not a duration"));
    }

    #[test]
    fn instants_take_epoch_ms_or_rfc3339() {
        assert_eq!(parse("i = 1000").expect("ms").i, Some(Instant(1_000_000_000)));
        let t = parse("i = \"1970-01-01T00:00:01.5Z\"").expect("rfc");
        assert_eq!(t.i, Some(Instant(1_500_000_000)));
        assert!(parse("i = \"yesterday\"").expect_err("bad").contains("RFC 3339"));
    }

    #[test]
    fn speed_is_a_number_or_max() {
        assert_eq!(parse("s = 2").expect("int").s, Some(Speed::Factor(2.0)));
        assert_eq!(parse("s = 0.5").expect("float").s, Some(Speed::Factor(0.5)));
        assert_eq!(parse("s = \"max\"").expect("max").s, Some(Speed::Max));
        assert!(parse("s = \"fast\"").expect_err("bad").contains("not a speed"));
    }

    #[test]
    fn listen_addresses_accept_go_style() {
        let a = parse("a = \":8080\"").expect("go").a.expect("set");
        assert_eq!(a.0.port(), 8080);
        assert!(parse("a = \"localhost\"").expect_err("bad").contains("listen address"));
    }
}
