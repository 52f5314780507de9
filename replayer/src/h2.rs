//! HTTP/2 to the target: a client written for the executor's shape, where every link of a
//! job is a future polled by one driver task ([`crate::slots`]).
//!
//! Why by hand: the `h2` crate drives each connection from a task of its own, and a stream
//! reaches it through a shared lock, a request type and wakeups across tasks; measured
//! against h2load on the same server, that machinery was most of the replayer's time
//! (docs/performance.md, bench h). Here a connection is state that its links share
//! ([`H2`]): whichever link is polled writes what is queued and reads what came, hands each
//! frame to its stream and wakes that stream's link. There is no connection task; a link
//! that finishes while the socket would wake it passes that on to another. Requests are
//! encoded from the record straight into HPACK ([`crate::hpack`]); a link's frames wait
//! until the links whose answers came with its own have queued theirs, so one write
//! carries a batch, as one read brought the answers.
//!
//! What the protocol asks of a client, and what is left out:
//! - SETTINGS are read before the first stream (the server's limit on concurrent streams
//!   holds from the start) and acknowledged; PING is answered; PRIORITY and unknown frames
//!   are ignored; server push is refused in the client's SETTINGS (a PUSH_PROMISE is a
//!   protocol error).
//! - Flow control: bodies go out as the server's windows allow, the rest waits in the
//!   stream as the record's own bytes (shared, not copied), so a server that stops reading
//!   holds at most the records in flight. Answers are read as they come and their windows
//!   given back once half is used (a stream window of 1 MiB, 4 MiB for the connection).
//! - Bounds: a link has one stream in flight, so a connection has at most its links'
//!   worth; when the server allows fewer, the rest wait for a stream to end. A header
//!   block may span CONTINUATION frames up to 256 KiB; frames are at most 16 KiB (the
//!   default, not raised).
//!
//! Failures are kinds of their own: GOAWAY (`goaway`), a reset stream (`stream_reset`), a
//! refused one (`refused_stream`). A connection that failed or is going away takes no new
//! streams and the next request opens a new one. A request that never left, or that a
//! GOAWAY says the server did not process, goes once more on a new connection (a server's
//! GOAWAY between two requests is no failure of the second). A target that breaks the
//! protocol (a frame too large, a header block that does not decode) fails the connection
//! as `other`, with the reason logged, and is told why in a GOAWAY.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::answer::{Answer, Keep};
use crate::errors::{ErrorKind, kind_of, known};
use crate::hpack;
use crate::request::{is_replayed, push_target};
use crate::rpc::Frames;
use reprise_proto::batch::RecordView;

/// Streams per connection when the job does not say (`[replayer] max_streams`).
pub const DEFAULT_MAX_STREAMS: u32 = 100;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The window each stream's answer gets.
const STREAM_WINDOW: u32 = 1 << 20;
/// The window of all the connection's answers together.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The protocol's default window, where the connection's starts.
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest frame the client takes (the default; it does not ask for more).
const MAX_FRAME: usize = 16_384;
/// The most bytes of one header block (HEADERS and CONTINUATION frames together).
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 64 << 10;
/// Reads one poll makes before it lets the other links run.
const READS_PER_POLL: usize = 16;
/// The highest stream identifier (31 bits).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

// Frame types and flags (RFC 9113 section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// Settings and error codes.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;

/// The byte stream under a connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a connection reads and writes: a socket ([`Io`]), or bytes in a test.
pub(crate) trait Transport {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for Io {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        match self {
            Io::Plain(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, buf),
            Io::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(&mut **s), cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    /// TLS keeps records it could not write yet; a TCP stream has nothing to flush.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Plain(_) => Poll::Ready(Ok(())),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
}

/// How an exchange that got no answer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The request never left, or the server said it did not process it (GOAWAY).
    Not(ErrorKind),
    /// The stream was opened and then failed (a reset, the connection lost, …).
    Failed(ErrorKind),
}

impl Sent {
    pub fn kind(self) -> ErrorKind {
        match self {
            Sent::Not(k) | Sent::Failed(k) => k,
        }
    }
}

/// A target that broke the protocol, and how.
#[derive(Debug, thiserror::Error)]
#[error("the target broke HTTP/2: {why}")]
struct Broken {
    why: &'static str,
    /// The error code the client's GOAWAY gives.
    code: u32,
}

fn broken(code: u32, why: &'static str) -> Broken {
    Broken { why, code }
}

/// One stream: what the link asked for and what came back so far.
struct Stream {
    /// The link's, woken when something comes for it.
    waker: Waker,
    /// Whether the answer's headers and body are kept (response comparison).
    keep: bool,
    grpc: bool,
    /// The final status, 0 until the answer's head came.
    status: u16,
    head: Vec<(String, Vec<u8>)>,
    trailers: Vec<(String, Vec<u8>)>,
    grpc_head: Option<u32>,
    grpc_trailer: Option<u32>,
    /// Body bytes kept and not yet taken by the link.
    data: VecDeque<Bytes>,
    frames: Frames,
    /// The server ended its side.
    ended: bool,
    failed: Option<Sent>,
    /// Body bytes still to send, and the stream's send window.
    body: Bytes,
    window: i64,
    /// Answer bytes read since the stream's window was last given back.
    unacked: u32,
}

/// A header block that continues in CONTINUATION frames.
struct Continued {
    id: u32,
    end: bool,
    block: Vec<u8>,
}

/// One connection's state, shared by the links on it.
struct Conn<T = Io> {
    io: T,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` written so far.
    written: usize,
    encoder: hpack::Encoder,
    decoder: hpack::Decoder,
    /// The header block being written.
    block: Vec<u8>,
    /// By stream id. Ids are this side's, so a fast hash without a random key is safe.
    streams: HashMap<u32, Stream, foldhash::fast::FixedState>,
    next_id: u32,
    /// The server's settings.
    max_streams: usize,
    initial_window: i64,
    max_frame: usize,
    /// The connection's send window.
    send_window: i64,
    /// Answer bytes read since the connection's window was last given back.
    unacked: u32,
    /// The server's first SETTINGS came.
    settled: bool,
    /// The last stream a GOAWAY said the server processes.
    goaway: Option<u32>,
    failed: Option<ErrorKind>,
    /// Why the socket took no more bytes.
    refused: Option<io::Error>,
    continued: Option<Continued>,
    /// Links waiting for a stream (the server's limit was reached).
    waiting: VecDeque<Waker>,
    /// The links the socket wakes when it can be read, and written.
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// Streams opened whose links have not yet been polled again: until then, frames wait
    /// in `wbuf` (the last of those links writes them all at once).
    unflushed: usize,
}

/// Appends a frame header.
fn frame_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, id: u32) {
    let len = len as u32;
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&id.to_be_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Sends as much of a stream's body as the windows allow.
fn send_body(wbuf: &mut Vec<u8>, send_window: &mut i64, max_frame: usize, id: u32, s: &mut Stream) {
    while !s.body.is_empty() {
        let n = s.body.len().min(s.window.max(0) as usize).min((*send_window).max(0) as usize).min(max_frame);
        if n == 0 {
            return;
        }
        let chunk = s.body.split_to(n);
        frame_head(wbuf, n, DATA, if s.body.is_empty() { END_STREAM } else { 0 }, id);
        wbuf.extend_from_slice(&chunk);
        s.window -= n as i64;
        *send_window -= n as i64;
    }
}

/// Replaces `slot`'s waker with `waker` unless it would wake the same.
fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

impl<T: Transport> Conn<T> {
    fn new(io: T) -> Conn<T> {
        let mut wbuf = Vec::with_capacity(READ_CHUNK);
        wbuf.extend_from_slice(PREFACE);
        frame_head(&mut wbuf, 12, SETTINGS, 0, 0);
        for (id, value) in [(SETTINGS_ENABLE_PUSH, 0), (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW)] {
            wbuf.extend_from_slice(&id.to_be_bytes());
            wbuf.extend_from_slice(&value.to_be_bytes());
        }
        frame_head(&mut wbuf, 4, WINDOW_UPDATE, 0, 0);
        wbuf.extend_from_slice(&(CONNECTION_WINDOW - DEFAULT_WINDOW as u32).to_be_bytes());
        Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf,
            written: 0,
            encoder: hpack::Encoder::default(),
            decoder: hpack::Decoder::default(),
            block: Vec::new(),
            streams: HashMap::default(),
            next_id: 1,
            max_streams: usize::MAX,
            initial_window: DEFAULT_WINDOW,
            max_frame: MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            unacked: 0,
            settled: false,
            goaway: None,
            failed: None,
            refused: None,
            continued: None,
            waiting: VecDeque::new(),
            reader: None,
            writer: None,
            unflushed: 0,
        }
    }

    /// Why no new stream can start here, if none can.
    fn closed(&self) -> Option<ErrorKind> {
        match (self.failed, self.goaway) {
            (Some(kind), _) => Some(kind),
            (None, Some(_)) => Some(ErrorKind::GoAway),
            (None, None) if self.next_id > MAX_STREAM_ID => Some(ErrorKind::Other),
            (None, None) => None,
        }
    }

    /// Writes what is queued, then reads and handles what came, then writes what that
    /// asked for (acknowledgements, windows given back). Writes wait while links that just
    /// opened streams have yet to come back (see `unflushed`).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.unflushed == 0 {
            self.flush(cx);
        }
        // The link the socket wakes reads for all; the others need not look.
        let mut reads = 0;
        let reading = self.refused.is_some() || self.reader.as_ref().is_none_or(|r| r.will_wake(cx.waker()));
        while reading && self.failed.is_none() {
            if let Err(e) = self.handle_frames() {
                self.break_off(e);
                break;
            }
            if reads == READS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            if self.rbuf.capacity() - self.rbuf.len() < MAX_FRAME {
                self.rbuf.reserve(READ_CHUNK);
            }
            match self.io.poll_read(cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the target closed the connection");
                    let refused = self.refused.take();
                    self.fail_io(refused.as_ref().unwrap_or(&e));
                }
                Poll::Ready(Ok(_)) => reads += 1,
                Poll::Ready(Err(e)) => self.fail_io(&e),
                Poll::Pending => {
                    set_waker(&mut self.reader, cx.waker());
                    break;
                }
            }
        }
        if self.unflushed == 0 {
            self.flush(cx);
        }
    }

    /// Writes the queued frames as far as the socket takes them. A write that fails (the
    /// server closed) fails the connection only once reading ends too: what the server said
    /// before it closed (a GOAWAY) is read first, and explains the close.
    fn flush(&mut self, cx: &mut Context<'_>) {
        if self.failed.is_some() || self.refused.is_some() {
            return;
        }
        while self.written < self.wbuf.len() {
            match self.io.poll_write(cx, &self.wbuf[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "the target stopped taking bytes");
                    self.refused = Some(e);
                    return;
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => {
                    self.refused = Some(e);
                    return;
                }
                Poll::Pending => {
                    set_waker(&mut self.writer, cx.waker());
                    return;
                }
            }
        }
        self.wbuf.clear();
        self.written = 0;
        match self.io.poll_flush(cx) {
            Poll::Ready(Err(e)) => self.refused = Some(e),
            Poll::Pending => set_waker(&mut self.writer, cx.waker()),
            Poll::Ready(Ok(())) => {}
        }
    }

    /// Handles the whole frames read so far.
    fn handle_frames(&mut self) -> Result<(), Broken> {
        let mut buf = std::mem::take(&mut self.rbuf);
        let mut at = 0;
        let handled = loop {
            let rest = &buf[at..];
            if rest.len() < 9 || self.failed.is_some() {
                break Ok(());
            }
            let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            if len > MAX_FRAME {
                break Err(broken(FRAME_SIZE_ERROR, "a frame larger than the client allows"));
            }
            if rest.len() < 9 + len {
                break Ok(());
            }
            let (kind, flags, id) = (rest[3], rest[4], u32_at(rest, 5) & MAX_STREAM_ID);
            if self.continued.as_ref().is_some_and(|c| kind != CONTINUATION || c.id != id) {
                break Err(broken(PROTOCOL_ERROR, "a header block interrupted by another frame"));
            }
            if let Err(e) = self.frame(kind, flags, id, &rest[9..9 + len]) {
                break Err(e);
            }
            at += 9 + len;
        };
        buf.advance(at);
        self.rbuf = buf;
        handled
    }

    fn frame(&mut self, kind: u8, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        match kind {
            DATA => self.data(flags, id, payload),
            HEADERS => self.headers(flags, id, payload),
            CONTINUATION => {
                let Some(mut c) = self.continued.take() else {
                    return Err(broken(PROTOCOL_ERROR, "a CONTINUATION frame without a header block"));
                };
                if c.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(broken(PROTOCOL_ERROR, "a header block over 256 KiB"));
                }
                c.block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    self.header_block(c.id, c.end, &c.block)
                } else {
                    self.continued = Some(c);
                    Ok(())
                }
            }
            RST_STREAM if payload.len() == 4 => {
                if let Some(s) = self.streams.get_mut(&id).filter(|s| !s.ended && s.failed.is_none()) {
                    let kind = match u32_at(payload, 0) {
                        REFUSED_STREAM => ErrorKind::RefusedStream,
                        _ => ErrorKind::StreamReset,
                    };
                    s.failed = Some(Sent::Failed(kind));
                    s.waker.wake_by_ref();
                }
                Ok(())
            }
            SETTINGS => self.settings(flags, id, payload),
            PING if payload.len() == 8 => {
                if flags & ACK == 0 {
                    frame_head(&mut self.wbuf, 8, PING, ACK, 0);
                    self.wbuf.extend_from_slice(payload);
                }
                Ok(())
            }
            GOAWAY if payload.len() >= 8 => {
                let last = u32_at(payload, 0) & MAX_STREAM_ID;
                tracing::debug!(last, code = u32_at(payload, 4), "the target sent GOAWAY");
                self.goaway = Some(last);
                for s in self.streams.iter_mut().filter(|(id, _)| **id > last).map(|(_, s)| s) {
                    // The server did not process it: it may go again, elsewhere.
                    if s.failed.is_none() && !s.ended {
                        s.failed = Some(Sent::Not(ErrorKind::GoAway));
                        s.waker.wake_by_ref();
                    }
                }
                self.waiting.drain(..).for_each(Waker::wake);
                Ok(())
            }
            WINDOW_UPDATE if payload.len() == 4 => {
                let increment = i64::from(u32_at(payload, 0) & MAX_STREAM_ID);
                if id == 0 {
                    self.send_window += increment;
                    if self.send_window > i64::from(MAX_STREAM_ID) {
                        return Err(broken(FLOW_CONTROL_ERROR, "a connection window over 2^31-1"));
                    }
                } else if let Some(s) = self.streams.get_mut(&id) {
                    s.window += increment;
                }
                self.send_bodies();
                Ok(())
            }
            RST_STREAM | PING | GOAWAY | WINDOW_UPDATE => {
                Err(broken(FRAME_SIZE_ERROR, "a control frame of the wrong length"))
            }
            PUSH_PROMISE => Err(broken(PROTOCOL_ERROR, "a pushed stream, which the client refused")),
            // PRIORITY, and frame types the client does not know.
            _ => Ok(()),
        }
    }

    /// Strips a frame's padding.
    fn unpad(flags: u8, payload: &[u8]) -> Result<std::ops::Range<usize>, Broken> {
        if flags & PADDED == 0 {
            return Ok(0..payload.len());
        }
        let pad = usize::from(*payload.first().ok_or(broken(PROTOCOL_ERROR, "padding past the frame"))?);
        if 1 + pad > payload.len() {
            return Err(broken(PROTOCOL_ERROR, "padding past the frame"));
        }
        Ok(1..payload.len() - pad)
    }

    fn data(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        if id == 0 {
            return Err(broken(PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let whole = payload.len() as u32;
        let range = Self::unpad(flags, payload)?;
        // Answers are taken as they come: their window is given back as read.
        self.unacked += whole;
        if self.unacked >= CONNECTION_WINDOW / 2 {
            frame_head(&mut self.wbuf, 4, WINDOW_UPDATE, 0, 0);
            self.wbuf.extend_from_slice(&self.unacked.to_be_bytes());
            self.unacked = 0;
        }
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.ended && s.failed.is_none()) else {
            return Ok(());
        };
        if s.status == 0 {
            s.failed = Some(Sent::Failed(ErrorKind::Other));
            s.waker.wake_by_ref();
            return Ok(());
        }
        let data = &payload[range];
        if s.grpc {
            s.frames.take(data);
        }
        // Kept (response comparison) until the link takes it: a copy, as the read buffer
        // is reused.
        if s.keep && !data.is_empty() {
            s.data.push_back(Bytes::copy_from_slice(data));
        }
        if flags & END_STREAM != 0 {
            s.ended = true;
        } else {
            s.unacked += whole;
            if s.unacked >= STREAM_WINDOW / 2 {
                frame_head(&mut self.wbuf, 4, WINDOW_UPDATE, 0, id);
                self.wbuf.extend_from_slice(&s.unacked.to_be_bytes());
                s.unacked = 0;
            }
        }
        s.waker.wake_by_ref();
        Ok(())
    }

    fn headers(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        if id == 0 {
            return Err(broken(PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let mut range = Self::unpad(flags, payload)?;
        if flags & PRIORITY != 0 {
            if range.len() < 5 {
                return Err(broken(PROTOCOL_ERROR, "HEADERS too short for its priority"));
            }
            range.start += 5;
        }
        let block = &payload[range];
        let end = flags & END_STREAM != 0;
        if flags & END_HEADERS != 0 {
            return self.header_block(id, end, block);
        }
        if block.len() > MAX_HEADER_BLOCK {
            return Err(broken(PROTOCOL_ERROR, "a header block over 256 KiB"));
        }
        self.continued = Some(Continued { id, end, block: block.to_vec() });
        Ok(())
    }

    /// A whole header block: the answer's head (after any interim 1xx heads) or its
    /// trailers. Decoded whether or not its stream is still here: the decoder's table must
    /// follow the server's.
    fn header_block(&mut self, id: u32, end: bool, block: &[u8]) -> Result<(), Broken> {
        let keep = self.streams.get(&id).is_some_and(|s| s.keep);
        let (mut status, mut grpc, mut kept) = (None, None, Vec::new());
        self.decoder
            .decode(block, |name, value| {
                if name == b":status" {
                    status = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u16>().ok());
                } else if name == b"grpc-status" {
                    grpc = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u32>().ok());
                }
                if keep && !name.starts_with(b":") {
                    kept.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
                }
            })
            .map_err(|_| broken(COMPRESSION_ERROR, "a header block that does not decode (HPACK)"))?;
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.ended && s.failed.is_none()) else {
            return Ok(());
        };
        if s.status == 0 {
            match status {
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                Some(100..=199) if !end => return Ok(()),
                Some(code @ 200..=999) => {
                    s.status = code;
                    s.grpc_head = grpc;
                    s.head = kept;
                }
                _ => {
                    s.failed = Some(Sent::Failed(ErrorKind::Other));
                    s.waker.wake_by_ref();
                    return Ok(());
                }
            }
        } else {
            s.grpc_trailer = grpc;
            s.trailers = kept;
        }
        s.ended |= end;
        s.waker.wake_by_ref();
        Ok(())
    }

    fn settings(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), Broken> {
        if id != 0 || !payload.len().is_multiple_of(6) {
            return Err(broken(FRAME_SIZE_ERROR, "a malformed SETTINGS frame"));
        }
        if flags & ACK != 0 {
            return Ok(());
        }
        for setting in payload.chunks_exact(6) {
            let value = u32_at(setting, 2);
            match u16::from_be_bytes([setting[0], setting[1]]) {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_table_size(value as usize),
                SETTINGS_MAX_CONCURRENT_STREAMS => self.max_streams = value as usize,
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if value > MAX_STREAM_ID {
                        return Err(broken(FLOW_CONTROL_ERROR, "an initial window over 2^31-1"));
                    }
                    let delta = i64::from(value) - self.initial_window;
                    self.initial_window = i64::from(value);
                    self.streams.values_mut().for_each(|s| s.window += delta);
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(broken(PROTOCOL_ERROR, "a maximum frame size out of range"));
                    }
                    self.max_frame = value as usize;
                }
                _ => {}
            }
        }
        frame_head(&mut self.wbuf, 0, SETTINGS, ACK, 0);
        self.settled = true;
        self.send_bodies();
        self.waiting.drain(..).for_each(Waker::wake);
        Ok(())
    }

    /// Sends what the windows now allow of the bodies waiting for them.
    fn send_bodies(&mut self) {
        for (&id, s) in self.streams.iter_mut().filter(|(_, s)| !s.body.is_empty()) {
            send_body(&mut self.wbuf, &mut self.send_window, self.max_frame, id, s);
        }
    }

    /// The connection is lost to `e`, or to the GOAWAY before it.
    fn fail_io(&mut self, e: &io::Error) {
        let kind = if self.goaway.is_some() { ErrorKind::GoAway } else { kind_of(e, false) };
        self.fail(kind);
    }

    /// The connection is lost: every stream on it fails, every link waiting is woken.
    fn fail(&mut self, kind: ErrorKind) {
        if self.failed.is_some() {
            return;
        }
        // A connection the server said GOAWAY on, then closed, ended by the GOAWAY.
        let kind = if self.goaway.is_some() { ErrorKind::GoAway } else { kind };
        self.failed = Some(kind);
        for s in self.streams.values_mut() {
            if s.failed.is_none() && !s.ended {
                s.failed = Some(Sent::Failed(kind));
            }
            s.waker.wake_by_ref();
        }
        self.waiting.drain(..).for_each(Waker::wake);
    }

    /// The target broke the protocol: it is told why, and the connection ends.
    fn break_off(&mut self, e: Broken) {
        let last = self.next_id.saturating_sub(2);
        frame_head(&mut self.wbuf, 8, GOAWAY, 0, 0);
        self.wbuf.extend_from_slice(&last.to_be_bytes());
        self.wbuf.extend_from_slice(&e.code.to_be_bytes());
        self.fail(known(ErrorKind::Other, &e));
    }

    /// Opens a stream: its HEADERS (and CONTINUATION) frames, then its body as far as the
    /// windows allow.
    fn open(&mut self, head: &Head<'_, '_>, body: Bytes, keep: bool, waker: &Waker) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        encode_head(&mut self.encoder, &mut self.block, head);
        let end = if body.is_empty() { END_STREAM } else { 0 };
        let mut chunks = self.block.chunks(self.max_frame).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = if chunks.peek().is_none() { END_HEADERS } else { 0 };
            let (kind, flags) = if first { (HEADERS, end | last) } else { (CONTINUATION, last) };
            frame_head(&mut self.wbuf, chunk.len(), kind, flags, id);
            self.wbuf.extend_from_slice(chunk);
            first = false;
        }
        self.add_stream(id, body, head.grpc, keep, waker);
        id
    }

    /// A stream opened (its HEADERS queued): its body goes as the windows allow.
    fn add_stream(&mut self, id: u32, body: Bytes, grpc: bool, keep: bool, waker: &Waker) {
        let mut s = Stream {
            waker: waker.clone(),
            keep,
            grpc,
            status: 0,
            head: Vec::new(),
            trailers: Vec::new(),
            grpc_head: None,
            grpc_trailer: None,
            data: VecDeque::new(),
            frames: Frames::default(),
            ended: false,
            failed: None,
            body,
            window: self.initial_window,
            unacked: 0,
        };
        send_body(&mut self.wbuf, &mut self.send_window, self.max_frame, id, &mut s);
        self.streams.insert(id, s);
    }

    /// Takes a stream off the connection (ended, failed or given up by its link): a stream
    /// may open in its place.
    fn close(&mut self, id: u32, waker: &Waker) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        if let Some(w) = self.waiting.pop_front() {
            w.wake();
        }
        self.hand_off(waker);
        Some(s)
    }

    /// A link stops polling this connection: if the socket would wake it (it was the last
    /// to find nothing to read, or no room to write), another link in flight is woken to
    /// poll in its place.
    fn hand_off(&mut self, waker: &Waker) {
        let was = |w: &Option<Waker>| w.as_ref().is_some_and(|w| w.will_wake(waker));
        if !(was(&self.reader) || was(&self.writer)) {
            return;
        }
        self.reader = None;
        self.writer = None;
        match self.streams.values().find(|s| !s.waker.will_wake(waker)) {
            Some(other) => other.waker.wake_by_ref(),
            None => self.waiting.iter().for_each(Waker::wake_by_ref),
        }
    }
}

/// Encodes a request's head into `out` with a connection's encoder (and its table).
fn encode_head(e: &mut hpack::Encoder, out: &mut Vec<u8>, head: &Head<'_, '_>) {
    out.clear();
    e.start(out);
    e.method(out, head.method);
    e.scheme(out, head.https);
    e.field(out, b":authority", head.authority);
    hpack::push_indexed_name_with(out, hpack::PATH, |out| {
        push_target(out, head.prefix);
        push_target(out, head.path);
        if head.prefix.is_empty() && head.path.is_empty() {
            out.push(b'/');
        }
    });
    for (name, value) in head.rec.headers() {
        if is_replayed(name, value) {
            e.field(out, name, value);
        }
    }
    if head.grpc {
        e.field(out, b"te", b"trailers");
    }
}

fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server's bytes in pieces, then a pause (nothing to read), then the end; every write
/// taken (and kept).
struct Feed<'a> {
    pieces: std::slice::Chunks<'a, u8>,
    paused: bool,
    written: Vec<u8>,
}

impl<'a> Feed<'a> {
    fn new(data: &'a [u8], size: usize) -> Self {
        Feed { pieces: data.chunks(size), paused: false, written: Vec::new() }
    }
}

impl Transport for Feed<'_> {
    fn poll_read(&mut self, _: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let piece = self.pieces.next().unwrap_or_default();
        if piece.is_empty() && !self.paused {
            self.paused = true;
            return Poll::Pending;
        }
        buf.extend_from_slice(piece);
        Poll::Ready(Ok(piece.len()))
    }

    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A waker that does nothing (`Waker::noop` may not `will_wake` itself: its vtable's
/// address is not unique).
fn quiet_waker() -> Waker {
    struct Quiet;
    impl std::task::Wake for Quiet {
        fn wake(self: Arc<Self>) {}
    }
    Waker::from(Arc::new(Quiet))
}

/// A hostile target's bytes, as the answer to three streams (1: plain, 3: gRPC, 5: kept for
/// comparison, with a body to send): read in pieces of every size, they must neither panic
/// nor hang, whatever they hold ([`crate::fuzz::h2_answer`]).
pub(crate) fn answer_to_streams(data: &[u8]) {
    for size in [1, 9, 4096] {
        let mut conn = Conn::new(Feed::new(data, size));
        let waker = &quiet_waker();
        let mut cx = Context::from_waker(waker);
        for (id, grpc, keep) in [(1, false, false), (3, true, false), (5, false, true)] {
            conn.add_stream(id, Bytes::from_static(&[7; 100_000]), grpc, keep, waker);
        }
        conn.next_id = 7;
        // Each drive reads at least one piece, and the feed ends: this loop ends.
        while conn.failed.is_none() {
            conn.drive(&mut cx);
        }
        for id in [1, 3, 5] {
            conn.close(id, waker);
        }
    }
}

/// A request's head as a link hands it over, checked: it is encoded on the connection, with
/// the connection's table. Headers that could not be sent as they are are left out, as for
/// HTTP/1.1 (the method, authority and path were checked by the caller).
pub struct Head<'a, 'r> {
    pub method: &'a [u8],
    pub https: bool,
    pub authority: &'a [u8],
    pub prefix: &'a [u8],
    /// The recorded path, without a `#fragment`.
    pub path: &'a [u8],
    /// The record, for its headers (pseudo-headers and those of one connection are left out).
    pub rec: &'a RecordView<'r>,
    /// A gRPC call: `te: trailers` is added.
    pub grpc: bool,
}

/// A handle on one HTTP/2 connection, as a link holds it.
#[derive(Clone)]
pub struct H2 {
    conn: Arc<Mutex<Conn>>,
}

/// A link's exchange on a connection. Dropped before its end (a timeout, a stop's cut), it
/// gives up its stream (RST_STREAM CANCEL) and its turn at the socket.
struct Exchange<'a> {
    conn: &'a Mutex<Conn>,
    /// The stream, once opened.
    id: u32,
    /// The link's waker, once polled.
    waker: Option<Waker>,
    done: bool,
    /// The stream's frames are queued and this link is yet to come back to write them.
    unflushed: bool,
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        let Some(waker) = self.waker.as_ref().filter(|_| !self.done) else { return };
        let mut c = lock(self.conn);
        if self.unflushed {
            c.unflushed -= 1;
            // Another link in flight writes what is queued.
            if c.unflushed == 0
                && let Some(other) = c.streams.values().find(|s| !s.waker.will_wake(waker))
            {
                other.waker.wake_by_ref();
            }
        }
        if self.id == 0 {
            c.hand_off(waker);
            return;
        }
        if c.close(self.id, waker).is_some_and(|s| !s.ended && s.failed.is_none()) && c.failed.is_none() {
            frame_head(&mut c.wbuf, 4, RST_STREAM, 0, self.id);
            c.wbuf.extend_from_slice(&CANCEL.to_be_bytes());
        }
    }
}

impl H2 {
    /// Starts HTTP/2 on `io` (a TCP stream, h2c with prior knowledge, or TLS that settled on
    /// h2): the client's preface and SETTINGS, then the server's SETTINGS.
    pub async fn handshake(io: Io) -> Result<H2, ErrorKind> {
        let h2 = H2 { conn: Arc::new(Mutex::new(Conn::new(io))) };
        std::future::poll_fn(|cx| {
            let mut c = lock(&h2.conn);
            c.drive(cx);
            match (c.failed, c.settled) {
                (Some(kind), _) => Poll::Ready(Err(kind)),
                (None, true) => Poll::Ready(Ok(())),
                (None, false) => Poll::Pending,
            }
        })
        .await?;
        Ok(h2)
    }

    pub fn usable(&self) -> bool {
        lock(&self.conn).closed().is_none()
    }

    /// Sends a request (`head`) with `body` on a new stream and
    /// reads the whole answer, keeping what `keep` asks of it (headers and trailers alike).
    /// Returns the HTTP status, or for a gRPC call (`head.grpc`) the kind its `grpc-status` names
    /// when that is not 0. A request the connection could not take, or that its GOAWAY left
    /// unprocessed, is [`Sent::Not`]: it may go on another connection.
    pub async fn exchange(
        &self,
        head: &Head<'_, '_>,
        body: Bytes,
        mut keep: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, Sent> {
        let mut ex = Exchange { conn: &self.conn, id: 0, waker: None, done: false, unflushed: false };
        let stream = std::future::poll_fn(|cx| {
            let mut guard = lock(&self.conn);
            let c = &mut *guard;
            set_waker(&mut ex.waker, cx.waker());
            if ex.unflushed {
                ex.unflushed = false;
                c.unflushed -= 1;
            }
            c.drive(cx);
            if ex.id == 0 {
                return ex.open(c, cx, head, &body, keep.is_some());
            }
            ex.answer(c, cx, keep.as_mut().map(|(k, a)| (*k, &mut **a)))
        })
        .await?;
        outcome(stream, head.grpc, keep)
    }
}

impl Exchange<'_> {
    /// Opens the exchange's stream, unless the connection takes no more (the request may
    /// go elsewhere) or the server's limit is reached (it waits for a stream to end).
    fn open(
        &mut self,
        c: &mut Conn,
        cx: &mut Context<'_>,
        head: &Head<'_, '_>,
        body: &Bytes,
        keep: bool,
    ) -> Poll<Result<Stream, Sent>> {
        if let Some(kind) = c.closed() {
            self.done = true;
            c.hand_off(cx.waker());
            return Poll::Ready(Err(Sent::Not(kind)));
        }
        if c.streams.len() >= c.max_streams {
            if !c.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                c.waiting.push_back(cx.waker().clone());
            }
            return Poll::Pending;
        }
        self.id = c.open(head, body.clone(), keep, cx.waker());
        // The links woken with this one queue their frames before these go out: the last of
        // them to come back writes them all at once.
        self.unflushed = true;
        c.unflushed += 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Takes what came for the stream (the kept body as it comes); the stream once it has
    /// ended or failed.
    fn answer(
        &mut self,
        c: &mut Conn,
        cx: &mut Context<'_>,
        keep: Option<(&Keep, &mut Answer)>,
    ) -> Poll<Result<Stream, Sent>> {
        let Some(s) = c.streams.get_mut(&self.id) else {
            // invariant: only this exchange takes its stream off.
            self.done = true;
            c.hand_off(cx.waker());
            return Poll::Ready(Err(Sent::Failed(ErrorKind::Other)));
        };
        if let Some((keep, answer)) = keep {
            while let Some(chunk) = s.data.pop_front() {
                answer.take_body(keep, &chunk);
            }
        }
        if s.failed.is_none() && !s.ended {
            if !s.waker.will_wake(cx.waker()) {
                s.waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        self.done = true;
        match c.close(self.id, cx.waker()) {
            Some(s) => Poll::Ready(Ok(s)),
            None => Poll::Ready(Err(Sent::Failed(ErrorKind::Other))),
        }
    }
}

/// What an ended stream comes to: the HTTP status, or for a gRPC call the kind its
/// `grpc-status` names when that is not 0; what `keep` asks is taken from it first.
fn outcome(stream: Stream, grpc: bool, mut keep: Option<(&Keep, &mut Answer)>) -> Result<u16, Sent> {
    if let Some((keep, answer)) = keep.as_mut() {
        answer.status = stream.status;
        for list in [&stream.head, &stream.trailers] {
            answer.take_headers(keep, list.iter().map(|(n, v)| (n.as_str(), &v[..])));
        }
    }
    if let Some(failed) = stream.failed {
        return Err(failed);
    }
    if !grpc {
        return Ok(stream.status);
    }
    crate::rpc::count_received(&stream.frames);
    let code = stream.grpc_trailer.or(stream.grpc_head);
    if let Some((_, answer)) = keep.as_mut() {
        answer.grpc_status = code;
    }
    match code {
        None => Err(Sent::Failed(ErrorKind::GrpcNoStatus)),
        Some(_) if !stream.frames.whole() => Err(Sent::Failed(ErrorKind::GrpcFraming)),
        Some(0) => Ok(stream.status),
        Some(code) => Err(Sent::Failed(ErrorKind::of_grpc_status(code))),
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
pub(crate) mod tests {
    use super::*;

    /// The header block a fresh connection writes for `head`.
    pub(crate) fn encoded(head: &Head<'_, '_>) -> Vec<u8> {
        let mut block = Vec::new();
        let mut encoder = hpack::Encoder::default();
        encode_head(&mut encoder, &mut block, head);
        block
    }

    fn frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_head(&mut out, payload.len(), kind, flags, id);
        out.extend_from_slice(payload);
        out
    }

    fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        [&[0, name.len() as u8][..], name, &[value.len() as u8], value].concat()
    }

    /// A server's answers to three streams, cut in pieces of every size: a plain answer, a
    /// gRPC call's message and trailers, and a kept answer whose head (Huffman-coded, with
    /// the dynamic table, RFC 7541 C.6.1) spans a CONTINUATION frame and whose body is
    /// padded; PING is answered, SETTINGS acknowledged, and a body waits for the window.
    #[test]
    fn answers_are_read_into_their_streams_however_the_bytes_are_cut() {
        let head302 = [
            "4882640258 85aec3771a4b 6196d07abe941054d444a8200595040b8166e082a62d1bff",
            "6e919d29ad171863c78f0b97c8e9ae82ae43d3",
        ]
        .map(|h| {
            let h: String = h.split_whitespace().collect();
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>()
        });
        let grpc_message = [0, 0, 0, 0, 3, 8, 150, 1];
        let bytes = [
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]), // 100 concurrent streams
            frame(PING, 0, 0, b"12345678"),
            frame(HEADERS, END_HEADERS, 1, &[0x88]),
            frame(DATA, END_STREAM, 1, b"hello"),
            frame(
                HEADERS,
                END_HEADERS,
                3,
                &[&[0x88][..], &literal(b"content-type", b"application/grpc")].concat(),
            ),
            frame(DATA, 0, 3, &grpc_message),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &literal(b"grpc-status", b"0")),
            frame(HEADERS, 0, 5, &head302[0]),
            frame(CONTINUATION, END_HEADERS, 5, &head302[1]),
            frame(DATA, PADDED | END_STREAM, 5, b"\x03abc\x00\x00\x00"),
        ]
        .concat();
        for size in [1, 2, 9, 10, 100, bytes.len()] {
            let mut conn = Conn::new(Feed::new(&bytes, size));
            let waker = &quiet_waker();
            let mut cx = Context::from_waker(waker);
            for (id, grpc, keep) in [(1, false, false), (3, true, false), (5, false, true)] {
                conn.add_stream(id, Bytes::from(vec![7; 30_000]), grpc, keep, waker);
            }
            while conn.failed.is_none() {
                conn.drive(&mut cx);
            }
            assert_eq!(conn.failed, Some(ErrorKind::Reset), "the feed's end closes the connection");
            let s = |id| &conn.streams[&id];
            assert_eq!((s(1).status, s(1).ended, s(1).failed), (200, true, None), "pieces of {size}");
            assert_eq!((s(3).grpc_trailer, s(3).frames.messages, s(3).frames.whole()), (Some(0), 1, true));
            let kept: Vec<u8> = s(5).data.iter().flat_map(|b| b.to_vec()).collect();
            assert_eq!((s(5).status, kept, s(5).ended), (302, b"abc".to_vec(), true));
            let location = s(5).head.iter().find(|(n, _)| n == "location").map(|(_, v)| v.as_slice());
            assert_eq!(location, Some(&b"https://www.example.com"[..]));
            let written = &conn.io.written;
            assert!(written.windows(17).any(|w| w == frame(PING, ACK, 0, b"12345678")), "PING answered");
            assert!(written.windows(9).any(|w| w == frame(SETTINGS, ACK, 0, b"")), "SETTINGS acknowledged");
            // The bodies went as far as the connection's window (65,535) allowed, no further.
            let data_sent: usize = conn.streams.values().map(|s| 30_000 - s.body.len()).sum();
            assert_eq!(data_sent, 65_535, "pieces of {size}");
        }
    }

    #[test]
    fn connections_are_enough_for_the_streams_in_flight() {
        assert_eq!(Pool::new(256, 100).slots.len(), 3);
        assert_eq!(Pool::new(100, 100).slots.len(), 1);
        assert_eq!(Pool::new(8, 1).slots.len(), 8);
        assert_eq!(Pool::new(0, 0).slots.len(), 1);
        assert_eq!(Pool::new(1000, 0).slots.len(), 10);
    }
}
