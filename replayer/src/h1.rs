//! HTTP/1.1 on a keep-alive connection its executor future owns and drives itself, over any
//! byte stream: a TCP connection, or TLS over one (HTTPS takes the same path).
//!
//! The request head is written straight from the record into a buffer the link reuses and
//! goes out with the body in one vectored write; the response head is parsed with `httparse`
//! and its body skipped by its framing (length, chunked, or to the end of the connection).
//! Per request there is no header map, no request object, no task and no channel: against a
//! local nginx this cut the replayer's user-space time per request (see docs/design.md,
//! "Decisions that look odd"). HTTP/2 is [`crate::h2`]'s.
//!
//! The request head is written by [`crate::request`] (its fidelity rules are there).

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::answer::{Answer, Keep};
use crate::errors::{ErrorKind, kind_of};
pub use crate::request::{Unsendable, write_head};

/// A response head longer than this is refused (nginx's default limit for request heads is
/// 8 KiB; 64 KiB leaves room for large cookies).
const MAX_HEAD: usize = 64 * 1024;
/// Response headers parsed at most.
const MAX_HEADERS: usize = 128;
/// A chunk-size or trailer line longer than this is refused.
const MAX_LINE: usize = 4096;
/// Read at least this much at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A connection idle this long is checked before reuse, here and over HTTPS (servers close
/// idle keep-alive connections after seconds; at rates where the check's syscall would
/// matter, connections are never idle this long).
pub const IDLE_CHECK: Duration = Duration::from_millis(50);

/// One connection to the target, over the byte stream `S`.
pub struct H1<S> {
    stream: S,
    /// Bytes read and not yet consumed.
    inbuf: BytesMut,
    last_used: Instant,
    /// The last response ended the connection (`Connection: close`, HTTP/1.0, a body that
    /// runs to the end of the connection, or bytes after the response).
    ended: bool,
}

/// How the body of a response is delimited.
#[derive(Debug, PartialEq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    ToEof,
}

/// Opens a TCP connection to `authority` (host:port), without Nagle's delay.
pub async fn connect_tcp(authority: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl H1<TcpStream> {
    /// Opens a plain connection to `authority` (host:port).
    #[cfg(test)]
    pub async fn connect(authority: &str) -> std::io::Result<Self> {
        Ok(H1::new(connect_tcp(authority).await?))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1<S> {
    /// HTTP/1.1 on an open stream.
    pub fn new(stream: S) -> Self {
        H1 { stream, inbuf: BytesMut::with_capacity(READ_CHUNK), last_used: Instant::now(), ended: false }
    }

    /// Whether the connection can take another request. One that sat idle is checked with a
    /// read that does not wait, so a target that closed it meanwhile (idle timeout) is
    /// noticed before a request is written into a dead socket; a busy one is not (that read
    /// would cost a syscall per request). Over TLS the read takes what the server sent
    /// meanwhile that is not data (session tickets) and waits for the rest, as a plain
    /// socket with nothing to read does.
    /// `now` is the time of asking (read once per request by the caller).
    pub fn usable(&mut self, now: Instant) -> bool {
        if self.ended {
            return false;
        }
        if now.saturating_duration_since(self.last_used) < IDLE_CHECK {
            return true;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Pending: open, and nothing to read. End, error, or bytes nobody asked for: not usable.
        std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf).is_pending()
    }

    /// Sends a request (its head already written by [`write_head`]) and reads the whole
    /// response, keeping what `keep` asks of the answer in its [`Answer`] (response
    /// comparison). Returns its status, or the error kind (after which the connection is not
    /// to be used again). `now` is the time of sending.
    pub async fn exchange(
        &mut self,
        now: Instant,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        mut sink: Option<(&Keep, &mut Answer)>,
    ) -> Result<u16, ErrorKind> {
        self.last_used = now;
        self.ended = true; // until the exchange completes
        let mut parts = [IoSlice::new(head), IoSlice::new(body)];
        let mut parts: &mut [IoSlice] = if body.is_empty() { &mut parts[..1] } else { &mut parts[..] };
        while !parts.is_empty() {
            let n = self.stream.write_vectored(parts).await.map_err(|e| kind_of(&e, false))?;
            if n == 0 {
                return Err(ErrorKind::Reset);
            }
            IoSlice::advance_slices(&mut parts, n);
        }
        let (status, body, close) = self.read_head(head_request, &mut sink).await?;
        self.skip_body(body, &mut sink).await?;
        // Bytes after a complete response answer nothing we sent: the connection is out of step.
        self.ended = close || !self.inbuf.is_empty();
        Ok(status)
    }

    /// Reads more from the connection; 0 at its end.
    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        self.inbuf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.inbuf).await.map_err(|e| kind_of(&e, false))
    }

    /// Reads the final response head (skipping 1xx ones): status, body framing, and whether
    /// the connection ends after this response.
    async fn read_head(
        &mut self,
        head_request: bool,
        sink: &mut Option<(&Keep, &mut Answer)>,
    ) -> Result<(u16, Body, bool), ErrorKind> {
        loop {
            // Parsed only once bytes are there: after a request is sent nothing is yet.
            if !self.inbuf.is_empty() {
                // A kept answer takes its headers from the same parse.
                let take = |status: u16, headers: &[httparse::Header<'_>]| {
                    if let Some((keep, answer)) = sink.as_mut().filter(|_| !interim(status)) {
                        answer.status = status;
                        if !keep.headers.is_empty() {
                            answer.take_headers(keep, headers.iter().map(|h| (h.name, h.value)));
                        }
                    }
                };
                match parse_head(&self.inbuf, head_request, take)? {
                    Some((len, status, _, _)) if interim(status) => {
                        self.inbuf.advance(len);
                        continue;
                    }
                    Some((len, status, body, close)) => {
                        self.inbuf.advance(len);
                        return Ok((status, body, close));
                    }
                    None if self.inbuf.len() > MAX_HEAD => return Err(ErrorKind::Other),
                    None => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(ErrorKind::Reset);
            }
        }
    }

    /// Reads the body past, handing its bytes to `sink` when there is one.
    async fn skip_body(
        &mut self,
        body: Body,
        sink: &mut Option<(&Keep, &mut Answer)>,
    ) -> Result<(), ErrorKind> {
        match body {
            Body::None => Ok(()),
            Body::Length(n) => self.skip_exactly(n, sink).await,
            Body::ToEof => loop {
                if let Some((keep, answer)) = sink {
                    answer.take_body(keep, &self.inbuf);
                }
                self.inbuf.clear();
                if self.fill().await.map_err(|_| ErrorKind::Body)? == 0 {
                    return Ok(());
                }
            },
            Body::Chunked => loop {
                let size = self.line(parse_chunk_size).await?;
                if size == 0 {
                    // Trailer fields, up to an empty line.
                    while !self.line(|l| Ok(l.is_empty())).await? {}
                    return Ok(());
                }
                self.skip_exactly(size, sink).await?;
                if !self.line(|l| Ok(l.is_empty())).await? {
                    return Err(ErrorKind::Body);
                }
            },
        }
    }

    async fn skip_exactly(
        &mut self,
        mut left: u64,
        sink: &mut Option<(&Keep, &mut Answer)>,
    ) -> Result<(), ErrorKind> {
        loop {
            let take = left.min(self.inbuf.len() as u64);
            if let Some((keep, answer)) = sink {
                answer.take_body(keep, &self.inbuf[..take as usize]);
            }
            self.inbuf.advance(take as usize);
            left -= take;
            if left == 0 {
                return Ok(());
            }
            if self.fill().await.map_err(|_| ErrorKind::Body)? == 0 {
                return Err(ErrorKind::Body);
            }
        }
    }

    /// Reads one line of a chunked body (without its line end) and consumes it, returning what
    /// `f` makes of it.
    async fn line<T>(&mut self, f: impl Fn(&[u8]) -> Result<T, ()>) -> Result<T, ErrorKind> {
        loop {
            if let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line = self.inbuf[..end].strip_suffix(b"\r").unwrap_or(&self.inbuf[..end]);
                let out = f(line).map_err(|()| ErrorKind::Body)?;
                self.inbuf.advance(end + 1);
                return Ok(out);
            }
            if self.inbuf.len() > MAX_LINE || self.fill().await.map_err(|_| ErrorKind::Body)? == 0 {
                return Err(ErrorKind::Body);
            }
        }
    }
}

/// A chunk-size line: hex digits, then optional extensions after ';'.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ()> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(());
    }
    let digits = std::str::from_utf8(digits).map_err(|_| ())?;
    u64::from_str_radix(digits, 16).map_err(|_| ())
}

/// A 1xx head other than 101 (switching protocols): a final head follows it.
fn interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// Parses a response head at the start of `buf`: (its length, status, body framing, whether
/// the connection ends after it); None while it is incomplete.
fn parse_head(
    buf: &[u8],
    head_request: bool,
    headers_to: impl FnOnce(u16, &[httparse::Header<'_>]),
) -> Result<Option<(usize, u16, Body, bool)>, ErrorKind> {
    // Left uninitialised: zeroing 128 headers (4 KB) was most of this function's time.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ErrorKind::Other),
    };
    let status = resp.code.unwrap_or_default();
    let mut close = resp.version == Some(0);
    let (mut length, mut chunked, mut other_coding) = (None, false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(ErrorKind::Other)?;
            if length.is_some_and(|l| l != n) {
                return Err(ErrorKind::Other);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            chunked = last.eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let body = if head_request || status < 200 || status == 204 || status == 304 {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if other_coding {
        Body::ToEof
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::ToEof
    };
    close |= body == Body::ToEof || status == 101;
    headers_to(status, resp.headers);
    Ok(Some((len, status, body, close)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprise_proto::batch::{Received, RecordRef, split};
    use tokio::net::TcpListener;

    /// A record as a replayer receives it (read with `.view()`).
    fn record(method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Received {
        let mut encoded = BytesMut::new();
        let rec = RecordRef {
            due_offset_ns: 0,
            endpoint: 1,
            method: method.as_bytes(),
            path: path.as_bytes(),
            headers,
            body,
            host: b"",
            order_key: 0,
            expected: &[],
        };
        rec.write_to(&mut encoded);
        let batch = reprise_proto::pb::RecordBatch { encoded: encoded.freeze(), count: 1 };
        split(batch).expect("one record").remove(0)
    }

    #[test]
    fn the_head_is_the_record_with_hop_by_hop_and_unsendable_headers_left_out() {
        let received = record(
            "POST",
            "/a b/caf\u{e9}?q=<x>",
            &[
                ("X-Trace", b"1"),
                ("Connection", b"close"),
                ("Content-Length", b"99"),
                ("X-Evil", b"a\r\nInjected: 1"),
                ("bad name", b"v"),
                ("host", b"recorded"),
            ],
            b"hello",
        );
        let mut out = Vec::new();
        write_head(&mut out, &received.view().expect("view"), "/base", b"t:80").expect("head");
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "POST /base/a%20b/caf%C3%A9?q=%3Cx%3E HTTP/1.1\r\nX-Trace: 1\r\nHost: t:80\r\nContent-Length: 5\r\n\r\n"
        );
        let mut out = Vec::new();
        assert_eq!(
            write_head(&mut out, &record("GE T", "/", &[], b"").view().expect("view"), "", b"t"),
            Err(Unsendable::Method)
        );
        assert_eq!(
            write_head(&mut out, &record("GET", "/", &[], b"").view().expect("view"), "", b"t\r\nx: y"),
            Err(Unsendable::Host)
        );
        write_head(&mut out, &record("PUT", "/", &[], b"").view().expect("view"), "", b"t").expect("head");
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"), "{:?}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn framing_follows_the_response_head() {
        let parse = |s: &str, head| {
            parse_head(s.as_bytes(), head, |_, _| {}).expect("valid").map(|(_, st, b, c)| (st, b, c))
        };
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false),
            Some((200, Body::Length(3), false))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            Some((200, Body::None, false))
        );
        assert_eq!(parse("HTTP/1.1 204 No Content\r\n\r\n", false), Some((204, Body::None, false)));
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n", false),
            Some((200, Body::Chunked, false))
        );
        assert_eq!(parse("HTTP/1.1 200 OK\r\n\r\n", false), Some((200, Body::ToEof, true)));
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n", false),
            Some((200, Body::Length(0), true))
        );
        assert_eq!(
            parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            Some((200, Body::Length(0), true))
        );
        assert_eq!(
            parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false),
            Some((200, Body::Length(0), false))
        );
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Le", false), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, |_, _| {}).is_err());
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                |_, _| {}
            )
            .is_err()
        );
        assert!(parse_head(b"SMTP ready\r\n\r\n", false, |_, _| {}).is_err());
        assert_eq!(parse_chunk_size(b"1a;ext=1"), Ok(26));
        assert!(parse_chunk_size(b"").is_err() && parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }

    /// Response heads and chunk lines come from the target, so they are untrusted input:
    /// mutated and truncated valid ones (a fixed-seed generator, so a failure repeats) never
    /// panic, and a head that parses has a status and a length within what was given.
    #[test]
    fn mangled_responses_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"1f;name=value\r\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % input.len() as u64) as usize;
                match next() % 4 {
                    0 => input[at] = next() as u8,
                    1 => input.insert(at, b"\r\n:;, 0123456789abcdefHTTP/"[(next() % 27) as usize]),
                    2 => drop(input.remove(at)),
                    _ => input.truncate(at),
                }
                if input.is_empty() {
                    input.push(b'H');
                }
            }
            if let Ok(Some((len, status, _, _))) = parse_head(&input, round % 3 == 0, |_, _| {}) {
                assert!(len <= input.len() && status <= 999, "{input:?}");
            }
            let _ = parse_chunk_size(&input);
        }
    }

    /// A loopback server that answers each request (read up to its blank line) with the next
    /// of `answers`, each written in two parts a moment apart (so the client sees partial
    /// reads), and closes after the last.
    async fn scripted(answers: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            for answer in answers {
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                seen.clear();
                let (a, b) = answer.split_at(answer.len() / 2);
                s.write_all(a.as_bytes()).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(b.as_bytes()).await.expect("write");
            }
        });
        addr
    }

    async fn exchange_all(answers: Vec<&'static str>) -> Vec<Result<(u16, bool), ErrorKind>> {
        let n = answers.len();
        let mut conn = H1::connect(&scripted(answers).await).await.expect("connect");
        let mut out = Vec::new();
        for _ in 0..n {
            let r =
                conn.exchange(Instant::now(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"", false, None).await;
            let failed = r.is_err();
            out.push(r.map(|s| (s, conn.ended)));
            if failed {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn bodies_of_every_framing_are_read_to_their_end_on_one_connection() {
        let got = exchange_all(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
        ])
        .await;
        assert_eq!(
            got,
            vec![Ok((200, false)), Ok((201, false)), Ok((202, false)), Ok((204, false)), Ok((503, true))]
        );
    }

    /// Kept answers hold the body as sent, without its chunk framing, cut at `max_body` but
    /// measured whole, and the final head's headers (not an interim 1xx head's); the
    /// connection stays in step for the next request.
    #[tokio::test]
    async fn answers_are_kept_over_every_framing() {
        let answers = vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nETag: \"e1\"\r\n\r\n0123456789",
            "HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nETag: e3\r\n\r\n",
            "HTTP/1.1 100 Continue\r\nETag: interim\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\nETag: e4\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nuntil the end",
        ];
        let mut conn = H1::connect(&scripted(answers).await).await.expect("connect");
        let keep = Keep { headers: vec!["etag".into()], max_body: 8 };
        let mut got = Vec::new();
        for _ in 0..5 {
            let mut a = Answer::default();
            let status = conn
                .exchange(
                    Instant::now(),
                    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
                    b"",
                    false,
                    Some((&keep, &mut a)),
                )
                .await;
            assert_eq!(status, Ok(a.status));
            got.push((a.status, a.headers.clone(), String::from_utf8_lossy(&a.body).into_owned(), a.length));
        }
        let etag = |v: &str| vec![("etag".to_owned(), v.to_owned())];
        assert_eq!(
            got,
            vec![
                (200, etag("\"e1\""), "01234567".into(), 10),
                (202, vec![], "abcdefg".into(), 7),
                (204, etag("e3"), String::new(), 0),
                (201, etag("e4"), String::new(), 0),
                (200, vec![], "until th".into(), 13),
            ]
        );
    }

    #[tokio::test]
    async fn a_body_to_the_end_of_the_connection_ends_it() {
        let got = exchange_all(vec!["HTTP/1.1 200 OK\r\n\r\nuntil the end"]).await;
        assert_eq!(got, vec![Ok((200, true))]);
    }

    #[tokio::test]
    async fn truncated_and_malformed_responses_are_errors_of_their_kind() {
        assert_eq!(
            exchange_all(vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await,
            vec![Err(ErrorKind::Body)]
        );
        assert_eq!(exchange_all(vec!["HTTP/1.1 200 OK\r\nContent-"]).await, vec![Err(ErrorKind::Reset)]);
        assert_eq!(exchange_all(vec!["garbage that is no HTTP\r\n\r\n"]).await, vec![Err(ErrorKind::Other)]);
        assert_eq!(
            exchange_all(vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX"]).await,
            vec![Err(ErrorKind::Body)]
        );
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_reused() {
        let mut conn = H1::connect(&scripted(vec!["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await)
            .await
            .expect("connect");
        assert_eq!(
            conn.exchange(Instant::now(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"", false, None).await,
            Ok(200)
        );
        assert!(conn.usable(Instant::now()));
        // The server closes after its last answer; once idle, the check notices.
        tokio::time::sleep(IDLE_CHECK + Duration::from_millis(20)).await;
        assert!(!conn.usable(Instant::now()));
    }
}
