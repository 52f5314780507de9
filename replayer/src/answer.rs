//! What response comparison (issue 13) keeps of an answer: its status, the headers the job
//! compares, and its body up to `max_body`, with the whole body's length and an FNV-1a hash
//! taken as it streams past (so a longer body is compared by those two without being
//! held). One `Answer` per connection, cleared and refilled per request: no allocation per
//! request once its buffers have grown.

use reprise_proto::expected::{fnv_start, fnv1a};
use reprise_proto::pb;

/// What to keep of each answer.
#[derive(Debug, Clone)]
pub struct Keep {
    /// Header names compared, in lower case.
    pub headers: Vec<String>,
    /// Body bytes kept; past them only the length and the hash go on.
    pub max_body: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The kept headers present, in `Keep::headers` order; a repeated header's values joined
    /// with `, ` (as HTTP allows), bytes that are not UTF-8 replaced.
    pub headers: Vec<(String, String)>,
    /// The body's first `max_body` bytes.
    pub body: Vec<u8>,
    /// The whole body's length and hash.
    pub length: u64,
    hash: u64,
    /// A gRPC answer's `grpc-status` (trailer, or header of a trailers-only answer).
    pub grpc_status: Option<u32>,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
            length: 0,
            hash: fnv_start(),
            grpc_status: None,
        }
    }
}

impl Answer {
    pub fn clear(&mut self) {
        self.status = 0;
        self.headers.clear();
        self.body.clear();
        self.length = 0;
        self.hash = fnv_start();
        self.grpc_status = None;
    }

    /// Takes the status and the kept headers from a response head (the bytes of a whole
    /// head). `h1` takes them from its own parse of the head instead.
    #[cfg(test)]
    pub fn take_head(&mut self, keep: &Keep, status: u16, head: &[u8]) {
        self.status = status;
        if keep.headers.is_empty() {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        if matches!(resp.parse(head), Ok(httparse::Status::Complete(_))) {
            self.take_headers(keep, resp.headers.iter().map(|h| (h.name, h.value)));
        }
    }

    /// Takes the kept headers of `headers` (name, value), in `Keep::headers` order.
    pub fn take_headers<'a>(
        &mut self,
        keep: &Keep,
        headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    ) {
        for name in &keep.headers {
            let mut values = headers.clone().filter(|(n, _)| n.eq_ignore_ascii_case(name));
            let Some((_, first)) = values.next() else { continue };
            let mut value = String::from_utf8_lossy(first.trim_ascii()).into_owned();
            for (_, more) in values {
                value.push_str(", ");
                value.push_str(&String::from_utf8_lossy(more.trim_ascii()));
            }
            self.headers.push((name.clone(), value));
        }
    }

    /// Takes the next part of the body.
    pub fn take_body(&mut self, keep: &Keep, part: &[u8]) {
        self.length += part.len() as u64;
        self.hash = fnv1a(self.hash, part);
        let room = keep.max_body.saturating_sub(self.body.len());
        self.body.extend_from_slice(&part[..room.min(part.len())]);
    }

    /// Only part of the body is held: it was longer than `max_body`, or a recorded answer
    /// that the capture cut (`reprise record --max-body`). Only its length and hash can be
    /// compared.
    pub fn over_max_body(&self, keep: &Keep) -> bool {
        self.length > keep.max_body as u64 || self.length > self.body.len() as u64
    }

    /// Takes a recorded answer (the recorded baseline): its kept headers, its body as the
    /// dispatcher cut it at `max_body`, the whole body's length and hash.
    pub fn take_recorded(&mut self, keep: &Keep, e: &pb::Expected) {
        self.clear();
        self.status = u16::try_from(e.status).unwrap_or(u16::MAX);
        let headers =
            e.headers.iter().map(|h| (std::str::from_utf8(&h.name).unwrap_or_default(), &h.value[..]));
        self.take_headers(keep, headers);
        self.body.extend_from_slice(&e.body[..e.body.len().min(keep.max_body)]);
        self.length = e.length;
        self.hash = e.hash;
        self.grpc_status = e
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(b"grpc-status"))
            .and_then(|h| std::str::from_utf8(&h.value).ok()?.trim().parse().ok());
    }

    /// FNV-1a of the whole body.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_headers_are_joined_and_the_body_cut_with_its_whole_hash() {
        let keep = Keep { headers: vec!["content-type".into(), "x-v".into(), "etag".into()], max_body: 4 };
        let mut a = Answer::default();
        a.take_head(
            &keep,
            200,
            b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nX-V: 1\r\nDate: x\r\nx-v:  2 \r\n\r\n",
        );
        assert_eq!(a.headers, vec![("content-type".into(), "a/b".into()), ("x-v".into(), "1, 2".into())]);
        a.take_body(&keep, b"012");
        a.take_body(&keep, b"3456");
        assert_eq!((a.body.as_slice(), a.length, a.over_max_body(&keep)), (&b"0123"[..], 7, true));
        let mut whole = Answer::default();
        whole.take_body(&keep, b"0123456");
        assert_eq!(a.hash(), whole.hash(), "the hash is of the whole body, however it came");
        a.clear();
        assert_eq!(a, Answer::default());
    }
}
