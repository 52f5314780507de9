//! gRPC as the replayer sees it: a call is a record whose `content-type` is
//! `application/grpc…`, its body the recorded length-prefixed messages, sent as they are (no
//! schema is needed to replay one). An answer's messages are counted as they stream past
//! ([`Frames`]; the replayer's `/metrics` has their total), and one that is not whole
//! messages is an error of its own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use reprise_proto::batch::RecordView;

/// Whole messages read in answers to gRPC calls, by this process.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Counts the messages of an answer read to its end.
pub fn count_received(frames: &Frames) {
    RECEIVED.fetch_add(frames.messages, Relaxed);
}

/// Whole messages read in answers to gRPC calls so far (the replayer's `/metrics`).
pub fn messages_received() -> u64 {
    RECEIVED.load(Relaxed)
}

/// Whether a record is a gRPC call: a POST whose `content-type` is gRPC's
/// ([`reprise_proto::token::is_grpc_content_type`]).
/// Asked of every record under `http = "auto"`: other methods are known without a look at
/// the headers.
pub fn is_grpc(rec: &RecordView<'_>) -> bool {
    rec.method == b"POST"
        && rec.headers().any(|(name, value)| {
            name.eq_ignore_ascii_case(b"content-type") && reprise_proto::token::is_grpc_content_type(value)
        })
}

/// A stream of gRPC messages read piece by piece: each is a flag byte, a 4-byte big-endian
/// length, then that many bytes.
#[derive(Debug, Default)]
pub struct Frames {
    /// Bytes of the current prefix seen (0..5).
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    left: u64,
    /// Messages whole so far.
    pub messages: u64,
}

impl Frames {
    pub fn take(&mut self, mut part: &[u8]) {
        while !part.is_empty() {
            if self.left > 0 {
                let n = (self.left as usize).min(part.len());
                self.left -= n as u64;
                part = &part[n..];
                if self.left == 0 {
                    self.messages += 1;
                }
                continue;
            }
            let n = (5 - self.have).min(part.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&part[..n]);
            self.have += n;
            part = &part[n..];
            if self.have == 5 {
                self.have = 0;
                let len =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                if len == 0 {
                    self.messages += 1;
                } else {
                    self.left = u64::from(len);
                }
            }
        }
    }

    /// The bytes so far end at a message's end.
    pub fn whole(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn messages_are_counted_however_the_body_is_cut() {
        let body = framed(&[b"abc", b"", b"0123456789"]);
        for cut in 1..body.len() {
            let mut f = Frames::default();
            for piece in body.chunks(cut) {
                f.take(piece);
            }
            assert_eq!((f.messages, f.whole()), (3, true), "pieces of {cut}");
        }
        let mut f = Frames::default();
        f.take(&body[..body.len() - 1]);
        assert_eq!((f.messages, f.whole()), (2, false));
        let mut f = Frames::default();
        f.take(&[0, 0, 0]);
        assert!(!f.whole(), "a prefix cut short");
    }
}
