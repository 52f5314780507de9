//! reprise-replayer: receives records from a dispatcher and fires each at the target at its
//! due instant, measuring latency from that instant and from the send.
//!
//! # Layout
//! `client` subscribes, reconnects and reports, to an [`Upstream`]: a dispatcher over gRPC
//! (`grpc`: TLS and the replayer token) or in the same process; `executor` waits for each
//! record's instant and hands it to one of its connections, all driven by one task
//! (`slots`); `http` holds the target and sends on one keep-alive HTTP/1.1 connection per
//! link (`h1` for plain HTTP, hyper and rustls for https; `request` writes a record as a
//! request); `stats` keeps the interval deltas; `errors` names failures ([`ErrorKind`]) and
//! logs their causes; `answer` keeps what response comparison needs of an answer and
//! `compare` says where two answers differ; `allow` is `--allow-target`; `health` serves
//! `--http`.
//!
//! The modules are the crate's own; what the binary uses is re-exported here: running a
//! replayer ([`run`] over gRPC, [`run_on`] against any [`Upstream`]), its options and
//! errors, the allow-list, the probes' server, and the check of a target URL.

mod allow;
mod answer;
mod client;
mod compare;
mod errors;
mod executor;
pub mod fuzz;
mod grpc;
mod h1;
mod h2;
mod health;
mod hpack;
mod http;
mod protobuf;
mod reporter;
mod request;
mod rpc;
mod slots;
mod stats;
mod tls;
mod upstream;

pub use allow::{AllowError, AllowedTarget, Allowlist};
pub use client::{DRAIN_TIMEOUT, ReplayerError, ReplayerOptions, run, run_on};
pub use errors::ErrorKind;
pub use grpc::{Credentials, SetupError};
pub use health::{Health, HealthServer, serve as serve_health};
pub use http::base_url;
pub use upstream::{Reports, Upstream, UpstreamError};

/// Records for the unit tests: GETs of the given paths, each due at once, with its endpoint.
#[cfg(test)]
pub(crate) fn gets<'a>(
    paths: impl IntoIterator<Item = (&'a str, u32)>,
) -> Vec<reprise_proto::batch::Received> {
    use reprise_proto::batch::{RecordRef, split};
    let mut encoded = bytes::BytesMut::new();
    let no_headers: [(&[u8], &[u8]); 0] = [];
    let mut count = 0;
    for (path, endpoint) in paths {
        let rec = RecordRef {
            due_offset_ns: 0,
            endpoint,
            method: b"GET",
            path: path.as_bytes(),
            headers: &no_headers,
            body: b"",
            host: b"",
            order_key: 0,
            expected: &[],
        };
        rec.write_to(&mut encoded);
        count += 1;
    }
    split(reprise_proto::pb::RecordBatch { encoded: encoded.freeze(), count }).expect("framing")
}
