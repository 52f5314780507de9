//! Bodies copied as they stream through. A [`Tee`] passes every frame of a request or an
//! answer on unchanged and unbuffered (a gRPC stream flows as it would without the proxy),
//! and copies what it needs into the exchange's [`Pending`] record on the way.
//!
//! An exchange is complete when both its bodies have been read to their end. The
//! [`Pending`] record is shared by the request, its two bodies and the answer's head, and
//! the last of them to go hands it to the sink: after the answer's last byte has gone to
//! the client, never before, so recording adds nothing to what the client waits for.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::Recorder;
use crate::counters::DropReason;
use crate::exchange::{Answer, Captured, Exchange};

/// Which body of the exchange a [`Tee`] copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Answer,
}

/// The record of an exchange still in flight.
pub struct Pending {
    state: Mutex<State>,
    started: Instant,
    recorder: Arc<Recorder>,
}

struct State {
    exchange: Exchange,
    request_whole: bool,
    answer_whole: bool,
}

impl Pending {
    pub fn new(exchange: Exchange, recorder: Arc<Recorder>) -> Arc<Pending> {
        let state = State { exchange, request_whole: false, answer_whole: false };
        Arc::new(Pending { state: Mutex::new(state), started: Instant::now(), recorder })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere cannot leave a half-written exchange here: take it as it is.
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s)
    }

    /// The answer's head arrived.
    pub fn answered(&self, status: u16, headers: &HeaderMap) {
        let answer = Answer::new(status, headers, self.recorder.keep());
        self.with(|s| s.exchange.answer = Some(answer));
    }

    /// No answer came: the client got a 502 with `why`.
    pub fn failed(&self, why: String) {
        self.with(|s| {
            s.exchange.error = Some(why);
            s.answer_whole = true;
        });
    }

    fn body(s: &mut State, side: Side) -> Option<&mut Captured> {
        match side {
            Side::Request => Some(&mut s.exchange.body),
            Side::Answer => s.exchange.answer.as_mut().map(|a| &mut a.body),
        }
    }

    pub fn data(&self, side: Side, part: &[u8]) {
        let max = self.recorder.max_body;
        self.with(|s| Self::body(s, side).map(|b| b.add(part, max)));
    }

    pub fn trailers(&self, side: Side, t: &HeaderMap) {
        // Request trailers are rare and the json format has no place for them.
        self.with(|s| {
            if let (Side::Answer, Some(a)) = (side, s.exchange.answer.as_mut()) {
                a.trailers(t);
            }
        });
    }

    pub fn ended(&self, side: Side, whole: bool) {
        self.with(|s| match side {
            Side::Request => s.request_whole = whole,
            Side::Answer => s.answer_whole = whole,
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !(state.request_whole && state.answer_whole) {
            self.recorder.counters.count_drop(DropReason::Incomplete, 1);
            return;
        }
        let mut e = std::mem::take(&mut state.exchange);
        e.took = self.started.elapsed();
        self.recorder.queue.offer(e);
    }
}

/// A body passed through frame by frame, copied into `pending` when the exchange is
/// recorded: a client's request or an answer hyper or [`crate::h2up`] took.
pub struct Tee<B: Body = Incoming> {
    inner: B,
    pending: Option<Arc<Pending>>,
    side: Side,
    ended: bool,
}

impl<B: Body> Tee<B> {
    pub fn new(inner: B, side: Side, pending: Option<Arc<Pending>>) -> Tee<B> {
        Tee { inner, pending, side, ended: false }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tee<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = &self.pending {
                    if let Some(d) = frame.data_ref() {
                        p.data(self.side, d);
                    } else if let Some(t) = frame.trailers_ref() {
                        p.trailers(self.side, t);
                    }
                }
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Tee<B> {
    fn drop(&mut self) {
        if let Some(p) = &self.pending {
            p.ended(self.side, self.ended || self.inner.is_end_stream());
        }
    }
}
