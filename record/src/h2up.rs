//! Requests that go up over HTTP/2, sent on an `h2` client connection by the task that
//! serves the client's stream, which then waits for the answer itself.
//!
//! Written on the `h2` crate rather than through hyper's client: for each request, hyper's
//! client hands it to the connection's task over a channel, spawns a task that waits for
//! the answer (and another that sends the body), and hands the answer back over a second
//! channel. The proxy already has a task per stream waiting for it, so those steps did
//! the same work twice. What hyper does besides is done here too: the request's body goes
//! up as it comes, taking the upstream's flow control as it allows (at most one frame
//! held), its end or its trailers sent; the answer's body is taken frame by frame, its
//! window given back as each frame is passed on; a stream either side resets is reset on
//! the other.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens an HTTP/2 connection over `io`, driven by a task of its own, with hyper's
/// client's windows (2 MiB a stream, 5 MiB the connection) and no server push.
pub async fn handshake<IO>(io: IO, max_head: u32) -> Result<SendRequest<Bytes>, BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .max_header_list_size(max_head)
        .max_send_buffer_size(1 << 20)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Sends `head` with `body` on `sender`'s connection and resolves with the answer's head.
/// The body goes up while the answer is awaited; when the answer comes first (a gRPC
/// stream both ways), the rest of the body goes up from a task of its own.
pub async fn send<B>(
    sender: &mut SendRequest<Bytes>,
    head: Request<()>,
    body: B,
) -> Result<Response<Answer>, BoxError>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let end = body.is_end_stream();
    let (mut answer, tx) = sender.send_request(head, end)?;
    let answer = if end {
        answer.await?
    } else {
        let mut pipe = Some(Pipe { body, tx, held: None, drained: 0 });
        let answer = poll_fn(|cx| {
            if let Some(p) = pipe.as_mut()
                && let Poll::Ready(piped) = p.poll_pipe(cx)
            {
                if let Err(e) = piped {
                    tracing::debug!(error = %e, "request body not sent whole");
                }
                pipe = None;
            }
            Pin::new(&mut answer).poll(cx)
        })
        .await?;
        if let Some(pipe) = pipe {
            tokio::spawn(pipe);
        }
        answer
    };
    Ok(answer.map(|recv| Answer { recv, data_done: false }))
}

/// Whether the upstream refused a request it did not process: a stream reset with
/// `REFUSED_STREAM`, or past the last one a `GOAWAY` took without an error (a server ending
/// a connection after so many requests, as nginx's `keepalive_requests`).
pub fn refused(e: &BoxError) -> bool {
    e.downcast_ref::<h2::Error>().is_some_and(|e| {
        e.is_remote()
            && match e.reason() {
                Some(h2::Reason::REFUSED_STREAM) => e.is_reset(),
                Some(h2::Reason::NO_ERROR) => e.is_go_away(),
                _ => false,
            }
    })
}

/// A request's head as it was, to send again.
pub fn copy(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    copy
}

/// A request's body going up.
struct Pipe<B> {
    body: B,
    tx: SendStream<Bytes>,
    /// A frame taken from the body, waiting for the upstream's window, and whether it is
    /// the body's last.
    held: Option<(Bytes, bool)>,
    /// Bytes of the body read after the upstream wanted no more of it.
    drained: usize,
}

/// The most of a request's body read after the upstream answered without it (it reset the
/// stream with `NO_ERROR`); a client sending more is let go, its exchange not recorded.
const MAX_DRAIN: usize = 1 << 20;

impl<B> Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_pipe(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            // The upstream reset the stream: nothing more goes up. Without an error (it has
            // answered, and wants no more of the body) the client's body is still read, for
            // the recording.
            if let Poll::Ready(reason) = self.tx.poll_reset(cx) {
                let reason = reason?;
                if reason != h2::Reason::NO_ERROR {
                    return Poll::Ready(Err(format!("the upstream reset the stream: {reason:?}").into()));
                }
                self.held = None;
                return self.poll_drain(cx);
            }
            if self.held.is_some() {
                while self.tx.capacity() == 0 {
                    match ready!(self.tx.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(e.into())),
                        None => return Poll::Ready(Err("the upstream stream closed".into())),
                    }
                }
                let (data, end) = self.held.take().expect("held");
                self.tx.send_data(data, end)?;
                if end {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        if data.is_empty() {
                            self.tx.send_data(data, end)?;
                            if end {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            // A claim of one byte, not the frame's length: a claim waiting
                            // for the window holds what it has of the connection's, which
                            // other streams may need first. h2 claims the rest as it sends.
                            self.tx.reserve_capacity(1);
                            self.held = Some((data, end));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.tx.reserve_capacity(0);
                            self.tx.send_trailers(trailers)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.tx.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(Err(e.into()));
                }
                None => {
                    self.tx.send_data(Bytes::new(), true)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<B> Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads the body to its end without sending it, up to [`MAX_DRAIN`] bytes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        while !self.body.is_end_stream() {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    self.drained += frame.data_ref().map_or(0, Bytes::len);
                    if self.drained > MAX_DRAIN {
                        return Poll::Ready(Err(
                            "the upstream answered before the request's body ended".into()
                        ));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Err(e) = ready!(self.poll_pipe(cx)) {
            tracing::debug!(error = %e, "request body not sent whole");
        }
        Poll::Ready(())
    }
}

/// An answer's body from the upstream: its data, then its trailers.
pub struct Answer {
    recv: RecvStream,
    data_done: bool,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Passed on: the upstream may send as much again.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// A request body the test feeds chunk by chunk; counts what was read of it, and
    /// whether it was read to its end.
    struct Fed {
        rx: mpsc::Receiver<Bytes>,
        read: Arc<AtomicUsize>,
        ended: Arc<AtomicBool>,
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let chunk = ready!(self.rx.poll_recv(cx));
            match chunk {
                Some(c) => {
                    self.read.fetch_add(c.len(), SeqCst);
                    Poll::Ready(Some(Ok(Frame::data(c))))
                }
                None => {
                    self.ended.store(true, SeqCst);
                    Poll::Ready(None)
                }
            }
        }
    }

    /// An upstream that answers after the body's first chunk and, once the client has the
    /// answer, resets the stream with `NO_ERROR` (it wants no more of the body): the rest of
    /// the client's body is still read to its end (for the recording), not left half read.
    #[tokio::test]
    async fn a_body_the_upstream_answered_early_is_still_read_to_its_end() {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(far).await.expect("server handshake");
            let (req, mut respond) = conn.accept().await.expect("a stream").expect("a request");
            // The connection reads and writes while the stream is served.
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let mut body = req.into_body();
            assert_eq!(body.data().await.expect("a chunk").expect("data").len(), 1000);
            let answer = Response::builder().status(201).body(()).expect("answer");
            respond.send_response(answer, true).expect("sent");
            // The second chunk is fed once the client has the answer.
            assert_eq!(body.data().await.expect("a chunk").expect("data").len(), 1000);
            respond.send_reset(h2::Reason::NO_ERROR);
            let _ = reset_tx.send(());
        });
        let mut sender = handshake(near, 64 << 10).await.expect("client handshake");
        let (tx, rx) = mpsc::channel(4);
        let (read, ended) = (Arc::default(), Arc::default());
        let body = Fed { rx, read: Arc::clone(&read), ended: Arc::clone(&ended) };
        let chunk = || Bytes::from(vec![b'a'; 1000]);
        tx.send(chunk()).await.expect("fed");
        let head = Request::post("http://upstream/upload").body(()).expect("head");
        let answer = tokio::time::timeout(Duration::from_secs(10), send(&mut sender, head, body));
        let answer = answer.await.expect("an answer within 10 s").expect("an answer");
        assert_eq!(answer.status(), 201);
        tx.send(chunk()).await.expect("fed");
        tokio::time::timeout(Duration::from_secs(10), reset_rx).await.expect("reset").expect("reset");
        // One thread: while this task sleeps, the client's connection takes the reset in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..2 {
            tx.send(chunk()).await.expect("fed");
        }
        drop(tx);
        let whole = async {
            while !ended.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), whole).await.expect("the body read to its end");
        assert_eq!(read.load(SeqCst), 4000);
    }
}
