//! The bounded set of error kinds a request can fail with: connect, timeout, reset, tls,
//! body, other.

use std::error::Error as StdError;
use std::io;

/// Classifies a client error by walking its sources.
pub fn kind_of_client(e: &hyper_util::client::legacy::Error) -> &'static str {
    let mut tls = false;
    let mut reset = false;
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<rustls::Error>() {
            tls = true;
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                tls = true;
            }
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ) {
                reset = true;
            }
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            reset = true;
        }
        src = s.source();
    }
    if tls {
        "tls"
    } else if e.is_connect() {
        "connect"
    } else if reset {
        "reset"
    } else {
        "other"
    }
}
