//! reprise-proto: the wire between dispatcher and replayers (`proto/reprise.proto`, package
//! `reprise.v1`) and the conversions between it and the domain.
//!
//! # Layout
//! - [`pb`]: the generated messages and the tonic client and server.
//! - [`stats`]: per-endpoint statistics (HdrHistograms and counters) as the replayer records
//!   them and the dispatcher merges them, with their wire form.

pub mod stats;

/// Generated from `proto/reprise.proto`.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("reprise.v1");
}

/// The build version a replayer registers with; the dispatcher refuses any other.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
