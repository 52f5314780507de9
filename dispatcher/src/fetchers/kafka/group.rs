//! Reading as a member of a Kafka consumer group (`group_id`).
//!
//! In follow mode the dispatcher subscribes to the topic and the broker's group protocol
//! decides which member reads which partition: when a dispatcher (a shard, or any reader
//! in the same group) joins or leaves, partitions move. Every partition of the topic has
//! its reader thread and its stream into the merge from the start; [`Owners`] (the
//! consumer's context, told of each rebalance) says which ones this member reads now, and
//! a partition it does not read is idle to the merge. The assignment is cooperative
//! (`cooperative-sticky`) unless the job's properties choose another: a member keeps the
//! partitions that do not move, so a rebalance does not restart every partition.
//!
//! Offsets are stored by hand ([`Commits`]): a message's offset only once every record it
//! held has gone out to a replayer ([`SourceProgress::sent_through`]), and librdkafka
//! commits what is stored (every second, on a revoke and at the end). What a member had
//! read but not sent when it left is read again by the partition's next owner: a leaving
//! member loses nothing it acknowledged, and records within the reorder window and the
//! wheel's lead can be replayed twice (at least once, as consumer groups give).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::fetchers::progress::SourceProgress;

/// The consumer's context: which partitions this member owns, by index in the sorted ids.
/// Every partition is owned from the start when partitions are assigned rather than
/// subscribed to.
#[derive(Debug)]
pub struct Owners {
    ids: Vec<i32>,
    /// 0: not owned; otherwise the rebalance that assigned it (a reader that sees it change
    /// forgets what it had read before).
    owned: Vec<AtomicU64>,
    rebalances: AtomicU64,
}

impl Owners {
    /// `ids` sorted; `all_owned` when the fetcher assigns them itself.
    pub fn new(ids: &[i32], all_owned: bool) -> Self {
        Self {
            ids: ids.to_vec(),
            owned: ids.iter().map(|_| AtomicU64::new(u64::from(all_owned))).collect(),
            rebalances: AtomicU64::new(1),
        }
    }

    /// The rebalance that gave this member partition number `index` (0: not owned now).
    pub fn owner(&self, index: usize) -> u64 {
        self.owned[index].load(Ordering::Acquire)
    }

    fn set(&self, partition: i32, value: u64) {
        if let Ok(i) = self.ids.binary_search(&partition) {
            self.owned[i].store(value, Ordering::Release);
        }
    }
}

impl ClientContext for Owners {}

impl ConsumerContext for Owners {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let round = self.rebalances.fetch_add(1, Ordering::AcqRel) + 1;
                let ids: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?ids, "kafka group: partitions assigned to this dispatcher");
                for id in ids {
                    self.set(id, round);
                }
            }
            Rebalance::Revoke(list) => {
                let ids: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?ids, "kafka group: partitions taken from this dispatcher");
                for id in ids {
                    self.set(id, 0);
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka group: rebalance failed"),
        }
    }
}

/// One partition's messages read and not yet stored as consumed: (offset, newest record
/// time it held). Stored in offset order once the dispatcher has sent through that time.
#[derive(Debug, Default)]
pub struct Commits {
    read: VecDeque<(i64, i64)>,
    /// The rebalance the messages were read under.
    round: u64,
}

impl Commits {
    /// A message read under rebalance `round`: what was read under an earlier one is
    /// forgotten (its partition went elsewhere meanwhile and its next owner reads it again).
    pub fn read(&mut self, round: u64, offset: i64, newest_ts: i64) {
        if round != self.round {
            self.read.clear();
            self.round = round;
        }
        self.read.push_back((offset, newest_ts));
    }

    /// The last message consumed once sent through `sent_ts`, if that moved.
    pub fn sent(&mut self, sent_ts: i64) -> Option<i64> {
        let mut last = None;
        while let Some(&(offset, newest)) = self.read.front()
            && newest <= sent_ts
        {
            self.read.pop_front();
            last = Some(offset);
        }
        last
    }

    /// Stores the offsets of the messages sent (see the module docs).
    pub fn store<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        progress: &SourceProgress,
    ) {
        // librdkafka stores the offset after the one given: the next to read.
        if let Some(last) = self.sent(progress.sent_through())
            && let Err(e) = consumer.store_offset(topic, partition, last)
        {
            // The partition was taken away meanwhile: its next owner starts from the last
            // commit, so nothing is lost.
            tracing::debug!(partition, error = %e, "kafka offset not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_only_through_what_was_sent_in_offset_order() {
        let mut c = Commits::default();
        c.read(1, 10, 100);
        c.read(1, 11, 300);
        c.read(1, 12, 200);
        c.read(1, 13, i64::MIN); // a message whose records were all filtered out
        assert_eq!(c.sent(50), None, "nothing sent yet");
        assert_eq!(c.sent(250), Some(10), "offset 11 holds a record after 250: it waits");
        assert_eq!(c.sent(250), None);
        assert_eq!(c.sent(300), Some(13), "then 11, 12 and the empty 13 go together");
    }

    #[test]
    fn a_new_assignment_forgets_what_was_read_before() {
        let mut c = Commits::default();
        c.read(1, 10, 100);
        c.read(2, 4, 500);
        assert_eq!(c.sent(100), None, "offset 10 was read under the last assignment");
        assert_eq!(c.sent(500), Some(4));
    }

    #[test]
    fn owners_follow_assignments_and_revocations() {
        let o = Owners::new(&[0, 1, 2], false);
        assert_eq!((o.owner(0), o.owner(1), o.owner(2)), (0, 0, 0));
        o.set(2, 7);
        o.set(9, 7); // not a partition read: ignored
        assert_eq!((o.owner(0), o.owner(2)), (0, 7));
        assert_eq!(Owners::new(&[3], true).owner(0), 1, "assigned partitions are all owned");
    }
}
