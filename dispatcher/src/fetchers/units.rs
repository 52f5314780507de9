//! Cuts a byte stream into units: lines, GoReplay records ending at the separator line, or
//! the entries of a HAR ([`super::har_entries`]).
//! A unit longer than [`MAX_UNIT`] is skipped whole (counted) and reading goes on after it;
//! memory stays bounded by that limit whatever the file size.
//!
//! Units are written one after another into blocks of [`BLOCK`] bytes and handed out as
//! slices of their block (`Bytes`): one copy out of the reader and one allocation per block,
//! not per unit. A block is freed when the last record parsed from it is.

use std::io::{self, BufRead};

use bytes::{Bytes, BytesMut};

use super::har_entries::{Cut, Entries};
use super::pairing::Pairing;
use crate::accounting::{Malformed, Skipped};
use crate::analyzers::{Framing, GOR_SEPARATOR, Parsed};
use crate::record::Record;

/// Largest unit accepted (lines of at least 1 MiB must work).
pub const MAX_UNIT: usize = 16 << 20;

/// Size of the blocks units are read into (a longer unit gets a block of its own size).
pub const BLOCK: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Unit {
    /// A unit is in the buffer.
    Ready,
    /// A unit longer than MAX_UNIT was skipped.
    TooLong,
    Eof,
}

/// Reads one line (without its newline) into `buf`; never holds more than MAX_UNIT bytes.
fn read_line(r: &mut (impl BufRead + ?Sized), buf: &mut impl LineBuf) -> io::Result<Unit> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if too_long {
                Unit::TooLong
            } else if any {
                Unit::Ready
            } else {
                Unit::Eof
            });
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long && buf.len() + take <= MAX_UNIT + 1 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(take);
        if done {
            buf.drop_newline();
            return Ok(if too_long { Unit::TooLong } else { Unit::Ready });
        }
    }
}

/// What a line is read into: the unit's block, or a line of a GoReplay unit.
trait LineBuf {
    fn clear(&mut self);
    fn len(&self) -> usize;
    fn extend_from_slice(&mut self, part: &[u8]);
    /// Drops the trailing newline, if any.
    fn drop_newline(&mut self);
}

impl LineBuf for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn extend_from_slice(&mut self, part: &[u8]) {
        Vec::extend_from_slice(self, part);
    }
    fn drop_newline(&mut self) {
        if self.last() == Some(&b'\n') {
            self.pop();
        }
    }
}

impl LineBuf for BytesMut {
    fn clear(&mut self) {
        BytesMut::clear(self);
    }
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn extend_from_slice(&mut self, part: &[u8]) {
        if self.capacity() - self.len() < part.len() {
            // A new block (what was split off stays with its records).
            self.reserve(part.len().max(BLOCK));
        }
        BytesMut::extend_from_slice(self, part);
    }
    fn drop_newline(&mut self) {
        if self.last() == Some(&b'\n') {
            self.truncate(self.len() - 1);
        }
    }
}

/// What cutting a stream into units keeps from one unit to the next.
#[derive(Default)]
pub struct Cutter {
    /// A line of a GoReplay unit.
    line: Vec<u8>,
    /// Where a HAR's scan is.
    har: Entries,
}

/// Reads the next unit of the given framing into `buf`.
pub fn read_unit(
    r: &mut (impl BufRead + ?Sized),
    framing: Framing,
    buf: &mut BytesMut,
    cutter: &mut Cutter,
) -> io::Result<Unit> {
    let line = &mut cutter.line;
    match framing {
        Framing::Lines => read_line(r, buf),
        Framing::HarEntries => Ok(match cutter.har.next(r, buf, MAX_UNIT)? {
            Cut::Entry => Unit::Ready,
            Cut::TooLong => Unit::TooLong,
            Cut::End => Unit::Eof,
        }),
        Framing::Gor => {
            buf.clear();
            let mut too_long = false;
            loop {
                match read_line(r, line)? {
                    Unit::Eof => {
                        return Ok(if too_long {
                            Unit::TooLong
                        } else if buf.is_empty() {
                            Unit::Eof
                        } else {
                            Unit::Ready
                        });
                    }
                    Unit::TooLong => too_long = true,
                    Unit::Ready if line.as_slice() == GOR_SEPARATOR.as_bytes() => {
                        return Ok(if too_long { Unit::TooLong } else { Unit::Ready });
                    }
                    Unit::Ready => {
                        if buf.len() + line.len() + 1 > MAX_UNIT {
                            too_long = true;
                        }
                        if !too_long {
                            LineBuf::extend_from_slice(buf, line);
                            LineBuf::extend_from_slice(buf, b"\n");
                        } else {
                            buf.clear();
                        }
                    }
                }
            }
        }
    }
}

/// How a unit parse ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The input is exhausted.
    End,
    /// `emit` refused a record (the merge is gone) or the job was cancelled.
    Stopped,
}

/// Parses every unit of `reader`, handing each record the job's shaping rules keep to
/// `emit` until it returns false. Malformed and skipped units are counted in the job's
/// accounting. `at` counts the units read; units up to its value on entry were read by an
/// earlier attempt (a download retried after a network error) and are passed over, neither
/// emitted nor counted again. On a read error `at` tells where to resume.
pub fn parse_units(
    reader: &mut dyn BufRead,
    source: &str,
    ctx: &super::SourceContext,
    at: &mut u64,
    mut emit: impl FnMut(Record) -> bool,
) -> io::Result<ReadEnd> {
    read_records(reader, source, ctx, at, |r| ctx.shaping.apply(r, &ctx.accounting).is_none_or(&mut emit))
}

/// Records handed from the parsing thread to the shaping one at a time, and batches in
/// flight between them: 1,024 records at most, whatever the source's size.
const STAGE_BATCH: usize = 256;
const STAGE_DEPTH: usize = 4;

/// [`parse_units`] for a whole file or object. With shaping rules, reading and parsing run
/// on a thread of their own and the rules (and `emit`) on the calling one, in order: the
/// reader thread of a source is the dispatcher's critical path at full speed (bench (r):
/// parsing ~0.7 µs a record, ten typical rules ~0.3 µs more), so the rules' cost then
/// takes a second core rather than the whole pipeline's rate. Without rules one thread
/// does everything, as a hand-over per record batch would cost more than it saves.
pub fn parse_stream(
    reader: &mut (dyn BufRead + Send),
    source: &str,
    ctx: &super::SourceContext,
    at: &mut u64,
    mut emit: impl FnMut(Record) -> bool,
) -> io::Result<ReadEnd> {
    if !ctx.shaping.is_active() {
        return parse_units(reader, source, ctx, at, emit);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(STAGE_DEPTH);
        let mut read = *at;
        let parser =
            std::thread::Builder::new().name("reprise-parse".into()).spawn_scoped(scope, move || {
                let mut batch = Vec::with_capacity(STAGE_BATCH);
                let result = read_records(reader, source, ctx, &mut read, |r| {
                    batch.push(r);
                    batch.len() < STAGE_BATCH
                        || tx.send(std::mem::replace(&mut batch, Vec::with_capacity(STAGE_BATCH))).is_ok()
                });
                // What was parsed before an end or a read error is still handed over.
                if !batch.is_empty() && tx.send(batch).is_err() {
                    return (Ok(ReadEnd::Stopped), read);
                }
                (result, read)
            })?;
        let mut stopped = false;
        'batches: for batch in &rx {
            for r in batch {
                if let Some(r) = ctx.shaping.apply(r, &ctx.accounting)
                    && !emit(r)
                {
                    stopped = true;
                    break 'batches;
                }
            }
        }
        // The parser's next send fails and it ends.
        drop(rx);
        let (result, read) = parser.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        *at = read;
        if stopped { Ok(ReadEnd::Stopped) } else { result }
    })
}

/// The loop of [`parse_units`] up to the shaping rules: each record parsed goes to `parsed`.
/// GoReplay requests wait for their recorded answers on the way ([`Pairing`]) when the job
/// compares against them; those waiting go on at the end, and before a read error returns.
fn read_records(
    reader: &mut dyn BufRead,
    source: &str,
    ctx: &super::SourceContext,
    at: &mut u64,
    mut parsed: impl FnMut(Record) -> bool,
) -> io::Result<ReadEnd> {
    let mut pairing = Pairing::default();
    let end = read_paired(reader, source, ctx, at, &mut pairing, &mut parsed);
    if !matches!(end, Ok(ReadEnd::Stopped)) {
        while let Some(r) = pairing.next(true) {
            if !parsed(r) {
                return Ok(ReadEnd::Stopped);
            }
        }
    }
    end
}

/// [`read_records`]' loop.
fn read_paired(
    reader: &mut dyn BufRead,
    source: &str,
    ctx: &super::SourceContext,
    at: &mut u64,
    pairing: &mut Pairing,
    parsed: &mut impl FnMut(Record) -> bool,
) -> io::Result<ReadEnd> {
    let framing = ctx.analyzer.framing();
    let (mut buf, mut cutter) = (BytesMut::new(), Cutter::default());
    let resume = *at;
    let mut n = 0u64;
    let mut latest = ctx.times.latest();
    loop {
        // A token's check takes a lock, the clock a read: once per 256 units is soon enough.
        if n.is_multiple_of(256) {
            if ctx.cancel.is_cancelled() {
                return Ok(ReadEnd::Stopped);
            }
            latest = ctx.times.latest();
        }
        let unit = read_unit(reader, framing, &mut buf, &mut cutter)?;
        // The unit leaves the block; the block's free part takes the next one.
        let bytes: Bytes = buf.split().freeze();
        n += 1;
        if n <= resume && unit != Unit::Eof {
            continue;
        }
        *at = n;
        match unit {
            Unit::Eof if framing == Framing::HarEntries && !cutter.har.found => {
                let why =
                    "no log.entries array: not a HAR file (HAR 1.2 holds {\"log\": {\"entries\": [...]}})";
                ctx.accounting.malformed(Malformed::HarNoEntries, why, b"", source, n);
                return Ok(ReadEnd::End);
            }
            Unit::Eof => return Ok(ReadEnd::End),
            // Another shard's unit: read past it, counted there (see crate::shard).
            Unit::TooLong if !ctx.shard.takes_unit(n) => {}
            Unit::TooLong => {
                ctx.accounting.malformed(Malformed::TooLong, "unit longer than 16 MiB", b"", source, n)
            }
            Unit::Ready if bytes.iter().all(u8::is_ascii_whitespace) => {}
            Unit::Ready => match ctx.analyzer.parse(&bytes) {
                Parsed::Record(r) | Parsed::Request { record: r, .. }
                    if !ctx.shard.takes_record(r.key.as_deref(), n) => {}
                Parsed::Skipped(_) | Parsed::Malformed { .. } if !ctx.shard.takes_unit(n) => {}
                Parsed::Record(r) => match ctx.times.check(r.ts, latest) {
                    Ok(()) => {
                        ctx.accounting.unit_bytes(bytes.len() as u64);
                        if !parsed(r) {
                            return Ok(ReadEnd::Stopped);
                        }
                    }
                    Err(detail) => {
                        ctx.accounting.malformed(Malformed::ImplausibleTime, &detail, &bytes, source, n)
                    }
                },
                Parsed::Skipped(reason) => {
                    ctx.accounting.unit_bytes(bytes.len() as u64);
                    ctx.accounting.skipped(reason);
                }
                Parsed::Malformed { reason, detail } => {
                    ctx.accounting.malformed(reason, &detail, &bytes, source, n)
                }
                Parsed::Request { id, record } => match ctx.times.check(record.ts, latest) {
                    Ok(()) => {
                        ctx.accounting.unit_bytes(bytes.len() as u64);
                        pairing.request(id, record);
                    }
                    Err(detail) => {
                        ctx.accounting.malformed(Malformed::ImplausibleTime, &detail, &bytes, source, n)
                    }
                },
                Parsed::Answer { id, expected } => answer(ctx, pairing, &id, expected, bytes.len()),
            },
        }
        while let Some(r) = pairing.next(false) {
            if !parsed(r) {
                return Ok(ReadEnd::Stopped);
            }
        }
    }
}

/// A GoReplay answer: paired with its request, counted skipped. Of a shard, an answer
/// without its request here answers another shard's request: that shard counts it.
fn answer(ctx: &super::SourceContext, pairing: &mut Pairing, id: &[u8], expected: Box<Bytes>, len: usize) {
    let paired = pairing.answer(id, expected);
    if paired || ctx.shard.is_whole() {
        ctx.accounting.unit_bytes(len as u64);
        ctx.accounting.skipped(if paired { Skipped::GorResponse } else { Skipped::GorResponseUnpaired });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(input: &[u8], framing: Framing) -> Vec<Result<Vec<u8>, Unit>> {
        let mut r = io::BufReader::with_capacity(7, input);
        let (mut buf, mut line, mut out) = (BytesMut::new(), Cutter::default(), Vec::new());
        loop {
            match read_unit(&mut r, framing, &mut buf, &mut line).expect("reads") {
                Unit::Ready => out.push(Ok(buf.split().to_vec())),
                Unit::TooLong => out.push(Err(Unit::TooLong)),
                Unit::Eof => return out,
            }
        }
    }

    #[test]
    fn lines_are_cut_at_newlines_with_or_without_a_last_one() {
        let got = units(b"a\nbcdefghij\n\nlast", Framing::Lines);
        assert_eq!(got, vec![Ok(b"a".to_vec()), Ok(b"bcdefghij".to_vec()), Ok(vec![]), Ok(b"last".to_vec())]);
    }

    /// Units are slices of one block, not copies of their own; a block that fills up is
    /// followed by a fresh one and the units already out keep theirs.
    #[test]
    fn units_share_their_block() {
        let line = vec![b'x'; 1000];
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let mut r = io::BufReader::with_capacity(4096, input.as_slice());
        let (mut buf, mut scratch) = (BytesMut::new(), Cutter::default());
        let mut units = Vec::new();
        while read_unit(&mut r, Framing::Lines, &mut buf, &mut scratch).expect("reads") == Unit::Ready {
            units.push(buf.split().freeze());
        }
        assert_eq!(units.len(), 100);
        assert!(units.iter().all(|u| u.as_ref() == line.as_slice()));
        let adjacent = units.windows(2).filter(|w| w[1].as_ptr() == w[0].as_ptr().wrapping_add(1000)).count();
        // 65 lines of 1,000 bytes fit in a 64 KiB block: one new block for 100 lines.
        assert_eq!(adjacent, 98, "all but one unit follow the previous one in its block");
    }

    #[test]
    fn a_huge_line_is_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_UNIT + 10];
        input.extend_from_slice(b"\nnext\n");
        let got = units(&input, Framing::Lines);
        assert_eq!(got, vec![Err(Unit::TooLong), Ok(b"next".to_vec())]);
    }

    #[test]
    fn a_one_mib_line_is_kept() {
        let mut input = vec![b'y'; 1 << 20];
        input.push(b'\n');
        let got = units(&input, Framing::Lines);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().map(Vec::len), Ok(1 << 20));
    }

    #[test]
    fn gor_units_end_at_the_separator_line() {
        let sep = GOR_SEPARATOR;
        let input =
            format!("1 a 1 0\nGET / HTTP/1.1\r\n\r\n\n{sep}\n2 b 2 0\nHTTP/1.1 200 OK\r\n\r\n\n{sep}\n");
        let got = units(input.as_bytes(), Framing::Gor);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().expect("unit"), b"1 a 1 0\nGET / HTTP/1.1\r\n\r\n\n");
    }

    /// A reader that fails once `left` bytes are read.
    struct Failing<'a> {
        data: &'a [u8],
        left: usize,
    }

    impl io::Read for Failing<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut"));
            }
            let n = out.len().min(self.left).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.left -= n;
            Ok(n)
        }
    }

    fn staged_ctx() -> super::super::SourceContext {
        let text = r#"
[job]
target = "http://127.0.0.1:1"
[fetcher.file]
path = "x"
[[filter]]
name = "odd"
action = "deny"
path = "^/u/[0-9]*[13579]$"
[[rewrite]]
path = { from = "^/u/(.*)$", to = "/v2/$1" }
"#;
        let cfg = crate::config::JobConfig::parse(text).expect("valid");
        let mut ctx = super::super::SourceContext::for_test(crate::analyzers::Analyzer::build(&cfg.analyzer));
        ctx.shaping = std::sync::Arc::new(crate::shaping::Shaping::new(&cfg).expect("rules"));
        ctx.accounting = std::sync::Arc::new(crate::accounting::Accounting::new(
            crate::redact::Redactor::default(),
            crate::shaping::Shaping::rule_names(&cfg),
        ));
        ctx
    }

    /// With rules, parsing runs on a thread of its own: records still come out in the
    /// file's order, shaped, with malformed units counted, and more of them than the
    /// threads hand over at once (so the hand-over waits and resumes).
    #[test]
    fn a_staged_parse_keeps_order_counts_and_resumes_after_a_read_error() {
        let mut input = String::new();
        for i in 0..3000 {
            if i % 500 == 7 {
                input.push_str("not json\n");
            }
            input.push_str(&format!("{{\"ts\":{i},\"method\":\"GET\",\"url\":\"/u/{i}\"}}\n"));
        }
        let ctx = staged_ctx();
        let mut paths = Vec::new();
        let mut at = 0;
        let mut reader = io::BufReader::with_capacity(4096, input.as_bytes());
        let end = parse_stream(&mut reader, "f", &ctx, &mut at, |r| {
            paths.push(r.path.to_string());
            true
        });
        assert_eq!(end.expect("reads"), ReadEnd::End);
        let want: Vec<String> = (0..3000).step_by(2).map(|i| format!("/v2/{i}")).collect();
        assert_eq!(paths, want);
        let counts = ctx.accounting.counts();
        assert_eq!(counts.malformed.get(&Malformed::JsonSyntax), Some(&6));
        assert_eq!(counts.filtered.get("odd"), Some(&1500));
        assert_eq!(at, 3007, "units read, the last one the end");

        // Cut after ~half: what was read before the error is handed over, `at` says where to
        // resume, and a second attempt from there reads the rest exactly once.
        let ctx = staged_ctx();
        let mut paths = Vec::new();
        let mut at = 0;
        let mut cut =
            io::BufReader::with_capacity(4096, Failing { data: input.as_bytes(), left: input.len() / 2 });
        let err = parse_stream(&mut cut, "f", &ctx, &mut at, |r| {
            paths.push(r.path.to_string());
            true
        })
        .expect_err("the read fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(at > 1000 && at < 2000, "stopped half way: {at}");
        let mut again = io::BufReader::with_capacity(4096, input.as_bytes());
        let end = parse_stream(&mut again, "f", &ctx, &mut at, |r| {
            paths.push(r.path.to_string());
            true
        });
        assert_eq!(end.expect("reads"), ReadEnd::End);
        assert_eq!(paths, want);
        assert_eq!(ctx.accounting.counts().malformed.get(&Malformed::JsonSyntax), Some(&6));
    }

    /// `emit` refusing a record stops both threads (the test would hang otherwise).
    #[test]
    fn a_staged_parse_stops_when_the_records_are_refused() {
        let input: String = (0..5000)
            .map(|i| format!("{{\"ts\":{i},\"method\":\"GET\",\"url\":\"/u/{}\"}}\n", i * 2))
            .collect();
        let ctx = staged_ctx();
        let mut taken = 0;
        let mut reader = io::BufReader::with_capacity(4096, input.as_bytes());
        let end = parse_stream(&mut reader, "f", &ctx, &mut 0, |_| {
            taken += 1;
            taken < 10
        });
        assert_eq!(end.expect("reads"), ReadEnd::Stopped);
        assert_eq!(taken, 10);
    }

    /// A GoReplay file with answers, compared against them: each request goes on carrying
    /// its own answer (paired by id, answers interleaved and out of order), in the file's
    /// order; a request without an answer still goes on, an answer without a request is
    /// counted, and type 3 units are skipped.
    #[test]
    fn gor_requests_are_paired_with_their_recorded_answers() {
        let text = "[job]\ntarget = \"http://127.0.0.1:1\"\n[fetcher.file]\npath = \"x\"\n[analyzer]\nformat = \"gor\"\n[compare]\nbaseline = \"recorded\"\nheaders = [\"ETag\"]\n";
        let cfg = crate::config::JobConfig::parse(text).expect("valid");
        let ctx = super::super::SourceContext::for_test(crate::analyzers::Analyzer::for_job(&cfg));
        let sep = GOR_SEPARATOR;
        let req = |id: &str, n: u64| format!("1 {id} {n} 0\nGET /r/{n} HTTP/1.1\r\nHost: h\r\n\r\n\n{sep}\n");
        let answer = |id: &str, kind: u8, body: &str| {
            format!(
                "{kind} {id} 9 1\nHTTP/1.1 200 OK\r\nETag: e-{id}\r\nContent-Length: {}\r\n\r\n{body}\n{sep}\n",
                body.len()
            )
        };
        let input = [
            req("a", 1),
            req("b", 2),
            answer("b", 2, "{\"n\":2}"),
            answer("b", 3, "replayed"),
            req("c", 3),
            answer("a", 2, "{\"n\":1}"),
            answer("zz", 2, "{}"),
            req("d", 4),
            answer("d", 2, "{\"n\":4}"),
        ]
        .concat();
        let mut got = Vec::new();
        let mut at = 0;
        let end = parse_units(&mut input.as_bytes(), "f.gor", &ctx, &mut at, |r| {
            let e = r
                .expected
                .map(|e| <reprise_proto::pb::Expected as prost::Message>::decode(&e[..]).expect("decodes"));
            got.push((
                r.path.to_string(),
                e.map(|e| (String::from_utf8_lossy(&e.body).into_owned(), e.headers.len())),
            ));
            true
        });
        assert_eq!(end.expect("reads"), ReadEnd::End);
        let answered = |body: &str| Some((body.to_owned(), 1));
        assert_eq!(
            got,
            vec![
                ("/r/1".into(), answered("{\"n\":1}")),
                ("/r/2".into(), answered("{\"n\":2}")),
                ("/r/3".into(), None),
                ("/r/4".into(), answered("{\"n\":4}")),
            ]
        );
        let counts = ctx.accounting.counts();
        assert_eq!(counts.skipped.get(&Skipped::GorResponse), Some(&4), "3 paired, 1 of type 3");
        assert_eq!(counts.skipped.get(&Skipped::GorResponseUnpaired), Some(&1));
    }
}
