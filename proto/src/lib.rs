//! reprise-proto: the wire between dispatcher and replayers (`proto/reprise.proto`, package
//! `reprise.v1`) and the conversions between it and the domain.
//!
//! # Layout
//! - [`pb`]: the generated messages and the tonic client and server.
//! - [`batch`]: records of a batch, written by the dispatcher straight from what it parsed
//!   and read by a replayer as slices of the message.
//! - [`compare`]: response comparison's counts per endpoint, with noise cancellation, as a
//!   replayer records them and the dispatcher merges them.
//! - [`dist`]: distributions of µs values: sparse histograms per endpoint, HdrHistograms for
//!   the totals.
//! - [`fields`]: the names response comparison counts differences under (`status`,
//!   `header:NAME`, `body`, JSON paths with `[*]` for indexes) and its `ignore` patterns.
//! - [`hint`]: a cache prefetch hint, for the replayer's hot paths.
//! - [`token`]: what an HTTP token is, for the dispatcher's checks and the replayer's writer.
//! - [`error_chain`]: an error with its causes on one line, for both sides' gRPC clients.
//! - [`stats`]: statistics (counters and those histograms) as the replayer records them and
//!   the dispatcher merges them, with their wire form.

pub mod batch;
pub mod compare;
pub mod dist;
pub mod expected;
pub mod fields;
pub mod hint;
pub mod stats;
pub mod token;

/// Generated from `proto/reprise.proto`.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("reprise.v1");
}

/// What a dispatcher sends one subscribed replayer: the job, its batches, its end. Each item
/// is an event or the error `E` of the transport it came over: tonic's `Status` where the
/// dispatcher serves it, the replayer's `UpstreamError` where a replayer reads it. The
/// stream ends when the dispatcher lets the replayer go; dropping it leaves the fleet.
pub type Events<E> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::DispatcherEvent, E>> + Send>>;

/// An error with its causes ("transport error: … : invalid peer certificate: UnknownIssuer"),
/// so a TLS failure says why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The build version a replayer registers with; the dispatcher refuses any other.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
