//! HTTP/1.1 forwarded as bytes: the request's head goes up as it came, and the answer's
//! head and body come back as they were sent, with only the headers of one hop
//! (`Connection` and the names it lists, `Keep-Alive`, `Proxy-Connection`, `TE`) left out.
//! Names keep their case and order because nothing is rebuilt from a map.
//!
//! Written here rather than served by hyper: hyper parses each head into a map, keeps a
//! second map of the names' case, and writes the head again from both, for the request and
//! for the answer; with a pooled handover between two tasks on top, that took about twice
//! the CPU nginx takes to proxy the same request, and a recording proxy must be cheap.
//! This path takes the common exchanges only, and hands a connection to hyper (with what
//! was read of it) at the first request it does not take: HTTP/2's preface, HTTP/1.0, a
//! head that does not parse or is too large (hyper refuses and counts those), `Upgrade`,
//! `CONNECT`, `Expect`, a chunked request body or one larger than [`MAX_BODY`], a target
//! that is not a path. A request body is read whole before it goes up, so a request on an
//! upstream connection that turns out closed is sent again on a new one.
//!
//! Answers stream back as they come: by `Content-Length`, chunked (passed on as chunks,
//! recorded as the data they carry), or to the upstream's close (then the client's
//! connection closes after it too). Informational answers (`103`) pass on before the final
//! one. An answer to `HEAD`, and a `204` or `304`, has no body.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::Recorder;
use crate::counters::Refusal;
use crate::dial::Dial;
use crate::exchange::Exchange;
use crate::tee::{Pending, Side};

/// The largest request head (as hyper takes over HTTP/1.1), and answer head.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a head may have here (hyper takes the rest).
const MAX_HEADERS: usize = 100;
/// Request bodies up to this size are read whole and forwarded here; larger ones stream
/// through hyper.
pub const MAX_BODY: usize = 256 * 1024;
/// The longest chunk-size line of a chunked answer, and trailer section.
const MAX_LINE: usize = 8 * 1024;

/// How a connection ended here.
pub enum Served {
    /// Closed, by either side or after an error.
    Closed,
    /// hyper serves the rest: these bytes were read and not forwarded.
    Handoff(Bytes),
}

/// A request head, parsed, and what it says of the exchange.
struct Head {
    /// The head as it goes up (hop headers left out).
    up: Vec<u8>,
    len: usize,
    body: usize,
    head_method: bool,
    close: bool,
    parts: http::request::Parts,
}

/// Serves HTTP/1.1 requests on `client` until it closes, `cancel` (between exchanges), or
/// a request this path does not take.
pub async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    recorder: &Arc<Recorder>,
    dial: &Dial,
    header_timeout: Duration,
    cancel: &CancellationToken,
) -> Served {
    let mut buf = BytesMut::with_capacity(8192);
    let mut up: Option<Upstream> = None;
    let mut first = true;
    loop {
        let head = match read_head(client, &mut buf, header_timeout, first, cancel).await {
            Ok(Some(head)) => head,
            Ok(None) => return Served::Closed,
            Err(Refused::Handoff) => return Served::Handoff(buf.freeze()),
            Err(Refused::Counted(r)) => {
                recorder.counters.refuse(r);
                return Served::Closed;
            }
        };
        first = false;
        // The body, read whole (a larger one went to hyper with its head).
        while buf.len() < head.len + head.body {
            match read_more(client, &mut buf).await {
                Ok(true) => {}
                _ => return Served::Closed,
            }
        }
        let keep_open = exchange(client, &mut buf, &mut up, head, recorder, dial).await;
        if !keep_open {
            return Served::Closed;
        }
    }
}

enum Refused {
    Handoff,
    Counted(Refusal),
}

/// Reads the next request head; `None` when the client closed between requests or the
/// proxy is stopping. The head's timeout runs from the connection's start for its first
/// request, and from a request's first byte for the others.
async fn read_head<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    timeout: Duration,
    first: bool,
    cancel: &CancellationToken,
) -> Result<Option<Head>, Refused> {
    let mut deadline = (first || !buf.is_empty()).then(|| tokio::time::Instant::now() + timeout);
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_request(buf)? {
                return Ok(Some(head));
            }
            if buf.len() > MAX_HEAD {
                return Err(Refused::Handoff);
            }
        }
        let idle = buf.is_empty();
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, read_more(client, buf)).await.ok(),
                None => Some(read_more(client, buf).await),
            }
        };
        let got = if idle {
            tokio::select! {
                got = read => got,
                _ = cancel.cancelled() => return Ok(None),
            }
        } else {
            read.await
        };
        match got {
            None => return Err(Refused::Counted(Refusal::HeaderTimeout)),
            Some(Ok(true)) => {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
            }
            // Closed between requests; one closed within a head is malformed to hyper.
            Some(_) if buf.is_empty() => return Ok(None),
            Some(_) => return Err(Refused::Handoff),
        }
    }
}

/// Reads more into `buf`; false at the end of the stream.
async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<bool> {
    buf.reserve(8192);
    Ok(r.read_buf(buf).await? > 0)
}

/// The request head at the start of `buf`, if it is whole and one this path takes.
fn parse_request(buf: &[u8]) -> Result<Option<Head>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        // Too large (hyper refuses it and counts it), or not HTTP/1.1 this path reads.
        Ok(httparse::Status::Complete(_)) | Err(_) => return Err(Refused::Handoff),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(Refused::Handoff);
    };
    if !target.starts_with('/') || method == "CONNECT" {
        return Err(Refused::Handoff);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = Method::from_bytes(method.as_bytes()).map_err(|_| Refused::Handoff)?;
    parts.uri = Uri::try_from(target).map_err(|_| Refused::Handoff)?;
    parts.version = Version::HTTP_11;
    parts.headers = header_map(req.headers).ok_or(Refused::Handoff)?;
    let h = &parts.headers;
    if [http::header::UPGRADE, http::header::EXPECT, http::header::TRANSFER_ENCODING]
        .iter()
        .any(|n| h.contains_key(n))
        || h.get_all(http::header::CONTENT_LENGTH).iter().count() > 1
    {
        return Err(Refused::Handoff);
    }
    let body = match h.get(http::header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => number(v.as_bytes(), 10).ok_or(Refused::Handoff)?,
    };
    if body > MAX_BODY as u64 {
        return Err(Refused::Handoff);
    }
    let hop = Hop::of(h);
    let up = without_hop_headers(buf, len, req.headers, &hop, b"");
    let body = body as usize;
    Ok(Some(Head { up, len, body, head_method: parts.method == Method::HEAD, close: hop.close, parts }))
}

/// Headers as a map (for the recording, the filter and sampling); `None` when one is not
/// a valid name or value.
fn header_map(headers: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(map)
}

/// The headers of one hop in a head: those named here and those `Connection` lists.
struct Hop {
    listed: Vec<String>,
    close: bool,
}

impl Hop {
    fn of(headers: &HeaderMap) -> Hop {
        let mut hop = Hop { listed: Vec::new(), close: false };
        for v in headers.get_all(http::header::CONNECTION) {
            for token in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    hop.close = true;
                } else if !token.eq_ignore_ascii_case("keep-alive") && !token.is_empty() {
                    hop.listed.push(token.to_ascii_lowercase());
                }
            }
        }
        hop
    }

    fn is(&self, name: &str) -> bool {
        ["connection", "keep-alive", "proxy-connection", "te", "upgrade"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            || self.listed.iter().any(|l| name.eq_ignore_ascii_case(l))
    }
}

/// The head at the start of `buf` (`len` bytes) without its hop headers, and with `added`
/// (header lines) at its end: the bytes as they came when there is nothing to leave out or
/// add, else its lines but those.
fn without_hop_headers(
    buf: &[u8],
    len: usize,
    headers: &[httparse::Header<'_>],
    hop: &Hop,
    added: &[u8],
) -> Vec<u8> {
    if added.is_empty() && !headers.iter().any(|h| hop.is(h.name)) {
        return buf[..len].to_vec();
    }
    // httparse's names and values are slices of `buf`: where they start says where
    // their line is (checked all the same: a slice from elsewhere ends the head there).
    let head = &buf[..len];
    let at = |s: &[u8]| (s.as_ptr() as usize).checked_sub(head.as_ptr() as usize).filter(|&at| at <= len);
    let start_line = match headers.first() {
        Some(h) => at(h.name.as_bytes()).unwrap_or(len),
        None => head.iter().position(|&b| b == b'\n').map_or(len, |n| n + 1),
    };
    let mut out = Vec::with_capacity(len + added.len());
    out.extend_from_slice(&head[..start_line]);
    for h in headers.iter().filter(|h| !hop.is(h.name)) {
        let line = at(h.name.as_bytes())
            .zip(at(h.value))
            .and_then(|(start, value)| head.get(start..value + h.value.len()));
        out.extend_from_slice(line.unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added);
    out.extend_from_slice(b"\r\n");
    out
}

/// A `Content-Length` (or chunk size, in `radix` 16): digits only, no sign or space
/// inside, as RFC 9110 has it; a lenient reading here and a strict one upstream would
/// frame a message two ways.
fn number(v: &[u8], radix: u32) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(|b| char::from(*b).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(v).ok()?, radix).ok()
}

/// An upstream connection and what was read from it.
struct Upstream {
    stream: TcpStream,
    buf: BytesMut,
}

/// How an answer's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// One exchange: the request (head and body at the start of `buf`) goes up on `up`, dialled
/// or dialled again when it was closed, and the answer comes back. Returns whether the
/// client's connection stays open.
async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    up: &mut Option<Upstream>,
    head: Head,
    recorder: &Arc<Recorder>,
    dial: &Dial,
) -> bool {
    recorder.counters.exchanges.fetch_add(1, Relaxed);
    let kept = match recorder.filter.as_ref().and_then(|f| f.denies(&head.parts)) {
        Some(rule) => {
            recorder.counters.count_filtered(rule);
            false
        }
        None if !recorder.sample.keeps(&head.parts.headers) => {
            recorder.counters.sampled_out.fetch_add(1, Relaxed);
            false
        }
        None => true,
    };
    let pending = kept.then(|| {
        Pending::new(Exchange::new(SystemTime::now(), &head.parts, recorder.keep()), Arc::clone(recorder))
    });
    let body = buf.split_to(head.len + head.body).split_off(head.len).freeze();
    if let Some(p) = &pending {
        if !body.is_empty() {
            p.data(Side::Request, &body);
        }
        p.ended(Side::Request, true);
    }
    let mut request = head.up;
    request.extend_from_slice(&body);
    let mut answered = Err(Failed::Closed);
    // A connection held from before may have been closed by the upstream (its keep-alive
    // ended) before it took the request: then the request goes again on a new one.
    for _ in 0..2 {
        let reused = up.is_some();
        answered = match send(up, &request, dial).await {
            Ok(()) => answer(client, up, head.head_method, head.close, pending.as_deref()).await,
            Err(e) => Err(e),
        };
        match answered {
            Err(Failed::Closed) if reused => *up = None,
            _ => break,
        }
    }
    let why = match answered {
        Ok(open) => return open && !head.close,
        Err(Failed::Closed) => "it closed the connection without an answer".to_owned(),
        Err(Failed::Upstream(why)) => why,
        Err(Failed::Midway) => {
            *up = None;
            return false;
        }
    };
    bad_gateway(client, up, why, head.close, recorder, pending.as_deref()).await
}

/// Answers the client with a 502 saying `why`; whether its connection stays open.
async fn bad_gateway<C: AsyncWrite + Unpin>(
    client: &mut C,
    up: &mut Option<Upstream>,
    why: String,
    close: bool,
    recorder: &Recorder,
    pending: Option<&Pending>,
) -> bool {
    {
        {
            *up = None;
            recorder.counters.upstream_errors.fetch_add(1, Relaxed);
            let why = format!("the upstream did not answer: {why}");
            tracing::warn!(error = %why, "upstream error");
            if let Some(p) = pending {
                p.failed(why.clone());
            }
            let text = format!("reprise record: {why}\n");
            let bad = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\n{}\r\n{text}",
                text.len(),
                if close { "connection: close\r\n" } else { "" }
            );
            client.write_all(bad.as_bytes()).await.is_ok() && !close
        }
    }
}

/// Why an exchange failed: before any of the answer reached the client (it gets a 502),
/// or after (its connection closes: there is no other way to say it).
enum Failed {
    Upstream(String),
    /// The connection closed before any of the answer came.
    Closed,
    Midway,
}

/// Writes the request on `up`'s connection, or on a new one: once more when the one held
/// was closed by the upstream (its keep-alive ended) before it took the request.
async fn send(up: &mut Option<Upstream>, request: &[u8], dial: &Dial) -> Result<(), Failed> {
    let upstream_error = |e: &dyn std::error::Error| Failed::Upstream(reprise_proto::error_chain(e));
    if let Some(u) = up.as_mut() {
        return u.stream.write_all(request).await.map_err(|_| Failed::Closed);
    }
    let stream = dial.connect().await.map_err(|e| upstream_error(&e))?;
    let u = up.insert(Upstream { stream, buf: BytesMut::with_capacity(8192) });
    u.stream.write_all(request).await.map_err(|e| upstream_error(&e))
}

/// Reads the answer from `up` and passes it to the client as it comes. Returns whether
/// both connections may take another exchange.
async fn answer<C: AsyncWrite + Unpin>(
    client: &mut C,
    up: &mut Option<Upstream>,
    head_method: bool,
    client_close: bool,
    pending: Option<&Pending>,
) -> Result<bool, Failed> {
    let u = up.as_mut().expect("a connection was dialled");
    let mut out = Vec::with_capacity(4096);
    let mut informed = false;
    let (framing, upstream_close) = loop {
        let head = read_answer_head(u, head_method, &mut out, client_close).await;
        // After an informational answer went on, the request cannot be sent again.
        let head = head.map_err(|e| match e {
            Failed::Closed if informed => {
                Failed::Upstream("it closed the connection after a 1xx answer".into())
            }
            e => e,
        });
        let (status, len, framing, hop_close, map) = head?;
        if (100..200).contains(&status) && status != 101 {
            informed = true;
            // Informational: on to the client, and the final answer after it.
            u.buf.advance(len);
            flush(client, &mut out).await.map_err(|_| Failed::Midway)?;
            continue;
        }
        if status == 101 {
            return Err(Failed::Upstream("it switched protocols, which was not asked".into()));
        }
        if let Some(p) = pending {
            p.answered(status, &map);
        }
        u.buf.advance(len);
        break (framing, hop_close || framing == Framing::Close);
    };
    let relayed = relay(client, u, framing, &mut out, pending).await;
    if relayed.is_err() {
        return Err(Failed::Midway);
    }
    if let Some(p) = pending {
        p.ended(Side::Answer, true);
    }
    if upstream_close || !u.buf.is_empty() {
        *up = None;
    }
    Ok(framing != Framing::Close)
}

/// Reads an answer head into `out` (without its hop headers; with `Connection: close`
/// when the client's connection closes after it) and says how its body ends. The head
/// stays at the start of the upstream's buffer (its length is returned).
async fn read_answer_head(
    u: &mut Upstream,
    head_method: bool,
    out: &mut Vec<u8>,
    client_close: bool,
) -> Result<(u16, usize, Framing, bool, HeaderMap), Failed> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&u.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = res.code.unwrap_or(0);
                let map = header_map(res.headers).ok_or_else(|| {
                    Failed::Upstream("its answer's head has a header that is not valid".into())
                })?;
                let framing = framing(status, head_method, &map)?;
                let hop = Hop::of(&map);
                let closing = client_close || framing == Framing::Close;
                let added: &[u8] = if closing && status >= 200 { b"connection: close\r\n" } else { b"" };
                out.extend_from_slice(&without_hop_headers(&u.buf, len, res.headers, &hop, added));
                return Ok((status, len, framing, hop.close, map));
            }
            Ok(httparse::Status::Partial) if u.buf.len() > MAX_HEAD => {
                return Err(Failed::Upstream("its answer's head is larger than 64 KiB".into()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Failed::Upstream(format!("its answer is not HTTP/1.1: {e}"))),
        }
        match read_more(&mut u.stream, &mut u.buf).await {
            Ok(true) => {}
            Ok(false) if u.buf.is_empty() && out.is_empty() => return Err(Failed::Closed),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionReset && u.buf.is_empty() && out.is_empty() =>
            {
                return Err(Failed::Closed);
            }
            Ok(false) => {
                return Err(Failed::Upstream("it closed the connection within its answer's head".into()));
            }
            Err(e) => return Err(Failed::Upstream(reprise_proto::error_chain(&e))),
        }
    }
}

/// How the body of an answer with this status and headers ends (RFC 9112 6.3).
fn framing(status: u16, head_method: bool, headers: &HeaderMap) -> Result<Framing, Failed> {
    if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    if let Some(te) = headers.get(http::header::TRANSFER_ENCODING) {
        let last = te.to_str().unwrap_or("").rsplit(',').next().unwrap_or("").trim();
        return Ok(if last.eq_ignore_ascii_case("chunked") { Framing::Chunked } else { Framing::Close });
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Framing::Close),
        (Some(v), None) => number(v.as_bytes(), 10)
            .map(Framing::Length)
            .ok_or_else(|| Failed::Upstream("its answer's Content-Length is not a number".into())),
        (Some(_), Some(_)) => Err(Failed::Upstream("its answer has two Content-Length headers".into())),
    }
}

/// Passes the answer's body on to the client as it comes (`out` holds what is to be
/// written before it), copying its data into the recording.
async fn relay<C: AsyncWrite + Unpin>(
    client: &mut C,
    u: &mut Upstream,
    framing: Framing,
    out: &mut Vec<u8>,
    pending: Option<&Pending>,
) -> std::io::Result<()> {
    let record = |data: &[u8]| {
        if let (Some(p), false) = (pending, data.is_empty()) {
            p.data(Side::Answer, data);
        }
    };
    match framing {
        Framing::None => {}
        Framing::Length(mut left) => loop {
            let n = (u.buf.len() as u64).min(left) as usize;
            record(&u.buf[..n]);
            out.extend_from_slice(&u.buf[..n]);
            u.buf.advance(n);
            left -= n as u64;
            if left == 0 {
                break;
            }
            flush(client, out).await?;
            if !read_more(&mut u.stream, &mut u.buf).await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        },
        Framing::Close => loop {
            record(&u.buf);
            out.extend_from_slice(&u.buf);
            u.buf.clear();
            flush(client, out).await?;
            if !read_more(&mut u.stream, &mut u.buf).await? {
                break;
            }
        },
        Framing::Chunked => chunks(client, u, out, pending).await?,
    }
    flush(client, out).await
}

/// Passes a chunked body on as its chunks, recording the data they carry and its trailers.
async fn chunks<C: AsyncWrite + Unpin>(
    client: &mut C,
    u: &mut Upstream,
    out: &mut Vec<u8>,
    pending: Option<&Pending>,
) -> std::io::Result<()> {
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    loop {
        // The chunk-size line.
        let line = loop {
            if let Some(end) = u.buf.windows(2).position(|w| w == b"\r\n") {
                break end + 2;
            }
            if u.buf.len() > MAX_LINE {
                return Err(bad("a chunk-size line too long"));
            }
            more(client, u, out).await?;
        };
        let digits = u.buf[..line - 2].split(|&b| b == b';').next().unwrap_or(&[]);
        let size = number(digits, 16).ok_or_else(|| bad("a chunk size that is not hexadecimal"))?;
        out.extend_from_slice(&u.buf[..line]);
        u.buf.advance(line);
        if size == 0 {
            return trailers(client, u, out, pending).await;
        }
        // The data, then its CRLF.
        let mut left = size.checked_add(2).ok_or_else(|| bad("a chunk size past 2^64"))?;
        while left > 0 {
            if u.buf.is_empty() {
                more(client, u, out).await?;
            }
            let n = (u.buf.len() as u64).min(left) as usize;
            let data_end = n.min(left.saturating_sub(2) as usize);
            if let Some(p) = pending
                && data_end > 0
            {
                p.data(Side::Answer, &u.buf[..data_end]);
            }
            out.extend_from_slice(&u.buf[..n]);
            u.buf.advance(n);
            left -= n as u64;
        }
        if out.len() >= 16 * 1024 {
            flush(client, out).await?;
        }
    }
}

/// The trailer section after a chunked body's last chunk, to its blank line.
async fn trailers<C: AsyncWrite + Unpin>(
    client: &mut C,
    u: &mut Upstream,
    out: &mut Vec<u8>,
    pending: Option<&Pending>,
) -> std::io::Result<()> {
    loop {
        if u.buf.starts_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
            u.buf.advance(2);
            return Ok(());
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(&u.buf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                if let (Some(p), Some(map)) = (pending, header_map(fields)) {
                    p.trailers(Side::Answer, &map);
                }
                out.extend_from_slice(&u.buf[..len]);
                u.buf.advance(len);
                return Ok(());
            }
            Ok(httparse::Status::Partial) if u.buf.len() <= MAX_LINE => more(client, u, out).await?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "chunked body: bad trailers",
                ));
            }
        }
    }
}

/// Passes on what is ready, then reads more of the answer; the end of the stream here is
/// an answer cut short.
async fn more<C: AsyncWrite + Unpin>(
    client: &mut C,
    u: &mut Upstream,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    flush(client, out).await?;
    if read_more(&mut u.stream, &mut u.buf).await? {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

async fn flush<C: AsyncWrite + Unpin>(client: &mut C, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        client.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// A connection with bytes already read from it put back in front: what hyper is handed.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<Head>, Refused> {
        parse_request(head.as_bytes())
    }

    /// Heads go up as they came, but for the headers of one hop: names in their case,
    /// in their order, with what `Connection` lists left out.
    #[test]
    fn heads_go_up_as_they_came_but_their_hop_headers() {
        let plain = "GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-Mixed: v\r\n\r\n";
        let Ok(Some(head)) = parsed(plain) else { panic!("a head this path takes") };
        assert_eq!(
            (head.up.as_slice(), head.len, head.body, head.close),
            (plain.as_bytes(), plain.len(), 0, false)
        );
        let hop = "POST /p HTTP/1.1\r\nHost: shop\r\nConnection: X-Trace, close\r\nKeep-Alive: 5\r\nX-Trace: 1\r\nTE: gzip\r\nContent-Length: 3\r\nAccept: */*\r\n\r\nabc";
        let Ok(Some(head)) = parsed(hop) else { panic!("a head this path takes") };
        let up = "POST /p HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nAccept: */*\r\n\r\n";
        assert_eq!(String::from_utf8_lossy(&head.up), up);
        assert_eq!((head.body, head.close, head.len), (3, true, hop.len() - 3));
        // The parts the recording, the filter and sampling read.
        assert_eq!((head.parts.method.as_str(), head.parts.uri.path()), ("POST", "/p"));
        assert_eq!(head.parts.headers.get("x-trace").map(|v| v.as_bytes()), Some(&b"1"[..]));
    }

    /// What this path does not take goes to hyper, read bytes and all.
    #[test]
    fn what_this_path_does_not_take_goes_to_hyper() {
        let handed = [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET http://shop/ HTTP/1.1\r\nHost: shop\r\n\r\n",
            "CONNECT shop:443 HTTP/1.1\r\nHost: shop\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 262145\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ];
        for head in handed {
            assert!(matches!(parsed(head), Err(Refused::Handoff)), "{head:?}");
        }
        assert!(matches!(parsed("GET / HTTP/1.1\r\nHost: sh"), Ok(None)), "a part of a head waits for more");
    }

    /// An answer that closes its client's connection says so, whatever its line ends.
    #[test]
    fn an_added_header_ends_its_head_well() {
        for head in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 200 OK\n\n", "HTTP/1.1 200 OK\nA: 1\n\n"] {
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let mut res = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(len)) = res.parse(head.as_bytes()) else { panic!("{head:?}") };
            let hop = Hop::of(&HeaderMap::new());
            let out = without_hop_headers(head.as_bytes(), len, res.headers, &hop, b"connection: close\r\n");
            let mut again = [httparse::EMPTY_HEADER; 4];
            let mut res = httparse::Response::new(&mut again);
            assert!(
                matches!(res.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
                "{out:?}"
            );
            assert_eq!(res.headers.last().map(|h| h.name), Some("connection"), "{out:?}");
        }
    }

    /// Heads changed at random, byte by byte, neither panic nor come out longer than
    /// they went in (but for the added line).
    #[test]
    fn any_head_is_read_without_a_panic() {
        let seeds = [
            "POST /p?q=1 HTTP/1.1\r\nHost: shop\r\nConnection: X-A, close\r\nX-A: 1\r\nX-E:\r\nContent-Length: 3\r\n\r\nabc",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-B\r\nX-B: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for round in 0..20_000 {
            let mut bytes = seeds[round % 2].as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = b"\r\n: ,\x00\t\x7fa"[next() % 9],
                    1 => drop(bytes.remove(at)),
                    _ => bytes.insert(at, b"\r\n:, "[next() % 5]),
                }
            }
            let _ = parse_request(&bytes);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = res.parse(&bytes) {
                let map = header_map(res.headers).unwrap_or_default();
                let out =
                    without_hop_headers(&bytes, len, res.headers, &Hop::of(&map), b"connection: close\r\n");
                assert!(out.len() <= len + 2 * res.headers.len() + 21, "{bytes:?}");
            }
        }
    }

    /// A chunked body passes as it came, however its pieces arrive; chunk sizes that are
    /// not hexadecimal, or past 2^64, end it with an error, not a panic.
    #[tokio::test]
    async fn chunked_bodies_pass_as_they_came_and_bad_ones_end() {
        let body: &[u8] = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n";
        for (sent, whole) in [
            (body, true),
            (b"zz\r\nhello\r\n0\r\n\r\n", false),
            (b"ffffffffffffffff\r\nx", false),
            (b"5\r\nhel", false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
            let mut far =
                TcpStream::connect(listener.local_addr().expect("an address")).await.expect("connect");
            let (near, _) = listener.accept().await.expect("accept");
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(3) {
                    far.write_all(piece).await.expect("write");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let mut u = Upstream { stream: near, buf: BytesMut::new() };
            let (mut client, mut out) = (Vec::new(), Vec::new());
            let relayed = relay(&mut client, &mut u, Framing::Chunked, &mut out, None).await;
            writer.await.expect("the writer");
            assert_eq!(relayed.is_ok(), whole, "{sent:?}");
            if whole {
                assert_eq!(client, body);
            }
        }
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(number(b"42", 10), Some(42));
        assert_eq!(number(b" 7 ", 10), Some(7));
        assert_eq!(number(b"1a", 16), Some(26));
        for bad in [&b"+1"[..], b"-1", b"", b"1 2", b"0x1", b"99999999999999999999999"] {
            assert_eq!(number(bad, 10), None, "{bad:?}");
        }
    }
}
