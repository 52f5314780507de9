//! Recorded answers (`[compare] baseline = "recorded"`, issue 13): what an analyzer keeps of
//! a response the recording holds, for the replayers to compare the candidate's answer to.
//! It is encoded once, where it is parsed, into the wire's `pb::Expected`
//! ([`reprise_proto::expected`]): only the compared headers and the body's first
//! `max_body` bytes (with the whole body's length and hash) stay in memory, travel through
//! the wheel and go out with the record.

use bytes::Bytes;
use prost::Message as _;

use crate::config::{Baseline, JobConfig};
use crate::record::Text;

/// What of each recorded answer a job compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers {
    /// Header names compared, in lower case.
    headers: Vec<String>,
    max_body: usize,
}

impl Answers {
    /// The job's, when it compares against recorded answers.
    pub fn of(cfg: &JobConfig) -> Option<Answers> {
        let c = cfg.compare.as_ref().filter(|c| c.baseline == Baseline::Recorded)?;
        let max_body = c.max_body.0.min(reprise_proto::compare::MAX_BODY_LIMIT) as usize;
        let headers: Vec<&str> = c.headers.iter().map(String::as_str).collect();
        Some(Answers::new(&headers, max_body))
    }

    /// Compares `headers` (any case) and bodies up to `max_body`; a gRPC answer's
    /// `grpc-status` is kept too, listed or not (replayers compare it when both sides have
    /// one).
    pub fn new(headers: &[&str], max_body: usize) -> Answers {
        let mut headers: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        if !headers.iter().any(|h| h == "grpc-status") {
            headers.push("grpc-status".into());
        }
        Answers { headers, max_body }
    }

    /// A recorded answer, encoded as a record carries it.
    pub fn encode(&self, status: u16, headers: &[(Text, Bytes)], body: &[u8]) -> Box<Bytes> {
        self.encode_cut(status, headers, body, None)
    }

    /// A recorded answer whose body the recording kept only in part: `whole` is the whole
    /// body's length and FNV-1a, as `reprise record` writes them.
    pub fn encode_cut(
        &self,
        status: u16,
        headers: &[(Text, Bytes)],
        body: &[u8],
        whole: Option<(u64, u64)>,
    ) -> Box<Bytes> {
        let mut e = reprise_proto::expected::expected(status, headers, body, &self.headers, self.max_body);
        if let Some((length, hash)) = whole {
            (e.length, e.hash) = (length, hash);
        }
        Box::new(Bytes::from(e.encode_to_vec()))
    }
}
