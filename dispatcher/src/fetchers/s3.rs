//! The object-store fetcher: objects of an S3-compatible bucket (AWS, MinIO, OSS, GCS…)
//! whose keys match a pattern with time fields ([`crate::config::keys`]), each streamed, gunzipped
//! when it is gzip, parsed, and merged by record time in [`super::merge`].
//!
//! Listing: only the prefixes that can hold `[begin, end]` are listed (with pagination), and
//! objects whose key period lies outside the range are never fetched. Order: an object
//! enters the merge as a lazy stream opened at its period's start minus the reorder window,
//! so objects of one period are merged together and later periods wait their turn; with no
//! time fields in the pattern every object is merged at once, like a glob of files.
//!
//! Memory: at most `concurrency` objects are downloaded ahead of the merge (an object the
//! merge needs now always starts), each buffering at most its share of `pre_download`
//! records. A network error mid-object resumes by fetching it again and passing over the
//! units already read; a missing or unreadable object is counted, logged, and named in the
//! report ([`super::progress`]); the others go on.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::io::SyncIoBridge;

use super::merge::{Chunk, Stream};
use super::progress::Counted;
use super::units::{ReadEnd, parse_stream};
use super::{CHUNK, Chunker, FetchError, SourceContext, decompressed};
use crate::accounting::Malformed;
use crate::config::{KeyPattern, Range, S3Settings};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// An object to read, with the period its key gives.
#[derive(Clone, Debug)]
struct Object {
    key: String,
    opens_at: Option<i64>,
}

/// Lists the objects that can hold the range and starts their downloads in time order.
pub async fn start(
    s3: S3Settings,
    pattern: KeyPattern,
    range: Range,
    ctx: &SourceContext,
) -> Result<Vec<Stream>, FetchError> {
    let err = |reason: String| FetchError::S3 { bucket: s3.bucket.clone(), reason };
    let client = client(&s3).await;
    let mut objects = list(&client, &s3, &pattern, range).await.map_err(&err)?;
    if objects.is_empty() {
        return Err(err(format!(
            "no object matches {:?} within the job's time range; check fetcher.s3.prefix and fetcher.s3.key",
            s3.pattern
        )));
    }
    // A shard reads its objects whole when there are more objects than shards, else its
    // records of every object (crate::shard).
    let mut ctx = ctx.clone();
    let mut keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    keys.sort_unstable();
    let (mine, shard) = ctx.shard.parts(keys, objects.len() > ctx.shard.count() as usize);
    if shard.is_whole() && !ctx.shard.is_whole() {
        let mine: std::collections::HashSet<String> = mine.into_iter().collect();
        objects.retain(|o| mine.contains(&o.key));
    }
    ctx.shard = shard;
    let ctx = &ctx;
    if !pattern.has_time() && objects.len() > s3.concurrency as usize * 16 {
        tracing::warn!(
            objects = objects.len(),
            "the key pattern has no time fields, so every object is opened at once; add {{yyyy}}/{{MM}}/{{dd}}/{{HH}} fields to read them in time order"
        );
    }
    ctx.progress.describe("s3", "object", false);
    ctx.progress.parts(objects.len() as u64);
    let per_object = (s3.pre_download as usize / CHUNK / s3.concurrency as usize).max(1);
    let ahead = Arc::new(Semaphore::new(s3.concurrency as usize));
    let mut streams = Vec::with_capacity(objects.len());
    let mut launches = Vec::with_capacity(objects.len());
    for obj in objects {
        let (tx, rx) = mpsc::channel(per_object);
        let (open_tx, open_rx) = oneshot::channel();
        streams.push(match obj.opens_at {
            Some(at) => Stream::lazy(rx, at, open_tx),
            None => {
                let _ = open_tx.send(());
                Stream::new(rx)
            }
        });
        launches.push((obj, tx, open_rx));
    }
    let reader = Reader { client, bucket: s3.bucket.clone(), retries: s3.retries, ctx: ctx.clone() };
    ctx.tasks.spawn(launch(reader, launches, ahead));
    Ok(streams)
}

/// The SDK's HTTP client on the project's one TLS stack (rustls with ring).
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

async fn client(s3: &S3Settings) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
    // S3-compatible servers mostly ignore the region, but signing needs one; naming it here
    // also keeps the SDK from asking the EC2 metadata service for it.
    let region = s3.region.clone().or_else(|| s3.endpoint.as_ref().map(|_| "us-east-1".to_owned()));
    if let Some(r) = region {
        loader = loader.region(Region::new(r));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s3.path_style)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(s3.retries + 1));
    if let Some(e) = &s3.endpoint {
        conf = conf.endpoint_url(e);
    }
    Client::from_conf(conf.build())
}

/// The matching objects in range, ordered by when the merge needs them.
async fn list(
    client: &Client,
    s3: &S3Settings,
    pattern: &KeyPattern,
    range: Range,
) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for prefix in pattern.prefixes(range) {
        let mut pages = client.list_objects_v2().bucket(&s3.bucket).prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!(
                    "cannot list prefix {prefix:?}: {}; check the bucket, endpoint and credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
                    DisplayErrorContext(&e)
                )
            })?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                match pattern.period(key) {
                    None => {}
                    Some(None) => out.push(Object { key: key.to_owned(), opens_at: None }),
                    Some(Some(p)) => {
                        let w = range.window_ns;
                        let before =
                            range.begin.is_some_and(|b| p.start.saturating_add(p.len).saturating_add(w) <= b);
                        let after = range.end.is_some_and(|e| p.start.saturating_sub(w) > e);
                        if !(before || after) {
                            out.push(Object {
                                key: key.to_owned(),
                                opens_at: Some(p.start.saturating_sub(w)),
                            });
                        }
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| (a.opens_at, &a.key).cmp(&(b.opens_at, &b.key)));
    out.dedup_by(|a, b| a.key == b.key);
    Ok(out)
}

/// Starts downloads in order: each once a slot ahead is free or the merge opens it.
async fn launch(
    reader: Reader,
    launches: Vec<(Object, mpsc::Sender<Chunk>, oneshot::Receiver<()>)>,
    ahead: Arc<Semaphore>,
) {
    let reader = Arc::new(reader);
    for (obj, tx, mut opened) in launches {
        let permit = tokio::select! {
            p = Arc::clone(&ahead).acquire_owned() => p.ok(),
            o = &mut opened => match o {
                Ok(()) => None,
                Err(_) => return, // the merge is gone: the job ended or was stopped
            },
        };
        if reader.ctx.cancel.is_cancelled() || tx.is_closed() {
            return;
        }
        let reader = Arc::clone(&reader);
        let tasks = reader.ctx.tasks.clone();
        tasks.spawn(async move {
            reader.read(&obj.key, tx).await;
            drop(permit);
        });
    }
}

struct Reader {
    client: Client,
    bucket: String,
    retries: u32,
    ctx: SourceContext,
}

impl Reader {
    /// Streams one object into `tx`, resuming after network errors, until its end.
    async fn read(&self, key: &str, tx: mpsc::Sender<Chunk>) {
        let name = format!("s3://{}/{key}", self.bucket);
        let (mut at, mut attempt, mut backoff) = (0u64, 0u32, FIRST_BACKOFF);
        loop {
            let got = self.client.get_object().bucket(&self.bucket).key(key).send().await;
            let body = match got {
                Ok(o) => o.body,
                Err(e) => {
                    let why = match e.code() {
                        Some("NoSuchKey") => "missing: deleted after it was listed".to_owned(),
                        _ => format!("cannot fetch: {}", DisplayErrorContext(&e)),
                    };
                    return self.failed(&name, &why);
                }
            };
            let bridge = SyncIoBridge::new(Box::pin(body.into_async_read()));
            let (ctx, tx2, source) = (self.ctx.clone(), tx.clone(), name.clone());
            let parsed = tokio::task::spawn_blocking(move || {
                let result = read_body(bridge, &source, &ctx, &tx2, &mut at);
                (result, at)
            })
            .await;
            let Ok((result, next_at)) = parsed else { return self.failed(&name, "its reader panicked") };
            at = next_at;
            match result {
                Ok(ReadEnd::End) => return self.ctx.progress.part_done(),
                Ok(ReadEnd::Stopped) => return,
                Err(e) if retryable(&e) && attempt < self.retries && !self.ctx.cancel.is_cancelled() => {
                    tracing::warn!(object = %name, unit = at, error = %e, "download broke off; resuming");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => return self.failed(&name, &format!("unreadable after unit {at}: {e}")),
            }
        }
    }

    fn failed(&self, name: &str, why: &str) {
        self.ctx.accounting.malformed(Malformed::UnreadableObject, why, b"", name, 0);
        self.ctx.progress.part_failed(name, why);
    }
}

/// Parses an object's body on a blocking thread; hands over what was read even on error.
fn read_body(
    body: impl Read + Send + 'static,
    source: &str,
    ctx: &SourceContext,
    tx: &mpsc::Sender<Chunk>,
    at: &mut u64,
) -> io::Result<ReadEnd> {
    let mut reader = decompressed(Counted::new(body, &ctx.progress))?;
    let mut out = Chunker::new(tx, &ctx.progress);
    let result = parse_stream(&mut reader, source, ctx, at, |r| out.push(r));
    let handed = out.flush();
    match result {
        Ok(ReadEnd::End) if !handed => Ok(ReadEnd::Stopped),
        other => other,
    }
}

/// A broken connection is worth another attempt; a corrupt object is not.
fn retryable(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    )
}
