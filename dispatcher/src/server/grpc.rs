//! The service replayers talk to: `Subscribe` registers a replayer and streams it the job
//! configuration, record batches and the end of the job over a bounded channel; `Report`
//! merges its statistics and acks into the fleet. Transport types (tonic's `Status`, the
//! response stream) stay here: the fleet below knows only event senders.
//!
//! Replayers elsewhere call it over gRPC; those of `reprise run`, in the same process, call
//! the same two operations through [`InProcess`]: the events they receive are the ones the
//! fleet sends (a batch's bytes shared, not encoded into HTTP/2 frames, sent over loopback TCP
//! and decoded again).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use reprise_proto::pb::dispatcher_server::Dispatcher;
use reprise_proto::{Events, pb};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::station::Station;
use crate::fleet::IntakeError;
use crate::job::Job;
use crate::job::parts::Part;
use crate::refusals::Refusal;

use super::auth::{REPLAYER_TOKEN_VAR, Token};

impl From<IntakeError> for Status {
    fn from(e: IntakeError) -> Status {
        match e {
            IntakeError::NotSubscribed { .. } | IntakeError::Foreign { .. } => {
                Status::failed_precondition(e.to_string())
            }
            IntakeError::Flood { .. } => Status::resource_exhausted(e.to_string()),
            IntakeError::Decode(_) | IntakeError::Inconsistent { .. } => {
                Status::invalid_argument(e.to_string())
            }
        }
    }
}

/// A replayer's event stream. When the replayer goes away, tonic drops the stream, and the
/// drop takes the member out of the fleet at once (its load counted lost), so no task has to
/// watch the channel.
///
/// A leaving replayer's channel closes once its last batch is on it; the stream then says so
/// (JobEnd "released") and stays open: the replayer closes it once it has sent and reported
/// what it holds, and only then does it leave the fleet, having lost nothing.
struct MemberStream {
    events: ReceiverStream<pb::DispatcherEvent>,
    job: Arc<Job>,
    id: String,
    subscription: u64,
    released: bool,
}

impl Stream for MemberStream {
    type Item = Result<pb::DispatcherEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.released {
            return Poll::Pending;
        }
        match std::task::ready!(Pin::new(&mut self.events).poll_next(cx)) {
            Some(event) => Poll::Ready(Some(Ok(event))),
            None if self.job.fleet().is_leaving(&self.id, self.subscription) => {
                self.released = true;
                let end = pb::JobEnd { reason: RELEASED.to_owned() };
                Poll::Ready(Some(Ok(pb::DispatcherEvent {
                    event: Some(pb::dispatcher_event::Event::End(end)),
                })))
            }
            None => Poll::Ready(None),
        }
    }
}

/// JobEnd's reason for a leaving replayer: everything dispatched to it is on its stream.
pub const RELEASED: &str = "released";

impl Drop for MemberStream {
    fn drop(&mut self) {
        self.job.fleet().leave(&self.id, self.subscription, "stream closed");
    }
}

/// The largest message a replayer may send (a report): a second of raw rows at 100,000
/// requests a second is about 3 MiB. Larger is refused (OUT_OF_RANGE) and counted.
pub const MAX_REPORT_BYTES: usize = 16 << 20;

/// Events buffered per replayer stream; a full buffer holds the dispatcher back.
pub const EVENT_CAPACITY: usize = 64;
/// The longest own target a replayer may register (it is shown in `/status`).
const MAX_TARGET_LEN: usize = 2048;

#[derive(Clone)]
pub(super) struct Service {
    station: Arc<Station>,
    /// Required on both RPCs over gRPC when set (not of replayers in this process).
    token: Option<Token>,
}

pub(super) type DispatcherServer = pb::dispatcher_server::DispatcherServer<Service>;

impl Service {
    pub fn server(station: Arc<Station>, token: Option<Token>) -> DispatcherServer {
        DispatcherServer::new(Service { station, token })
            .max_decoding_message_size(MAX_REPORT_BYTES)
            .max_encoding_message_size(64 << 20)
    }

    /// Refuses (UNAUTHENTICATED, counted) a call without the replayer token, when one is set.
    fn authorize<T>(&self, req: &Request<T>, rpc: &'static str) -> Result<(), Status> {
        let Some(token) = &self.token else { return Ok(()) };
        if token.admits(req.metadata().get("authorization").map(|v| v.as_bytes())) {
            return Ok(());
        }
        self.station.counters().refusals.count(Refusal::ReplayerToken);
        let peer = req.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        tracing::warn!(rpc, %peer, "refused: missing or wrong replayer token");
        Err(Status::unauthenticated(format!(
            "missing or wrong replayer token: set {REPLAYER_TOKEN_VAR} on the replayer to the dispatcher's"
        )))
    }
}

/// The replayers' service for replayers in the same process: the same subscribe and report as
/// over gRPC, called directly.
#[derive(Clone)]
pub struct InProcess {
    svc: Service,
}

impl InProcess {
    pub(super) fn new(station: Arc<Station>) -> Self {
        Self { svc: Service { station, token: None } }
    }

    pub fn subscribe(&self, reg: pb::Registration) -> Result<Events<Status>, Status> {
        self.svc.join(reg)
    }

    pub async fn report(&self, report: pb::StatsReport) -> Result<(), Status> {
        self.svc.take(report).await
    }
}

impl Service {
    /// Registers a replayer (refused if its build differs, its id is unusable or the job is
    /// over); its events flow until the stream is dropped.
    fn join(&self, reg: pb::Registration) -> Result<Events<Status>, Status> {
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
        if reg.target.len() > MAX_TARGET_LEN {
            return Err(Status::invalid_argument(format!("target must be at most {MAX_TARGET_LEN} bytes")));
        }
        let job = match self.station.subscription() {
            Ok(job) => job,
            Err(Some(lobby)) => return Ok(Box::pin(Lobby(Box::pin(lobby.cancelled_owned())))),
            Err(None) => {
                return Err(Status::unavailable("the job is over; this dispatcher takes no more replayers"));
            }
        };
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let own = Some(reg.target).filter(|t| !t.is_empty());
        // Retried by the replayer: the id frees itself when its holder leaves.
        let subscription =
            job.fleet().join(&reg.replayer_id, own, tx).map_err(|e| Status::already_exists(e.to_string()))?;
        let stream = MemberStream {
            events: ReceiverStream::new(rx),
            job: Arc::clone(&job),
            id: reg.replayer_id,
            subscription,
            released: false,
        };
        job.replayer_joined();
        Ok(Box::pin(stream))
    }

    /// Merges a report into the fleet; a foreign one or one of a flood is counted refused.
    async fn take(&self, report: pb::StatsReport) -> Result<(), Status> {
        let Some(job) = self.station.current() else {
            return Err(Status::failed_precondition("no job has run on this dispatcher yet"));
        };
        let taken = if report.endpoints.is_empty() {
            // Acks (frequent, cheap) are taken in place.
            job.receive(&report)
        } else {
            // Inflating and merging histograms is CPU work: off the runtime's workers.
            let job = Arc::clone(&job);
            tokio::task::spawn_blocking(move || job.receive(&report))
                .await
                .map_err(|e| Status::internal(format!("merging the report failed: {e}")))?
        };
        if let Err(e) = &taken {
            let why = match e {
                IntakeError::Foreign { .. } => Some(Refusal::ForeignReport),
                IntakeError::Flood { .. } => Some(Refusal::ReportFlood),
                _ => None,
            };
            if let Some(why) = why {
                job.refusals().count(why);
                tracing::warn!(error = %e, "report refused");
            }
        }
        Ok(taken?)
    }
}

/// A subscription while no job runs (a standing dispatcher's lobby): carries nothing, and
/// ends when a job starts, so that its replayer subscribes again, into the job.
struct Lobby(Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>);

impl Stream for Lobby {
    type Item = Result<pb::DispatcherEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        std::future::Future::poll(self.0.as_mut(), cx).map(|()| None)
    }
}

/// A shard's event stream at its coordinator: when the shard goes away, tonic drops it, and
/// the drop marks the shard lost unless it said its job ended.
struct ShardStream {
    events: ReceiverStream<pb::ShardEvent>,
    job: Arc<Job>,
    index: u32,
}

impl Stream for ShardStream {
    type Item = Result<pb::ShardEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events).poll_next(cx).map(|e| e.map(Ok))
    }
}

impl Drop for ShardStream {
    fn drop(&mut self) {
        if let Some(board) = self.job.board() {
            board.gone(self.index);
        }
    }
}

impl Service {
    /// The coordinator's job a shard's call is for.
    fn coordinating(&self, job_id: &str) -> Result<Arc<Job>, Status> {
        let job = self.station.current().filter(|j| j.board().is_some()).ok_or_else(|| {
            Status::failed_precondition(
                "this dispatcher coordinates no sharded job: give shard 0's gRPC address",
            )
        })?;
        if job.id() != job_id {
            return Err(Status::failed_precondition(format!(
                "the coordinator runs job {:?}, not {job_id:?}: give every shard the same job file",
                job.id()
            )));
        }
        Ok(job)
    }
}

#[tonic::async_trait]
impl Dispatcher for Service {
    type SubscribeStream = Events<Status>;
    type JoinShardStream = Pin<Box<dyn Stream<Item = Result<pb::ShardEvent, Status>> + Send>>;

    async fn join_shard(
        &self,
        req: Request<pb::ShardJoin>,
    ) -> Result<Response<Self::JoinShardStream>, Status> {
        self.authorize(&req, "JoinShard")?;
        let join = req.into_inner();
        if join.version != reprise_proto::VERSION {
            return Err(Status::failed_precondition(format!(
                "shard version {} does not match the coordinator's {}; run the same reprise build on every shard",
                join.version,
                reprise_proto::VERSION
            )));
        }
        let job = self.coordinating(&join.job_id)?;
        let board = job.board().ok_or_else(|| Status::internal("no board"))?;
        let events = board.join(&join).map_err(Status::failed_precondition)?;
        let stream =
            ShardStream { events: ReceiverStream::new(events), job: Arc::clone(&job), index: join.index };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn shard_report(
        &self,
        req: Request<pb::ShardResults>,
    ) -> Result<Response<pb::ShardReturn>, Status> {
        self.authorize(&req, "ShardReport")?;
        let results = req.into_inner();
        let job = self.coordinating(&results.job_id)?;
        // Decoding a report's histograms is CPU work: off the runtime's workers.
        let part = tokio::task::spawn_blocking(move || {
            let label = std::path::PathBuf::from(format!("the results of shard {}", results.index));
            let run = serde_json::from_slice(&results.report_json)
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", label.display())))?;
            let part = Part::of(&label, run).map_err(|e| Status::invalid_argument(e.to_string()))?;
            Ok::<_, Status>((results.index, part, results.last))
        })
        .await
        .map_err(|e| Status::internal(format!("decoding the results failed: {e}")))??;
        if let Some(board) = job.board() {
            board.results(part.0, part.1, part.2).map_err(Status::failed_precondition)?;
        }
        Ok(Response::new(pb::ShardReturn {}))
    }

    async fn clock(&self, req: Request<pb::ClockProbe>) -> Result<Response<pb::ClockReading>, Status> {
        self.authorize(&req, "Clock")?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Response::new(pb::ClockReading { unix_ns: now.as_nanos() as i64 }))
    }

    async fn subscribe(&self, req: Request<pb::Registration>) -> Result<Response<Events<Status>>, Status> {
        self.authorize(&req, "Subscribe")?;
        self.join(req.into_inner()).map(Response::new)
    }

    async fn report(&self, req: Request<pb::StatsReport>) -> Result<Response<pb::ReportReturn>, Status> {
        self.authorize(&req, "Report")?;
        self.take(req.into_inner()).await?;
        Ok(Response::new(pb::ReportReturn { accepted: true, message: String::new() }))
    }
}
