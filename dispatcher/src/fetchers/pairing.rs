//! Pairs GoReplay requests with their recorded answers (`[compare] baseline = "recorded"`,
//! issue 13). A .gor file holds a request (type 1) and, some units later, the answer the
//! service gave it (type 2, same id). A request waits here until its answer comes, then goes
//! on carrying it; requests go on in the order they were read, so the stream stays as
//! ordered as the file. Memory is bounded: past [`WINDOW`] waiting requests, or
//! [`HELD_BYTES`] of answers held by waiting requests, the oldest goes on (without an answer
//! if it has none yet: a replayer counts it as not compared), and an answer whose request is
//! no longer waiting is counted and dropped.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::record::Record;

/// Requests waiting for their answers at most. GoReplay writes an answer soon after its
/// request (a few units later under concurrency), so this is slack, not a need.
pub const WINDOW: usize = 4096;
/// Bytes of encoded answers waiting requests hold at most (each answer is at most
/// `max_body` and a few headers: 4,096 answers of 1 MiB would be 4 GiB).
pub const HELD_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct Pairing {
    /// Waiting requests in the order they were read, with their ids.
    waiting: VecDeque<(Bytes, Record)>,
    /// The sequence number of the latest waiting request of each id.
    ids: HashMap<Bytes, u64>,
    /// The sequence number of `waiting[0]`.
    first: u64,
    /// Bytes of the answers waiting requests hold.
    held: usize,
}

impl Pairing {
    pub fn request(&mut self, id: Bytes, record: Record) {
        let seq = self.first + self.waiting.len() as u64;
        self.ids.insert(id.clone(), seq);
        self.waiting.push_back((id, record));
    }

    /// Gives the waiting request of `id` its answer; false when none waits for it.
    pub fn answer(&mut self, id: &[u8], expected: Box<Bytes>) -> bool {
        let Some(seq) = self.ids.remove(id) else { return false };
        match self.waiting.get_mut((seq - self.first) as usize) {
            Some((_, r)) => {
                self.held += expected.len();
                r.expected = Some(expected);
                true
            }
            None => false,
        }
    }

    /// The next request to go on: the oldest, once it has its answer or the window is full;
    /// with `all`, the oldest whatever (at the end of the input).
    pub fn next(&mut self, all: bool) -> Option<Record> {
        let (_, front) = self.waiting.front()?;
        if !all && front.expected.is_none() && self.waiting.len() <= WINDOW && self.held <= HELD_BYTES {
            return None;
        }
        let (id, record) = self.waiting.pop_front()?;
        self.held -= record.expected.as_ref().map_or(0, |e| e.len());
        if self.ids.get(&id) == Some(&self.first) {
            self.ids.remove(&id);
        }
        self.first += 1;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: i64) -> Record {
        Record {
            ts: n,
            method: "GET".into(),
            path: "/".into(),
            host: None,
            headers: Vec::new(),
            body: Bytes::new(),
            key: None,
            expected: None,
        }
    }

    fn answer(text: &'static str) -> Box<Bytes> {
        Box::new(Bytes::from_static(text.as_bytes()))
    }

    fn drain(p: &mut Pairing, all: bool) -> Vec<(i64, Option<Bytes>)> {
        std::iter::from_fn(|| p.next(all)).map(|r| (r.ts, r.expected.map(|e| *e))).collect()
    }

    #[test]
    fn requests_go_on_in_order_once_the_oldest_is_answered() {
        let mut p = Pairing::default();
        p.request(Bytes::from_static(b"a"), req(1));
        p.request(Bytes::from_static(b"b"), req(2));
        assert!(p.answer(b"b", answer("B")), "answers may come out of order");
        assert_eq!(drain(&mut p, false), vec![], "the oldest still waits");
        assert!(!p.answer(b"zz", answer("Z")), "no request of that id");
        assert!(p.answer(b"a", answer("A")));
        let got = drain(&mut p, false);
        assert_eq!(got, vec![(1, Some(Bytes::from("A"))), (2, Some(Bytes::from("B")))]);
        assert!(!p.answer(b"a", answer("A2")), "an id is answered once");
        assert!(p.waiting.is_empty() && p.ids.is_empty());
    }

    #[test]
    fn a_full_window_lets_the_oldest_go_unanswered_and_forgets_its_id() {
        let mut p = Pairing::default();
        for n in 0..=WINDOW as i64 {
            p.request(Bytes::from(format!("id{n}")), req(n));
        }
        assert_eq!(drain(&mut p, false), vec![(0, None)], "one past the window");
        assert!(!p.answer(b"id0", answer("late")), "its answer comes too late");
        assert_eq!(p.ids.len(), WINDOW, "ids are held only for waiting requests");
        assert_eq!(drain(&mut p, true).len(), WINDOW, "the end lets everything go");
        assert!(p.ids.is_empty());
    }

    /// Answers held past [`HELD_BYTES`] let the oldest request go on unanswered, however
    /// few requests wait.
    #[test]
    fn large_answers_held_let_the_oldest_go() {
        let mut p = Pairing::default();
        p.request(Bytes::from_static(b"slow"), req(0));
        for n in 1..=4 {
            p.request(Bytes::from(format!("id{n}")), req(n));
            assert!(p.answer(format!("id{n}").as_bytes(), Box::new(Bytes::from(vec![0u8; HELD_BYTES / 3]))));
        }
        let got = drain(&mut p, false);
        assert_eq!(
            got.iter().map(|(ts, e)| (*ts, e.is_some())).collect::<Vec<_>>(),
            [(0, false), (1, true), (2, true), (3, true), (4, true)]
        );
        assert_eq!(p.held, 0);
    }

    /// A reused id pairs with its latest request; the earlier one goes on unanswered.
    #[test]
    fn a_reused_id_pairs_with_its_latest_request() {
        let mut p = Pairing::default();
        p.request(Bytes::from_static(b"x"), req(1));
        p.request(Bytes::from_static(b"x"), req(2));
        assert!(p.answer(b"x", answer("X")));
        assert_eq!(drain(&mut p, true), vec![(1, None), (2, Some(Bytes::from("X")))]);
        assert!(p.ids.is_empty());
    }
}
