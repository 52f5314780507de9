//! The bounded set of error kinds a request can fail with: connect, timeout, reset, tls,
//! body, other.

use std::error::Error as StdError;
use std::io;

type Dyn = dyn StdError + 'static;

/// Calls `f` on `e` and on everything it wraps: its sources, and the errors inside
/// `io::Error`s (which hyper-rustls nests two deep around a rustls error).
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

/// Classifies an error from opening a connection (`connecting`) or from an exchange on one.
pub fn kind_of(e: &(dyn StdError + Send + Sync + 'static), connecting: bool) -> &'static str {
    let e: &Dyn = e;
    if any_in_chain(e, &mut |s| s.is::<rustls::Error>()) {
        return "tls";
    }
    if connecting {
        return "connect";
    }
    let reset = any_in_chain(e, &mut |s| {
        let io_reset = s.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            )
        });
        let hyper_closed = s
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_closed() || h.is_canceled());
        io_reset || hyper_closed
    });
    if reset { "reset" } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_nested_in_io_errors_is_tls() {
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let outer = io::Error::other(tls);
        assert_eq!(kind_of(&outer, true), "tls");
        assert_eq!(kind_of(&outer, false), "tls");
    }

    #[test]
    fn connection_failures_and_resets_are_told_apart() {
        assert_eq!(kind_of(&io::Error::from(io::ErrorKind::ConnectionRefused), true), "connect");
        assert_eq!(kind_of(&io::Error::from(io::ErrorKind::ConnectionReset), false), "reset");
        assert_eq!(kind_of(&io::Error::other("odd"), false), "other");
    }
}
