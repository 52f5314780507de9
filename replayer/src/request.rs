//! A record written as an HTTP/1.1 request head, for plain connections ([`crate::h1`]), and
//! the request target's bytes, shared with HTTPS ([`crate::http`]).
//!
//! Fidelity: the request line carries the recorded path, with only the bytes a URI may not
//! hold percent-encoded ([`push_target`]). Header names keep their recorded case. Headers
//! that could not be sent as they are (a name that is not a token, a value with CR, LF or
//! NUL) are left out, never repaired into something else.

use reprise_proto::batch::RecordView;
use reprise_proto::token::{URI_BYTE, is_token, push_percent_encoded};

/// Headers that belong to one connection, not to the request; never replayed.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "trailer",
    "host",
];

/// Whether a recorded header is one of `HOP_BY_HOP` (any case).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}
/// Whether a recorded header is replayed: a name that is a token (not a pseudo-header, not
/// one of one connection) and a value that can be written as it is.
pub fn is_replayed(name: &[u8], value: &[u8]) -> bool {
    is_token(name) && is_value(value) && !is_hop_by_hop(name)
}

/// A header value that can be written as it is (no CR, LF or NUL).
pub fn is_value(v: &[u8]) -> bool {
    !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Why a record cannot be written as a request.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Unsendable {
    #[error("the method is not an HTTP token")]
    Method,
    #[error("the recorded Host, sent because of `[replayer] preserve_host`, is empty or holds CR, LF or NUL")]
    Host,
    #[error("the path does not make a request target")]
    Path,
}

/// Writes the request head for `rec` into `out` (cleared first): request line with `prefix`
/// before the recorded path, the recorded headers but hop-by-hop ones, `host`, and a length
/// when there is a body (or the method expects one).
pub fn write_head(
    out: &mut Vec<u8>,
    rec: &RecordView<'_>,
    prefix: &str,
    host: &[u8],
) -> Result<(), Unsendable> {
    out.clear();
    if !is_token(rec.method) {
        return Err(Unsendable::Method);
    }
    if host.is_empty() || !is_value(host) {
        return Err(Unsendable::Host);
    }
    out.extend_from_slice(rec.method);
    out.push(b' ');
    push_target(out, prefix.as_bytes());
    push_target(out, rec.path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in rec.headers() {
        if !is_replayed(name, value) {
            continue;
        }
        for part in [name, b": ", value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    for part in [b"Host: ".as_slice(), host, b"\r\n"] {
        out.extend_from_slice(part);
    }
    if !rec.body.is_empty() || matches!(rec.method, b"POST" | b"PUT" | b"PATCH") {
        use std::io::Write as _;
        // invariant: writing to a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", rec.body.len());
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends part of a request target. Logs hold paths a URI may not (`?q=<x>`, spaces, raw
/// UTF-8): the bytes a URI may not hold are percent-encoded, the rest (existing escapes too)
/// go out as recorded. HTTP and HTTPS targets get the same bytes (but for a `#fragment`,
/// which hyper leaves out and browsers never send).
pub fn push_target(out: &mut Vec<u8>, part: &[u8]) {
    if part.iter().all(|&b| URI_BYTE[usize::from(b)]) {
        out.extend_from_slice(part);
        return;
    }
    for &b in part {
        if URI_BYTE[usize::from(b)] {
            out.push(b);
        } else {
            push_percent_encoded(out, b);
        }
    }
}
