//! The dispatcher's outside: binds the gRPC ([`grpc`]) and admin HTTP ([`admin`]) listeners
//! and runs a job behind them — what both `reprise dispatcher` and `reprise run` start
//! (`run`'s replayers call the same service in place: [`Running::in_process`]).
//! [`Running::shutdown`] stops both servers and returns once they (and their connections)
//! have finished.

mod admin;
mod grpc;

pub use grpc::{EventStream, InProcess};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::JobConfig;
use crate::job::{Job, JobError, JobOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Job(#[from] JobError),
}

/// A dispatcher with its listeners bound.
#[derive(Debug)]
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub job: Arc<Job>,
    /// Ends when the job has ended (finished or stopped), its books are closed and its tasks
    /// have finished.
    pub done: JoinHandle<Result<(), JobError>>,
    stop_servers: CancellationToken,
    servers: [JoinHandle<()>; 2],
}

/// How long the servers may take to finish their connections once stopped; a peer that
/// holds its connection open longer (a frozen replayer) is cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl Running {
    /// The replayers' service for replayers in this process.
    pub fn in_process(&self) -> InProcess {
        InProcess::new(Arc::clone(&self.job))
    }

    /// Stops serving gRPC and HTTP (after the job's end has been sent) and waits until both
    /// servers have finished: replayers' streams are ended first, so their connections
    /// close; what is still open after `SHUTDOWN_GRACE` is cut.
    pub async fn shutdown(self) {
        self.job.fleet().disconnect();
        self.stop_servers.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut server in self.servers {
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

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
}

/// Binds both listeners and starts the job; it begins once enough replayers subscribe.
/// `shutdown` stops the job (see [`Job::run`]); the servers stop with [`Running::shutdown`].
pub async fn start(
    cfg: JobConfig,
    opts: JobOptions,
    grpc: SocketAddr,
    http: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Running, ServeError> {
    let grpc_listener = bind("gRPC", grpc).await?;
    let http_listener = bind("admin HTTP", http).await?;
    let (grpc, http) = (local(&grpc_listener, grpc), local(&http_listener, http));
    let job = Job::new(cfg, opts, shutdown)?;
    let stop_servers = CancellationToken::new();

    let svc = grpc::Service::server(Arc::clone(&job));
    let stop = stop_servers.clone();
    let grpc_server = tokio::spawn(async move {
        let incoming = TcpListenerStream::new(grpc_listener);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    let app = admin::router(Arc::clone(&job));
    let stop = stop_servers.clone();
    let admin_server = tokio::spawn(async move {
        let result = axum::serve(http_listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    let runner = Arc::clone(&job);
    let done = tokio::spawn(async move { runner.run().await });
    Ok(Running { grpc, http, job, done, stop_servers, servers: [grpc_server, admin_server] })
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}
