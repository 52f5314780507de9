//! Response comparison at the replayer (issue 13). Live baseline: each record goes to the
//! candidate (the job's target), the primary and the secondary at its instant, on three
//! connections of the same link, at once; when all three answered, the candidate's answer
//! is compared to the primary's and the secondary's to the primary's (noise). Recorded
//! baseline: the candidate's answer is compared to the one the record carries
//! (`pb::Expected`), and nothing is noise. The differences are counted per endpoint
//! ([`crate::stats::Recorder::record_compare`]). Latency and errors count the candidate's
//! exchange alone.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use reprise_proto::batch::RecordView;
use reprise_proto::compare::{MAX_BODY_LIMIT, Seen};
use reprise_proto::fields::FieldPattern;
use reprise_proto::pb;

use super::Exchanged;
use crate::answer::{Answer, Keep};
use crate::compare::{Difference, Reading, answers, live};
use crate::http::{Link, Target, TargetError};
use crate::protobuf::Schemas;

/// A job's comparison settings, with the baselines' targets.
pub(super) struct Compare {
    baseline: Baseline,
    keep: Keep,
    ignore: Vec<FieldPattern>,
    /// How gRPC answers' messages are read.
    schemas: Schemas,
}

/// What the candidate's answers are compared to.
enum Baseline {
    /// The current release, twice.
    Live { primary: Box<Target>, secondary: Box<Target> },
    /// The answers the recording holds, carried by each record.
    Recorded,
}

/// What one link keeps for comparing: the baselines' connections and the three answers.
#[derive(Default)]
pub(super) struct Sides {
    primary: Link,
    secondary: Link,
    answers: [Answer; 3],
    differing: Vec<Difference>,
    noise: Vec<Difference>,
}

/// What a compared request found.
pub(super) struct Found<'a> {
    pub differing: Vec<Seen<'a>>,
    pub noise: Vec<&'a str>,
    pub over_max_body: bool,
}

impl Compare {
    /// The job's comparison, or `None` when it compares nothing. A baseline's URL is read as
    /// the job's target is (`http` or `https`).
    pub fn new(cfg: &pb::JobConfig) -> Result<Option<Compare>, TargetError> {
        let Some(c) = &cfg.compare else { return Ok(None) };
        let target = |url: &str| Target::new(&pb::JobConfig { target: url.to_owned(), ..cfg.clone() });
        let ignore = c.ignore.iter().filter_map(|p| FieldPattern::parse(p).ok()).collect();
        let baseline = if c.recorded {
            Baseline::Recorded
        } else {
            Baseline::Live {
                primary: Box::new(target(&c.primary)?),
                secondary: Box::new(target(&c.secondary)?),
            }
        };
        let schemas = Schemas::new(&c.protoset).map_err(|e| TargetError::Protoset(e.to_string()))?;
        Ok(Some(Compare {
            schemas,
            baseline,
            keep: Keep {
                headers: c.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                max_body: c.max_body.min(MAX_BODY_LIMIT) as usize,
            },
            ignore,
        }))
    }

    /// Opens the baselines' connections ahead of the first request, as for the target.
    pub async fn open(&self, sides: &mut Sides) {
        if let Baseline::Live { primary, secondary } = &self.baseline {
            tokio::join!(primary.open(&mut sides.primary), secondary.open(&mut sides.secondary));
        }
    }

    /// Sends `rec` to the candidate (and, live, to both baselines at once); returns the
    /// candidate's outcome, and the comparison when every side answered (recorded: when the
    /// candidate answered and the record carries a recorded answer).
    pub async fn exchange<'s>(
        &self,
        candidate: &Target,
        link: &mut Link,
        sides: &'s mut Sides,
        rec: &RecordView<'_>,
        sent: Instant,
        cut: &AtomicBool,
    ) -> (Exchanged, Option<Found<'s>>) {
        let Sides { primary: p_link, secondary: s_link, answers: [c, p, s], differing, noise } = sides;
        let keep = &self.keep;
        let how = if crate::rpc::is_grpc(rec) {
            Reading::Grpc(self.schemas.output_of(rec.path))
        } else {
            Reading::Json
        };
        differing.clear();
        noise.clear();
        let (outcome, over) = match &self.baseline {
            Baseline::Live { primary, secondary } => {
                let (outcome, base, other) = tokio::join!(
                    candidate.exchange_keeping(link, rec, sent, cut, Some((keep, c))),
                    primary.exchange_keeping(p_link, rec, sent, cut, Some((keep, p))),
                    secondary.exchange_keeping(s_link, rec, sent, cut, Some((keep, s))),
                );
                if outcome.is_err() || base.is_err() || other.is_err() {
                    return (outcome, None);
                }
                (outcome, live(p, c, s, keep, &how, &self.ignore, differing, noise))
            }
            Baseline::Recorded => {
                let expected = match rec.expected() {
                    Ok(Some(e)) => e,
                    Ok(None) => return (candidate.exchange(link, rec, sent, cut).await, None),
                    // Only a dispatcher of another build could send it: not compared.
                    Err(e) => {
                        tracing::warn!(error = %e, "a recorded answer could not be decoded");
                        return (candidate.exchange(link, rec, sent, cut).await, None);
                    }
                };
                let outcome = candidate.exchange_keeping(link, rec, sent, cut, Some((keep, c))).await;
                if outcome.is_err() {
                    return (outcome, None);
                }
                p.take_recorded(keep, &expected);
                (outcome, answers(p, c, keep, &how, &self.ignore, differing))
            }
        };
        let found = Found {
            differing: differing
                .iter()
                .map(|d| Seen { field: &d.field, left: d.left.as_deref(), right: d.right.as_deref() })
                .collect(),
            noise: noise.iter().map(|d| d.field.as_str()).collect(),
            over_max_body: over,
        };
        (outcome, Some(found))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use reprise_proto::compare::EndpointCompare;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::executor::Executor;

    /// A loopback target answering each GET with JSON: a random `ts` and `id` (its own
    /// stream, so no two targets agree on them) and `price` 10. As the `candidate`, it also
    /// answers `/a/N` with price 11 when N is a multiple of 4, and `/b/N` with status 500
    /// when N is a multiple of 5. Returns its address.
    async fn json_target(seed: u64, candidate: bool) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut n = seed;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                n = n.wrapping_add(1_000_003);
                let mut state = n;
                tokio::spawn(async move {
                    let (mut buf, mut pending) = ([0u8; 4096], Vec::new());
                    loop {
                        let Ok(got) = sock.read(&mut buf).await else { return };
                        if got == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..got]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                            pending.drain(..end + 4);
                            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                            // The secondary never answers `/c/…`.
                            if seed == 3 && path.starts_with("/c/") {
                                return;
                            }
                            let index: u64 =
                                path.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(1);
                            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed | 1);
                            let price = if candidate && path.starts_with("/a/") && index.is_multiple_of(4) {
                                11
                            } else {
                                10
                            };
                            let status = if candidate && path.starts_with("/b/") && index.is_multiple_of(5) {
                                500
                            } else {
                                200
                            };
                            let body = format!(
                                r#"{{"ts":{},"id":"{:x}","price":{price}}}"#,
                                state >> 40,
                                state >> 8
                            );
                            let reply = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if sock.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Issue 13's test, at one replayer: the candidate's changed price and status are found
    /// with their exact counts, and the random fields are found noisy and not counted; a
    /// request the secondary does not answer is counted as not compared.
    #[tokio::test]
    async fn live_comparison_counts_real_changes_and_cancels_noise() {
        let (candidate, c) = json_target(1, true).await;
        let (primary, p) = json_target(2, false).await;
        let (secondary, s) = json_target(3, false).await;
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as i64;
        let cfg = pb::JobConfig {
            target: format!("http://{candidate}"),
            concurrency: 3,
            timeout_ms: 600_000,
            start_unix_ns: now_ns,
            credit_window: 1000,
            compare: Some(pb::CompareSettings {
                primary: format!("http://{primary}"),
                secondary: format!("http://{secondary}"),
                headers: vec!["Content-Type".into()],
                ignore: vec![],
                max_body: 1 << 20,
                recorded: false,
                protoset: Default::default(),
            }),
            ..Default::default()
        };
        let exec = Executor::new(cfg, false).expect("targets");
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(Arc::clone(&exec).run(rx, CancellationToken::new()));
        let mut paths: Vec<(String, u32)> =
            (1..=40).flat_map(|i| [(format!("/a/{i}"), 1), (format!("/b/{i}"), 2)]).collect();
        paths.extend((1..=5).map(|i| (format!("/c/{i}"), 3)));
        tx.send(crate::gets(paths.iter().map(|(p, e)| (p.as_str(), *e)))).await.expect("room");
        drop(tx);
        let finished = tokio::time::timeout(Duration::from_secs(30), run).await;
        for t in [c, p, s] {
            t.abort();
        }
        assert!(finished.is_ok(), "the executor ends");
        let d = exec.recorder().take();
        assert_eq!(d.total.counts.as_ref().expect("counts").ok, 77, "the candidate's answers: 8 were 500s");
        let mut by_endpoint = std::collections::BTreeMap::new();
        for w in &d.compare {
            by_endpoint.insert(w.endpoint, EndpointCompare::from_wire(w).summary());
        }
        let a = &by_endpoint[&1];
        assert_eq!((a.compared, a.differing), (40, 10), "{a:#?}");
        let fields = |s: &reprise_proto::compare::Summary| {
            s.fields.iter().map(|f| (f.field.clone(), f.counts.differing, f.noisy)).collect::<Vec<_>>()
        };
        assert_eq!(
            fields(a),
            vec![("$.id".into(), 40, true), ("$.ts".into(), 40, true), ("$.price".into(), 10, false)]
        );
        let b = &by_endpoint[&2];
        assert_eq!((b.compared, b.differing), (40, 8), "{b:#?}");
        assert_eq!(
            fields(b),
            vec![("$.id".into(), 40, true), ("$.ts".into(), 40, true), ("status".into(), 8, false)]
        );
        let c = &by_endpoint[&3];
        assert_eq!((c.compared, c.uncompared), (0, 5), "the secondary did not answer: {c:#?}");
        let price = a.fields.iter().find(|f| f.field == "$.price").expect("price");
        assert_eq!(price.counts.samples[0].left.as_deref(), Some("10"));
        assert_eq!(price.counts.samples[0].right.as_deref(), Some("11"));
    }
}
