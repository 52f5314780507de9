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

/// Classifies a client error.
pub fn kind_of_client(e: &hyper_util::client::legacy::Error) -> &'static str {
    let Some(source) = e.source() else { return if e.is_connect() { "connect" } else { "other" } };
    if any_in_chain(source, &mut |s| s.is::<rustls::Error>()) {
        return "tls";
    }
    if e.is_connect() {
        return "connect";
    }
    let reset = any_in_chain(source, &mut |s| {
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
    fn a_rustls_error_nested_in_io_errors_is_found() {
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let outer = io::Error::other(tls);
        assert!(any_in_chain(&outer, &mut |s| s.is::<rustls::Error>()));
        let plain = io::Error::other("x");
        assert!(!any_in_chain(&plain, &mut |s| s.is::<rustls::Error>()));
    }
}
