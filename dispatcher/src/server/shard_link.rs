//! A shard's link to its coordinator over gRPC (the [`Coordinator`] of `job::shards`):
//! the same service replayers call, with the replayer token. It connects (retrying while
//! the coordinator is not up yet), reads the coordinator's clock a few times and keeps the
//! reading of the shortest round trip (its offset is then off by at most half that trip),
//! joins, and waits for the start.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reprise_proto::pb;
use reprise_proto::pb::dispatcher_client::DispatcherClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

use crate::control::JobState;
use crate::job::Job;
use crate::job::shards::{Coordinator, Joined, Pending};
use crate::results::Report;

/// How often a shard sends its results so far.
const RESULTS_EVERY: Duration = Duration::from_secs(1);
/// Tries to send a shard's last results.
const LAST_TRIES: usize = 5;

/// Sends `job`'s results to its coordinator every second once it runs, until aborted.
pub(super) async fn send_results(job: std::sync::Arc<Job>, link: std::sync::Arc<dyn Coordinator>) {
    let mut tick = tokio::time::interval(RESULTS_EVERY);
    loop {
        tick.tick().await;
        if job.state() == JobState::Waiting {
            continue;
        }
        if let Err(e) = link.report(results(&job, false)).await {
            tracing::debug!(error = %e, "results not sent to the coordinator");
        }
    }
}

/// Sends `job`'s last results once it has ended, trying a few times.
pub(super) async fn send_last(job: &Job, link: &dyn Coordinator) {
    if job.started_unix() == 0.0 {
        // Never started (the shards did not agree): nothing to send.
        return;
    }
    for attempt in 1..=LAST_TRIES {
        match link.report(results(job, true)).await {
            Ok(()) => return,
            Err(e) if attempt == LAST_TRIES => {
                tracing::error!(error = %e, "the last results could not reach the coordinator: it counts this shard lost");
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

fn results(job: &Job, last: bool) -> pb::ShardResults {
    let report = Report::of(job);
    let shard = job.shard();
    pb::ShardResults {
        job_id: job.id().to_owned(),
        index: shard.index(),
        report_json: serde_json::to_vec(&report).unwrap_or_default().into(),
        last,
    }
}

/// Clock readings per join; the one of the shortest round trip counts.
const CLOCK_PROBES: usize = 8;
/// Between two tries to reach a coordinator that is not up yet.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct GrpcCoordinator {
    endpoint: Endpoint,
    token: Option<MetadataValue<Ascii>>,
    /// The connection joined over, for sending results.
    client: Mutex<Option<DispatcherClient<Channel>>>,
    /// Closes the event stream once the last results are in: the coordinator counts a
    /// shard whose stream closes before that lost.
    close: tokio_util::sync::CancellationToken,
}

/// How a shard proves and checks identities on its link to an `https://` coordinator.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoordinatorTls<'a> {
    /// The CA (PEM) the coordinator's certificate chains to; `None`: the web's roots.
    pub ca: Option<&'a Path>,
    /// This shard's certificate and key (PEM), for a coordinator that asks callers for one
    /// (`[tls] client_ca`).
    pub identity: Option<(&'a Path, &'a Path)>,
}

fn client_tls(tls: CoordinatorTls<'_>) -> Result<ClientTlsConfig, String> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
    };
    let mut config = match tls.ca {
        Some(ca) => {
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--coordinator-ca", ca)?))
        }
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let Some((cert, key)) = tls.identity {
        let identity = Identity::from_pem(read("--coordinator-cert", cert)?, read("--coordinator-key", key)?);
        config = config.identity(identity);
    }
    Ok(config)
}

impl GrpcCoordinator {
    /// A link to the coordinator at `url` (shard 0's gRPC address), calling with `token`,
    /// over `https://` with `tls`.
    pub fn new(url: &str, token: Option<&str>, tls: CoordinatorTls<'_>) -> Result<GrpcCoordinator, String> {
        let bad = || {
            format!("--coordinator {url:?}: not a URL; give shard 0's gRPC address, e.g. http://shard-0:9090")
        };
        let mut endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|_| bad())?.connect_timeout(Duration::from_secs(2));
        if endpoint.uri().host().is_none() {
            return Err(bad());
        }
        if endpoint.uri().scheme_str() == Some("https") {
            endpoint =
                endpoint.tls_config(client_tls(tls)?).map_err(|e| format!("--coordinator {url}: {e}"))?;
        } else if tls.ca.is_some() || tls.identity.is_some() {
            return Err(format!(
                "--coordinator-ca and --coordinator-cert need an https:// coordinator URL, not {url}"
            ));
        }
        let token = match token {
            None => None,
            Some(t) => {
                let mut v = MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| "the replayer token holds characters a header cannot carry".to_owned())?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(GrpcCoordinator { endpoint, token, client: Mutex::new(None), close: Default::default() })
    }

    /// Whether the link is over TLS.
    fn tls(&self) -> bool {
        self.endpoint.uri().scheme_str() == Some("https")
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }

    /// Connects, retrying while the coordinator is not up yet. A failed TLS handshake ends
    /// the wait: a certificate refused (the coordinator's, or this shard's missing one) is
    /// refused again on every try.
    async fn connect(&self) -> Result<DispatcherClient<Channel>, String> {
        loop {
            match self.endpoint.connect().await {
                Ok(channel) => return Ok(DispatcherClient::new(channel)),
                Err(e) if tls_failed(&e) => {
                    return Err(format!(
                        "the coordinator at {} refused TLS with this shard: {}; check --coordinator-ca, \
                         and give --coordinator-cert and --coordinator-key when its [tls] client_ca asks callers for a certificate",
                        self.endpoint.uri(),
                        reprise_proto::error_chain(&e)
                    ));
                }
                Err(e) => {
                    tracing::info!(coordinator = %self.endpoint.uri(), error = %reprise_proto::error_chain(&e), "waiting for the coordinator");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// The coordinator's clock minus this one's, µs, and the round trip, µs: the reading of
    /// the shortest round trip of a few.
    async fn clock(&self, client: &mut DispatcherClient<Channel>) -> Result<(i64, u64), String> {
        let mut best: Option<(i64, u64)> = None;
        for _ in 0..CLOCK_PROBES {
            let sent = now_ns();
            let reading =
                client.clock(self.request(pb::ClockProbe {})).await.map_err(|s| refused(&s, self.tls()))?;
            let back = now_ns();
            let rtt_ns = (back - sent).max(0);
            let offset_ns = reading.into_inner().unix_ns - (sent + rtt_ns / 2);
            if best.is_none_or(|(_, rtt)| (rtt_ns as u64 / 1000) < rtt) {
                best = Some((offset_ns / 1000, rtt_ns as u64 / 1000));
            }
        }
        best.ok_or_else(|| "no clock reading".to_owned())
    }
}

/// Whether a connect failed in the TLS handshake: rustls' errors reach tonic as I/O errors
/// of kind `InvalidData`, anywhere in the chain.
fn tls_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        let io = e.downcast_ref::<std::io::Error>();
        if e.is::<rustls::Error>()
            || io.is_some_and(|io| {
                io.kind() == std::io::ErrorKind::InvalidData
                    || io.get_ref().is_some_and(|i| i.is::<rustls::Error>())
            })
        {
            return true;
        }
        cause = e.source();
    }
    false
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}

fn refused(s: &tonic::Status, tls: bool) -> String {
    match s.code() {
        Code::Unauthenticated => format!("the coordinator refused this shard: {}", s.message()),
        // A coordinator that asks callers for a certificate closes the connection of a shard
        // without one after the handshake: the call fails with the transport.
        Code::Unavailable | Code::Unknown | Code::Cancelled if tls => format!(
            "the coordinator closed the connection: {}; when its [tls] client_ca asks callers for a \
             certificate, give this shard --coordinator-cert and --coordinator-key",
            s.message()
        ),
        _ => format!("the coordinator: {}", s.message()),
    }
}

impl Coordinator for GrpcCoordinator {
    fn join(&self, mut join: pb::ShardJoin) -> Pending<'_, Result<Joined, String>> {
        Box::pin(async move {
            let mut client = self.connect().await?;
            let (offset_us, rtt_us) = self.clock(&mut client).await?;
            (join.clock_offset_us, join.rtt_us) = (offset_us, rtt_us);
            let mut events = client
                .join_shard(self.request(join))
                .await
                .map_err(|s| refused(&s, self.tls()))?
                .into_inner();
            *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
            let start = match events.message().await {
                Ok(Some(pb::ShardEvent { event: Some(pb::shard_event::Event::Start(start)) })) => start,
                Ok(Some(pb::ShardEvent { event: Some(pb::shard_event::Event::Stop(stop)) })) => {
                    return Err(format!(
                        "the coordinator stopped the job before it started: {}",
                        stop.reason
                    ));
                }
                Ok(_) => return Err("the coordinator closed its stream before the start".into()),
                Err(s) => return Err(format!("the coordinator is gone: {}", s.message())),
            };
            // The stream stays open past the job's end, until the last results are in.
            let (tell, told) = tokio::sync::oneshot::channel();
            let close = self.close.clone();
            tokio::spawn(async move {
                let why = async {
                    loop {
                        // (`events` stays held after a stop: the last results follow it.)
                        match events.message().await {
                            Ok(Some(pb::ShardEvent { event: Some(pb::shard_event::Event::Stop(stop)) })) => {
                                return format!("the coordinator: {}", stop.reason);
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => return "the coordinator closed its stream: it is gone".to_owned(),
                            Err(s) => return format!("the coordinator is gone: {}", s.message()),
                        }
                    }
                };
                tokio::select! {
                    why = why => {
                        let _ = tell.send(why);
                        close.cancelled().await;
                    }
                    () = close.cancelled() => {}
                }
                drop(events);
            });
            let stop = Box::pin(async move {
                match told.await {
                    Ok(why) => why,
                    // Closed after the last results: nothing stops the job any more.
                    Err(_) => std::future::pending().await,
                }
            });
            Ok(Joined { start, offset_us, stop })
        })
    }

    fn report(&self, results: pb::ShardResults) -> Pending<'_, Result<(), String>> {
        Box::pin(async move {
            let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(mut client) = client else { return Err("not joined".into()) };
            let last = results.last;
            client.shard_report(self.request(results)).await.map_err(|s| refused(&s, self.tls()))?;
            if last {
                self.close.cancel();
            }
            Ok(())
        })
    }
}
