//! The dispatcher as a replayer sees it: where it subscribes, what it receives, where its
//! reports go. Over gRPC ([`crate::grpc`]) or in the same process (`reprise run`). The
//! transport's own errors (tonic's status codes) are turned into [`UpstreamError`] where
//! they arise, so the replayer's loop decides on what happened, not on codes.

use std::future::Future;

use reprise_proto::{Events, pb};

/// Why the dispatcher did not take a subscription or a report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Refused for good, trying again will not change it: a replayer of another build, an
    /// id or a token it does not take, a report for a subscription it has let go.
    #[error("{0}")]
    Refused(String),
    /// Absent, restarting, busy or broken off: worth trying again.
    #[error("{0}")]
    Unavailable(String),
}

/// A dispatcher as a replayer sees it.
pub trait Upstream: Send + Sync + 'static {
    type Reports: Reports;
    /// Registers this replayer; its events, and where its reports go while they flow.
    fn subscribe(
        &self,
        reg: pb::Registration,
    ) -> impl Future<Output = Result<(Events<UpstreamError>, Self::Reports), UpstreamError>> + Send;
}

/// Where a subscribed replayer's statistics and acks go.
pub trait Reports: Clone + Send + Sync + 'static {
    fn report(&self, report: pb::StatsReport) -> impl Future<Output = Result<(), UpstreamError>> + Send;
}
