//! HTTP/2 to the target, through the `h2` crate: its connections multiplex many streams,
//! so they are shared by the executor's links (a pool of `ceil(concurrency / max_streams)`
//! connections, each link taking the next in turn), where an HTTP/1.1 connection belongs to
//! one link. Each connection's frames are read and written by a task of its own (h2's
//! `Connection` must be polled apart from the streams on it); a link's exchange is one
//! stream: headers, the recorded body as it is, then the answer read to its end, flow
//! control given back as it is read, and the trailers.
//!
//! Bounds: a link has one stream in flight, so a connection has at most its links' worth;
//! a server whose SETTINGS allow fewer concurrent streams makes the rest wait in h2 for a
//! free one (`SendRequest::ready`). A body goes out as the server's flow-control windows
//! allow; until then h2 holds it, and it is the record's own bytes (shared, not copied), so
//! a server that stops reading holds at most the records in flight.
//!
//! Failures are kinds of their own: GOAWAY (`goaway`), a reset stream (`stream_reset`), a
//! refused one (`refused_stream`); a connection that failed, or that the server is closing,
//! is given up by every link and the next request opens a new one. A request that never
//! left because its connection was closing goes once more on a new connection (a server's
//! GOAWAY between two requests is no failure of the second); a stream the server refused
//! after it was sent counts under its kind, as the server's answer to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::answer::{Answer, Keep};
use crate::errors::{ErrorKind, kind_of, known};
use crate::rpc::Frames;

/// Streams per connection when the job does not say (`[replayer] max_streams`).
pub const DEFAULT_MAX_STREAMS: u32 = 100;

/// A handle on one HTTP/2 connection, as a link holds it.
#[derive(Clone)]
pub struct H2 {
    send: SendRequest<Bytes>,
    /// The connection ended or failed, or a stream on it saw it go: no new streams on it.
    gone: Arc<AtomicBool>,
}

impl H2 {
    /// Starts HTTP/2 on `io` (a TCP stream, h2c with prior knowledge, or TLS that settled on
    /// h2): the handshake, then a task that drives the connection until it ends.
    pub async fn handshake<S>(io: S) -> Result<H2, ErrorKind>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = h2::client::Builder::new()
            .enable_push(false)
            // Answers are read as they come and their window given back at once: a larger
            // stream window than the default 64 KiB keeps a fast server from waiting on it.
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .max_header_list_size(256 << 10)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| kind_of(&e, true))?;
        let gone = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&gone);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an HTTP/2 connection to the target ended");
            }
            flag.store(true, Relaxed);
        });
        Ok(H2 { send, gone })
    }

    pub fn usable(&self) -> bool {
        !self.gone.load(Relaxed)
    }

    /// Sends `req` with `body` on a new stream and reads the whole answer, keeping what
    /// `keep` asks of it (headers and trailers alike). Returns the HTTP status, or for a gRPC
    /// call (`grpc`) the kind its `grpc-status` names when that is not 0. A request the
    /// connection could not take (it was closing, or had closed) is [`Sent::Not`]: it never
    /// reached the server, and may go on another connection.
    pub async fn exchange(
        &self,
        req: http::Request<()>,
        body: Bytes,
        grpc: bool,
        mut keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, Sent> {
        let fail = |e: h2::Error| {
            let kind = kind_of_h2(&e);
            if matches!(kind, ErrorKind::GoAway | ErrorKind::Reset | ErrorKind::Other) {
                self.gone.store(true, Relaxed);
            }
            kind
        };
        let unsent = |e: h2::Error| Sent::Not(fail(e));
        let mut send = self.send.clone().ready().await.map_err(unsent)?;
        let (response, mut stream) = send.send_request(req, body.is_empty()).map_err(unsent)?;
        let fail = |e| Sent::Failed(fail(e));
        if !body.is_empty() {
            stream.send_data(body, true).map_err(fail)?;
        }
        let response = response.await.map_err(fail)?;
        let status = response.status().as_u16();
        if let Some((keep, answer)) = keep.as_mut() {
            answer.status = status;
            answer.take_headers(keep, pairs(response.headers()).iter().copied());
        }
        let head_status = grpc.then(|| grpc_status(response.headers())).flatten();
        let mut body = response.into_body();
        let mut frames = Frames::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(fail)?;
            // The window is given back as soon as the bytes are taken: an answer of any size
            // costs a link no more than its chunk.
            let _ = body.flow_control().release_capacity(chunk.len());
            if grpc {
                frames.take(&chunk);
            }
            if let Some((keep, answer)) = keep.as_mut() {
                answer.take_body(keep, &chunk);
            }
        }
        let trailers = body.trailers().await.map_err(fail)?;
        if let (Some((keep, answer)), Some(t)) = (keep.as_mut(), &trailers) {
            answer.take_headers(keep, pairs(t).iter().copied());
        }
        if !grpc {
            return Ok(status);
        }
        crate::rpc::count_received(&frames);
        let code = trailers.as_ref().and_then(grpc_status).or(head_status);
        if let Some((_, answer)) = keep.as_mut() {
            answer.grpc_status = code;
        }
        match code {
            None => Err(Sent::Failed(ErrorKind::GrpcNoStatus)),
            Some(_) if !frames.whole() => Err(Sent::Failed(ErrorKind::GrpcFraming)),
            Some(0) => Ok(status),
            Some(code) => Err(Sent::Failed(ErrorKind::of_grpc_status(code))),
        }
    }
}

/// How an exchange that got no answer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The request never left: the connection was closing or closed.
    Not(ErrorKind),
    /// The stream was opened and then failed (a GOAWAY that did not cover it, a reset, …).
    Failed(ErrorKind),
}

impl Sent {
    pub fn kind(self) -> ErrorKind {
        match self {
            Sent::Not(k) | Sent::Failed(k) => k,
        }
    }
}

/// A map's headers as (name, value) pairs, for [`Answer::take_headers`].
fn pairs(map: &http::HeaderMap) -> Vec<(&str, &[u8])> {
    map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect()
}

/// The `grpc-status` of a header or trailer block, when it holds one that is a number.
fn grpc_status(map: &http::HeaderMap) -> Option<u32> {
    std::str::from_utf8(map.get("grpc-status")?.as_bytes()).ok()?.trim().parse().ok()
}

/// The error kind of a failed stream or connection.
fn kind_of_h2(e: &h2::Error) -> ErrorKind {
    if e.is_go_away() {
        ErrorKind::GoAway
    } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        ErrorKind::RefusedStream
    } else if e.is_reset() {
        ErrorKind::StreamReset
    } else {
        match e.get_io() {
            // h2 keeps an I/O error's kind and text, not the error: a TLS alert (a client
            // certificate refused after the handshake, in TLS 1.3) is known by its text.
            Some(io) if io.to_string().contains("alert") => known(ErrorKind::Tls, io),
            Some(io) => kind_of(io, false),
            None => kind_of(e, false),
        }
    }
}

/// The shared HTTP/2 connections of one target.
pub struct Pool {
    slots: Vec<tokio::sync::Mutex<Option<H2>>>,
    /// The slot the next link takes.
    turn: AtomicUsize,
}

impl Pool {
    /// Enough connections for `concurrency` streams at `max_streams` each.
    pub fn new(concurrency: u32, max_streams: u32) -> Pool {
        let per = if max_streams == 0 { DEFAULT_MAX_STREAMS } else { max_streams };
        let n = concurrency.max(1).div_ceil(per) as usize;
        Pool { slots: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(), turn: AtomicUsize::new(0) }
    }

    /// A connection for a link: the next slot's, opened with `open` if it has none or its
    /// connection is gone. Links asking for the same slot meanwhile wait for that one open.
    pub async fn take<F, Fut>(&self, open: F) -> Result<H2, ErrorKind>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<H2, ErrorKind>>,
    {
        let at = self.turn.fetch_add(1, Relaxed) % self.slots.len();
        let mut slot = self.slots[at].lock().await;
        if let Some(h2) = slot.as_ref().filter(|h| h.usable()) {
            return Ok(h2.clone());
        }
        *slot = None;
        let h2 = open().await?;
        *slot = Some(h2.clone());
        Ok(h2)
    }

    /// Offers a connection a link opened itself (ALPN settled on h2) to the next empty
    /// slot, for the links after it.
    pub fn offer(&self, h2: &H2) {
        for slot in &self.slots {
            if let Ok(mut s) = slot.try_lock()
                && !s.as_ref().is_some_and(H2::usable)
            {
                *s = Some(h2.clone());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_enough_for_the_streams_in_flight() {
        assert_eq!(Pool::new(256, 100).slots.len(), 3);
        assert_eq!(Pool::new(100, 100).slots.len(), 1);
        assert_eq!(Pool::new(8, 1).slots.len(), 8);
        assert_eq!(Pool::new(0, 0).slots.len(), 1);
        assert_eq!(Pool::new(1000, 0).slots.len(), 10);
    }
}
