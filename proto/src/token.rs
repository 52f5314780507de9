//! HTTP tokens (RFC 9110 `tchar`: methods, header names) and the bytes a request target
//! holds, by table. One rule for both sides of the wire: the dispatcher refuses a record
//! whose method or header name is not a token (counted malformed), and a replayer writes
//! only tokens; the dispatcher's access-log reader and a replayer's request writer
//! percent-encode the same bytes of a path.

/// A table of the bytes that are ASCII letters or digits, or one of `more`.
pub const fn alphanumeric_and(more: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < more.len() {
        table[more[i] as usize] = true;
        i += 1;
    }
    table
}

/// Bytes of an HTTP token (RFC 9110 `tchar`).
pub const TOKEN_BYTE: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// Bytes a request target holds as they are: unreserved and reserved characters and '%'
/// (RFC 3986); anything else is percent-encoded.
pub const URI_BYTE: [bool; 256] = alphanumeric_and(b"-._~:/?#[]@!$&'()*+,;=%");

/// Appends `b` percent-encoded: `%HH`.
pub fn push_percent_encoded(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// An HTTP token (methods, header names): by table, as every header of every request is
/// checked (searching the punctuation for each byte was a tenth of writing a head).
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| TOKEN_BYTE[usize::from(b)])
}

/// A `content-type` of a gRPC call: `application/grpc` or a subtype of it
/// (`application/grpc+proto`; `application/grpc-web` is not gRPC over HTTP/2). One rule for
/// the dispatcher (which names a call's endpoint by its path) and a replayer (which sends it
/// over HTTP/2).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    v.len() >= 16
        && v[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(v.get(16), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_content_types_and_their_subtypes_are_grpc() {
        for (v, grpc) in [
            (&b"application/grpc"[..], true),
            (b" Application/GRPC+proto ", true),
            (b"application/grpc;charset=x", true),
            (b"application/grpc-web", false),
            (b"application/json", false),
            (b"application/grp", false),
        ] {
            assert_eq!(super::is_grpc_content_type(v), grpc, "{}", String::from_utf8_lossy(v));
        }
    }
}
