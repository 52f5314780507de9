//! The dispatcher as a replayer sees it: where it subscribes, what it receives, where its
//! reports go. Over gRPC ([`crate::grpc`]) or in the same process (`reprise run`).

use std::future::Future;
use std::pin::Pin;

use reprise_proto::pb;
use tokio_stream::Stream;
use tonic::Status;

/// What a dispatcher sends a subscribed replayer: the job, its batches, its end. The stream
/// ends (or fails) when the dispatcher lets the replayer go; dropping it leaves the fleet.
pub type Events = Pin<Box<dyn Stream<Item = Result<pb::DispatcherEvent, Status>> + Send>>;

/// A dispatcher as a replayer sees it. A refusal is `FailedPrecondition`, `InvalidArgument` or
/// `Unauthenticated` (the replayer gives up); any other error is retried with backoff.
pub trait Upstream: Send + Sync + 'static {
    type Reports: Reports;
    /// Registers this replayer; its events, and where its reports go while they flow.
    fn subscribe(
        &self,
        reg: pb::Registration,
    ) -> impl Future<Output = Result<(Events, Self::Reports), Status>> + Send;
}

/// Where a subscribed replayer's statistics and acks go.
pub trait Reports: Clone + Send + Sync + 'static {
    fn report(&self, report: pb::StatsReport) -> impl Future<Output = Result<(), Status>> + Send;
}
