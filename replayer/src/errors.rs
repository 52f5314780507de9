//! Which [`ErrorKind`] a failure is (the bounded set a report counts), keeping its cause:
//! the first failure of each kind in a second is logged with its underlying error and
//! everything that error wraps (`connect: Connection refused (os error 111)`), so a count
//! in the report has a reason beside it. The rest of that second's are only counted. The
//! messages come from the network stack, never from a record, so they hold no secrets.

use std::error::Error as StdError;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

pub use reprise_proto::stats::ErrorKind;

type Dyn = dyn StdError + 'static;

/// Calls `f` on `e` and on everything it wraps: its sources, and the errors inside
/// `io::Error`s (which TLS streams nest around a rustls error).
fn any_in_chain(e: &Dyn, f: &mut impl FnMut(&Dyn) -> bool) -> bool {
    if f(e) {
        return true;
    }
    if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
        && any_in_chain(inner, f)
    {
        return true;
    }
    e.source().is_some_and(|s| any_in_chain(s, f))
}

/// Classifies an error from opening a connection (`connecting`) or from an exchange on one,
/// and logs it if it is the first of its kind this second.
pub fn kind_of(e: &(dyn StdError + Send + Sync + 'static), connecting: bool) -> ErrorKind {
    known(classify(e, connecting), e)
}

/// An error whose kind the caller knows, logged as [`kind_of`] logs, and kept as the kind's
/// sample for the next report ([`take_samples`]).
pub fn known(kind: ErrorKind, e: &(dyn StdError + Send + Sync + 'static)) -> ErrorKind {
    if first_this_second(kind) {
        let message = Chain(e).to_string();
        tracing::warn!(kind = kind.as_str(), error = %message, "request failed (the first of its kind this second; the rest are counted)");
        let mut samples = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
        samples[kind as usize] = Some(message.chars().take(SAMPLE_CHARS).collect());
    }
    kind
}

/// The longest sample message sent.
const SAMPLE_CHARS: usize = 300;

/// The last sample of each kind not yet reported (one per kind: bounded).
static SAMPLES: std::sync::Mutex<[Option<String>; ErrorKind::ALL.len()]> =
    std::sync::Mutex::new([const { None }; ErrorKind::ALL.len()]);

/// The samples logged since the last call, one per kind, for a statistics report.
pub fn take_samples() -> Vec<reprise_proto::pb::ErrorSample> {
    let mut samples = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
    ErrorKind::ALL
        .iter()
        .filter_map(|&kind| {
            let message = samples[kind as usize].take()?;
            Some(reprise_proto::pb::ErrorSample { kind: kind.as_str().to_owned(), message })
        })
        .collect()
}

/// The seconds (Unix) in which each kind was last logged.
static LOGGED: [AtomicU64; ErrorKind::ALL.len()] = [const { AtomicU64::new(0) }; ErrorKind::ALL.len()];

fn first_this_second(kind: ErrorKind) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = &LOGGED[kind as usize];
    let seen = last.load(Relaxed);
    seen != now && last.compare_exchange(seen, now, Relaxed, Relaxed).is_ok()
}

/// An error and what it wraps, as one line: `outer: inner: innermost`.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

fn classify(e: &(dyn StdError + Send + Sync + 'static), connecting: bool) -> ErrorKind {
    let e: &Dyn = e;
    if any_in_chain(e, &mut |s| s.is::<rustls::Error>()) {
        return ErrorKind::Tls;
    }
    if connecting {
        return ErrorKind::Connect;
    }
    let reset = any_in_chain(e, &mut |s| {
        s.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            )
        })
    });
    if reset { ErrorKind::Reset } else { ErrorKind::Other }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_nested_in_io_errors_is_tls() {
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let outer = io::Error::other(tls);
        assert_eq!(kind_of(&outer, true), ErrorKind::Tls);
        assert_eq!(kind_of(&outer, false), ErrorKind::Tls);
    }

    #[test]
    fn connection_failures_and_resets_are_told_apart() {
        assert_eq!(kind_of(&io::Error::from(io::ErrorKind::ConnectionRefused), true), ErrorKind::Connect);
        assert_eq!(kind_of(&io::Error::from(io::ErrorKind::ConnectionReset), false), ErrorKind::Reset);
        assert_eq!(kind_of(&io::Error::other("odd"), false), ErrorKind::Other);
    }

    #[test]
    fn the_cause_is_kept_whole_and_logged_once_a_second() {
        let inner = io::Error::from(io::ErrorKind::ConnectionRefused);
        let outer = io::Error::other(Wrapped(inner));
        assert_eq!(Chain(&outer).to_string(), "wrapped: connection refused");
        // Body is not classified by kind_of: its slot is this test's alone.
        let logged: Vec<bool> = (0..5).map(|_| first_this_second(ErrorKind::Body)).collect();
        assert_eq!(logged.iter().filter(|&&l| l).count(), 1, "{logged:?}");
    }

    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
}
