//! The gRPC service replayers talk to: `Subscribe` registers a replayer and streams it the
//! job configuration, record batches and the end of the job over a bounded channel;
//! `Report` merges its statistics and acks into the fleet.

use std::pin::Pin;
use std::sync::Arc;

use reprise_proto::pb;
use reprise_proto::pb::dispatcher_server::{Dispatcher, DispatcherServer};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::job::Job;

/// Events buffered per replayer stream; a full buffer holds the dispatcher back.
pub const EVENT_CAPACITY: usize = 64;

pub struct Service {
    job: Arc<Job>,
}

impl Service {
    pub fn server(job: Arc<Job>) -> DispatcherServer<Service> {
        DispatcherServer::new(Service { job })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::DispatcherEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Dispatcher for Service {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<pb::Registration>) -> Result<Response<EventStream>, Status> {
        let reg = req.into_inner();
        if reg.version != reprise_proto::VERSION {
            tracing::warn!(replayer = %reg.replayer_id, version = %reg.version, "refused: version mismatch");
            return Err(Status::failed_precondition(format!(
                "replayer version {} does not match dispatcher version {}; run the same reprise build on both",
                reg.version,
                reprise_proto::VERSION
            )));
        }
        if reg.replayer_id.is_empty() || reg.replayer_id.len() > 128 {
            return Err(Status::invalid_argument("replayer_id must be 1 to 128 characters"));
        }
        if self.job.is_over() {
            return Err(Status::unavailable("the job is over; this dispatcher takes no more replayers"));
        }
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let fleet = self.job.fleet();
        let session = fleet.join(&reg.replayer_id, tx.clone());
        // The stream closes when the replayer goes away: count its load lost at once.
        let id = reg.replayer_id.clone();
        let watcher = Arc::clone(&self.job);
        tokio::spawn(async move {
            tx.closed().await;
            watcher.fleet().leave(&id, session, "stream closed");
        });
        self.job.replayer_joined();
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report(&self, req: Request<pb::StatsReport>) -> Result<Response<pb::ReportReturn>, Status> {
        let report = req.into_inner();
        if report.endpoints.is_empty() {
            // Acks (frequent, cheap) are taken in place.
            self.job.fleet().report(&report)?;
        } else {
            // Inflating and merging histograms is CPU work: off the runtime's workers.
            let job = Arc::clone(&self.job);
            tokio::task::spawn_blocking(move || job.fleet().report(&report))
                .await
                .map_err(|e| Status::internal(format!("merging the report failed: {e}")))??;
        }
        Ok(Response::new(pb::ReportReturn { accepted: true, message: String::new() }))
    }
}
