//! A recorded answer on the wire (`pb::Expected`, issue 13's recorded baseline): what the
//! dispatcher keeps of a response the recording holds, and what a replayer compares the
//! candidate's answer to. Only what the job compares travels: the status, the compared
//! headers, and the body's first `max_body` bytes with the whole body's length and hash, so
//! a body longer than `max_body` costs the wire and the wheel no more than `max_body`.
//!
//! The hash is FNV-1a (the `fnv` crate's), the one a replayer takes of the candidate's
//! body as it streams past: a body over `max_body` is the same on both sides when its
//! length and hash are.

use std::hash::Hasher as _;

use fnv::FnvHasher;

use crate::pb;

/// FNV-1a of `bytes`, continued from `hash` ([`fnv_start`] to begin).
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = FnvHasher::with_key(hash);
    h.write(bytes);
    h.finish()
}

/// FNV-1a's starting value.
pub fn fnv_start() -> u64 {
    FnvHasher::default().finish()
}

/// How a body compared by length and hash is shown in a report.
pub fn digest(length: u64, hash: u64) -> String {
    format!("{length} bytes, fnv1a {hash:016x}")
}

/// The wire form of a recorded answer: `headers` (name, value) kept where their name is
/// one of `compared` (any case), the body cut at `max_body`.
pub fn expected<'a, N: AsRef<[u8]> + 'a, V: AsRef<[u8]> + 'a>(
    status: u16,
    headers: impl IntoIterator<Item = &'a (N, V)>,
    body: &[u8],
    compared: &[String],
    max_body: usize,
) -> pb::Expected {
    let headers = headers
        .into_iter()
        .filter(|(n, _)| compared.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(n.as_ref())))
        .map(|(n, v)| pb::Header {
            name: bytes::Bytes::copy_from_slice(n.as_ref()),
            value: bytes::Bytes::copy_from_slice(v.as_ref()),
        })
        .collect();
    pb::Expected {
        status: u32::from(status),
        headers,
        body: bytes::Bytes::copy_from_slice(&body[..body.len().min(max_body)]),
        length: body.len() as u64,
        hash: fnv1a(fnv_start(), body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compared_headers_travel_and_a_long_body_is_cut_with_its_whole_hash() {
        let headers = [("Content-Type", "a/b"), ("Date", "x"), ("ETAG", "1")];
        let e = expected(201, &headers, b"0123456789", &["content-type".into(), "etag".into()], 4);
        assert_eq!(e.status, 201);
        let names: Vec<_> = e.headers.iter().map(|h| h.name.as_ref()).collect();
        assert_eq!(names, [&b"Content-Type"[..], b"ETAG"]);
        assert_eq!((e.body.as_ref(), e.length), (&b"0123"[..], 10));
        assert_eq!(e.hash, fnv1a(fnv1a(fnv_start(), b"01234"), b"56789"), "the whole body's, however split");
        assert_ne!(e.hash, fnv1a(fnv_start(), b"0123"));
    }
}
