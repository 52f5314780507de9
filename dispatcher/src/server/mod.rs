//! The dispatcher's outside: binds the gRPC ([`grpc`]) and admin HTTP ([`admin`], with the
//! live page, [`live`]) listeners and runs a job behind them — what both `reprise dispatcher` and `reprise run` start.
//! `run`'s replayers call the same service in place ([`Running::in_process`]), so `run`
//! opens no gRPC port: only the admin API, which its progress line points to.
//! [`Running::shutdown`] stops both servers and returns once they (and their connections)
//! have finished.

mod admin;
mod auth;
mod grpc;
mod live;
mod shard_link;
mod station;
mod tls;

pub use auth::{ADMIN_TOKEN_VAR, Access, Exposed, REPLAYER_TOKEN_VAR, Token, TokenError};
pub use grpc::InProcess;
pub use shard_link::{CoordinatorTls, GrpcCoordinator};
pub use station::{Keep, Station};
pub use tls::TlsError;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::job::{Counters, Job, JobError, JobOptions};
use crate::plan::JobPlan;
use crate::refusals::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Exposed(#[from] Exposed),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "cannot use {dir} for the jobs' reports: {source}; give --jobs-dir a directory this process may write"
    )]
    JobsDir { dir: String, source: std::io::Error },
}

/// A dispatcher with its listeners bound.
#[derive(Debug)]
pub struct Running {
    /// `None` when only replayers in this process are served.
    pub grpc: Option<SocketAddr>,
    pub http: SocketAddr,
    pub job: Arc<Job>,
    /// Ends when the job has ended (finished or stopped), its books are closed and its tasks
    /// have finished.
    pub done: JoinHandle<Result<(), JobError>>,
    station: Arc<Station>,
    servers: Servers,
}

/// The gRPC and admin servers of a dispatcher, and how to stop them.
#[derive(Debug)]
struct Servers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// How long the servers may take to finish their connections once stopped; a peer that
/// holds its connection open longer (a frozen replayer) is cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl Running {
    /// The replayers' service for replayers in this process.
    pub fn in_process(&self) -> InProcess {
        InProcess::new(Arc::clone(&self.station))
    }

    /// Stops serving gRPC and HTTP (after the job's end has been sent) and waits until both
    /// servers have finished: replayers' streams are ended first, so their connections
    /// close; what is still open after `SHUTDOWN_GRACE` is cut.
    pub async fn shutdown(self) {
        self.job.fleet().disconnect();
        self.servers.shutdown().await;
    }
}

impl Servers {
    async fn shutdown(self) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut server in self.tasks {
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "a server task failed"),
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open at shutdown: closing them");
                    server.abort();
                    let _ = server.await;
                }
            }
        }
    }
}

/// A standing dispatcher with its listeners bound: it runs the jobs submitted to it
/// (`POST /jobs`) one after another until the shutdown.
#[derive(Debug)]
pub struct Standing {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub station: Arc<Station>,
    /// Ends at the shutdown, once the job running then has ended.
    pub done: JoinHandle<()>,
    servers: Servers,
}

impl Standing {
    /// Stops serving (the job queue has ended): the last job's replayers are let go.
    pub async fn shutdown(self) {
        if let Some(job) = self.station.current() {
            job.fleet().disconnect();
        }
        self.servers.shutdown().await;
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
}

/// Binds the listeners and starts the job; it begins once enough replayers subscribe.
/// Without `grpc`, no gRPC port is opened: replayers can only be [`Running::in_process`].
/// `access` says what callers must present (checked against where the ports listen first);
/// `[service.tls]` puts both ports behind TLS. `shutdown` stops the job (see [`Job::run`]);
/// the servers stop with [`Running::shutdown`].
pub async fn start(
    plan: JobPlan,
    mut opts: JobOptions,
    grpc: Option<SocketAddr>,
    http: SocketAddr,
    access: Access,
    shutdown: &CancellationToken,
) -> Result<Running, ServeError> {
    access.check_exposure(grpc, http)?;
    let tls = plan.config.service.tls.as_ref().map(tls::ServerTls::load).transpose()?;
    let metrics_auth = plan.config.service.metrics_auth;
    let counters = Counters::default();
    opts.counters = counters.clone();
    let listeners = Listeners::bind(grpc, http).await?;
    let job = Job::new(plan, opts, shutdown)?;
    let station = Station::one(Arc::clone(&job), counters, shutdown);
    let (grpc, http, servers) = listeners.serve(&station, access, tls.as_ref(), metrics_auth);
    let runner = Arc::clone(&job);
    let done = match job.coordinator() {
        None => tokio::spawn(async move { runner.run().await }),
        Some(link) => {
            let link = Arc::clone(link);
            tokio::spawn(async move {
                let sending = tokio::spawn(shard_link::send_results(Arc::clone(&runner), Arc::clone(&link)));
                let result = runner.run().await;
                sending.abort();
                shard_link::send_last(&runner, link.as_ref()).await;
                result
            })
        }
    };
    Ok(Running { grpc, http, job, done, station, servers })
}

/// Binds the listeners of a standing dispatcher, which takes jobs with `POST /jobs` and
/// keeps their reports as `keep` says; `target` (`--target`) replaces each job's; `service`
/// (`--service FILE`) puts its ports behind TLS and says whether `/metrics` needs the token.
pub async fn standing(
    keep: Keep,
    target: Option<String>,
    service: &crate::config::ServiceConfig,
    (grpc, http): (SocketAddr, SocketAddr),
    access: Access,
    shutdown: &CancellationToken,
) -> Result<Standing, ServeError> {
    access.check_exposure(Some(grpc), http)?;
    let tls = service.tls.as_ref().map(tls::ServerTls::load).transpose()?;
    let dir = keep.dir.clone();
    let station = Station::standing(keep, target, shutdown)
        .map_err(|source| ServeError::JobsDir { dir: dir.display().to_string(), source })?;
    let listeners = Listeners::bind(Some(grpc), http).await?;
    let (grpc_bound, http, servers) = listeners.serve(&station, access, tls.as_ref(), service.metrics_auth);
    let done = tokio::spawn(Arc::clone(&station).run_queue());
    Ok(Standing { grpc: grpc_bound.unwrap_or(grpc), http, station, done, servers })
}

/// The listeners, bound before anything else starts (a port in use is an error at once).
struct Listeners {
    grpc: Option<(TcpListener, SocketAddr)>,
    http: (TcpListener, SocketAddr),
}

impl Listeners {
    async fn bind(grpc: Option<SocketAddr>, http: SocketAddr) -> Result<Listeners, ServeError> {
        let grpc = match grpc {
            Some(addr) => Some((bind("gRPC", addr).await?, addr)),
            None => None,
        };
        Ok(Listeners { grpc, http: (bind("admin HTTP", http).await?, http) })
    }

    /// Serves the station's gRPC service and admin API on the listeners; their bound
    /// addresses and the servers.
    fn serve(
        self,
        station: &Arc<Station>,
        access: Access,
        tls: Option<&tls::ServerTls>,
        metrics_auth: bool,
    ) -> (Option<SocketAddr>, SocketAddr, Servers) {
        let beyond_loopback =
            self.grpc.as_ref().is_some_and(|(_, g)| !g.ip().is_loopback()) || !self.http.1.ip().is_loopback();
        if tls.is_none() && beyond_loopback {
            tracing::warn!(
                "serving beyond loopback without [service.tls]: recorded requests and tokens cross the network in plain text (fine behind a mesh that encrypts, not otherwise)"
            );
        }
        let refusals = Arc::clone(&station.counters().refusals);
        let stop_servers = CancellationToken::new();
        let mut tasks = Vec::with_capacity(2);
        let grpc = self.grpc.map(|(listener, addr)| {
            let bound = local(&listener, addr);
            let svc = grpc::Service::server(Arc::clone(station), access.replayer_token);
            let stop = stop_servers.clone().cancelled_owned();
            tasks.push(match tls {
                None => {
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    tokio::spawn(serve_grpc(svc, Arc::clone(&refusals), incoming, stop))
                }
                Some(t) => {
                    let incoming =
                        tls::TlsIncoming::new(listener, Arc::clone(&t.grpc), Arc::clone(&refusals));
                    tokio::spawn(serve_grpc(svc, Arc::clone(&refusals), incoming.into_stream(), stop))
                }
            });
            bound
        });
        let (http_listener, http) = self.http;
        let http = local(&http_listener, http);
        let live = live::Live::new(
            Arc::clone(station),
            access.admin_token.clone(),
            stop_servers.clone(),
            tls.is_some(),
        );
        let gate =
            auth::AdminGate { refusals: Arc::clone(&refusals), token: access.admin_token, metrics_auth };
        let app = admin::router(Arc::clone(station))
            .merge(live::router(Arc::new(live)))
            .layer(axum::middleware::from_fn_with_state(gate, auth::admin_gate));
        let stop = stop_servers.clone().cancelled_owned();
        tasks.push(match tls {
            None => tokio::spawn(serve_admin(http_listener, app, stop)),
            Some(t) => {
                let incoming = tls::TlsIncoming::new(http_listener, Arc::clone(&t.admin), refusals);
                tokio::spawn(serve_admin(incoming, app, stop))
            }
        });
        (grpc, http, Servers { stop: stop_servers, tasks })
    }
}

async fn serve_grpc<I, IO, IE>(
    svc: grpc::DispatcherServer,
    refusals: Arc<crate::refusals::Refusals>,
    incoming: I,
    stop: impl std::future::Future<Output = ()>,
) where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A message past the size limit is refused by tonic before any handler sees it, with
    // OUT_OF_RANGE, which no handler here returns: counted from the response.
    let count_oversized =
        tower::util::MapResponseLayer::new(move |res: axum::http::Response<tonic::body::Body>| {
            if res.headers().get("grpc-status").is_some_and(|s| s == "11") {
                refusals.count(Refusal::Oversized);
                tracing::warn!("refused a gRPC message past the size limit");
            }
            res
        });
    let result = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .layer(count_oversized)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

async fn serve_admin<L>(
    listener: L,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let result = axum::serve(listener, app).with_graceful_shutdown(stop).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}
