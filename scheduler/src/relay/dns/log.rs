//! The relay's recent changes, shared by every feed: a bounded log of
//! batches that a feed reads from where it stands, coalesced, instead of
//! a queue per feed.
//!
//! Why: with a queue per feed, N agents hold N references to every batch,
//! the watch loop does N sends per batch, and a feed that wakes after k
//! batches sends k messages. With one log, a batch is stored once whatever
//! the number of feeds, a feed that fell behind sends what changed since
//! it last sent (one value per key, in at most a chunk's bytes per
//! message), and a feed too far behind, whose position the log no longer
//! covers, gets a snapshot: what a slow stream may cost is bounded by the
//! log's size, not by how long it has been slow.

use std::collections::{HashMap, VecDeque};

use drover_proto::v1 as pb;

use super::record_size;

/// One batch of changes, as the store's watch delivered it.
#[derive(Debug)]
struct Entry {
    /// The log's sequence number of this batch (1, 2, ...).
    seq: u64,
    revision: i64,
    records: Vec<pb::DnsRecord>,
    bytes: usize,
}

/// What a feed at some position should send next.
#[derive(Debug, PartialEq)]
pub(crate) enum CatchUp {
    /// Nothing changed since.
    Current,
    /// The changes of the batches after the position up to `upto`, one
    /// record per key (the last), in the order keys first changed;
    /// `revision` is the last batch's.
    Changes {
        upto: u64,
        revision: i64,
        records: Vec<pb::DnsRecord>,
    },
    /// The log no longer holds every batch after the position: a snapshot.
    Behind,
}

/// The bounded log. Positions are sequence numbers: a feed at `seq` has
/// sent every batch up to and including `seq` (0: none, from a snapshot
/// taken before the first batch).
#[derive(Debug)]
pub(crate) struct ChangeLog {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
    /// The last batch's sequence number.
    head: u64,
    /// The oldest position the log can catch up from: every batch after
    /// it is still held.
    floor: u64,
}

impl ChangeLog {
    /// An empty log that keeps at most `max_bytes` of records (roughly, as
    /// [`record_size`] counts them) in at most `max_entries` batches; the
    /// newest batch is always kept, whatever its size.
    pub(crate) fn new(max_bytes: usize, max_entries: usize) -> Self {
        ChangeLog {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_entries: max_entries.max(1),
            head: 0,
            floor: 0,
        }
    }

    /// The last batch's sequence number (0 before any).
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The oldest position [`ChangeLog::since`] can catch up from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Bytes of records held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a batch (an empty one is nothing) and drops the oldest
    /// batches past the bounds. Returns the new head.
    pub(crate) fn push(&mut self, revision: i64, records: Vec<pb::DnsRecord>) -> u64 {
        if records.is_empty() {
            return self.head;
        }
        self.head += 1;
        let bytes = records.iter().map(record_size).sum();
        self.bytes += bytes;
        self.entries.push_back(Entry {
            seq: self.head,
            revision,
            records,
            bytes,
        });
        while self.entries.len() > 1
            && (self.bytes > self.max_bytes || self.entries.len() > self.max_entries)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes;
                self.floor = old.seq;
            }
        }
        self.head
    }

    /// What a feed at `seq` sends next: the batches after it, coalesced,
    /// taking whole batches while their records stay within `budget` bytes
    /// (at least one batch, however large).
    pub(crate) fn since(&self, seq: u64, budget: usize) -> CatchUp {
        if seq >= self.head {
            return CatchUp::Current;
        }
        if seq < self.floor {
            return CatchUp::Behind;
        }
        let mut records: Vec<pb::DnsRecord> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        let (mut upto, mut revision, mut bytes) = (seq, 0, 0);
        for e in self.entries.iter().filter(|e| e.seq > seq) {
            if upto > seq && bytes + e.bytes > budget {
                break;
            }
            for r in &e.records {
                match at.get(r.key.as_str()) {
                    Some(&i) => records[i] = r.clone(),
                    None => {
                        at.insert(&r.key, records.len());
                        records.push(r.clone());
                    }
                }
            }
            (upto, revision, bytes) = (e.seq, e.revision, bytes + e.bytes);
        }
        CatchUp::Changes {
            upto,
            revision,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> pb::DnsRecord {
        super::super::put(key, value.as_bytes())
    }

    fn changes(c: CatchUp) -> (u64, i64, Vec<(String, bool, String)>) {
        let CatchUp::Changes {
            upto,
            revision,
            records,
        } = c
        else {
            panic!("expected changes, got {c:?}");
        };
        let records = records
            .into_iter()
            .map(|r| (r.key, r.deleted, String::from_utf8_lossy(&r.value).into()))
            .collect();
        (upto, revision, records)
    }

    #[test]
    fn a_feed_behind_by_several_batches_gets_them_as_one_with_the_last_value_per_key() {
        let mut log = ChangeLog::new(1 << 20, 1024);
        assert_eq!(log.since(0, 1 << 20), CatchUp::Current);
        log.push(10, vec![put("/a", "1"), put("/b", "1")]);
        log.push(11, Vec::new());
        log.push(12, vec![put("/a", "2"), put("/c", "1")]);
        log.push(13, vec![super::super::deleted("/b")]);
        assert_eq!(log.head(), 3, "an empty batch is not logged");

        let (upto, revision, records) = changes(log.since(0, 1 << 20));
        assert_eq!((upto, revision), (3, 13));
        assert_eq!(
            records,
            [
                ("/a".to_owned(), false, "2".to_owned()),
                ("/b".to_owned(), true, String::new()),
                ("/c".to_owned(), false, "1".to_owned()),
            ]
        );
        // From the middle: only what came after.
        let (upto, _, records) = changes(log.since(2, 1 << 20));
        assert_eq!((upto, records.len()), (3, 1));
        assert_eq!(log.since(3, 1 << 20), CatchUp::Current);
    }

    #[test]
    fn one_catch_up_stays_within_its_budget_in_whole_batches() {
        let mut log = ChangeLog::new(1 << 20, 1024);
        for i in 0..10 {
            log.push(i, vec![put(&format!("/k{i}"), "v")]);
        }
        let one = record_size(&put("/k0", "v"));
        // Three records' worth: three batches, then the rest from there.
        let (upto, revision, records) = changes(log.since(0, 3 * one));
        assert_eq!((upto, revision, records.len()), (3, 2, 3));
        let (upto, _, records) = changes(log.since(upto, 3 * one));
        assert_eq!((upto, records.len()), (6, 3));
        // A budget smaller than a batch still moves on by one batch.
        let (upto, _, records) = changes(log.since(6, 1));
        assert_eq!((upto, records.len()), (7, 1));
    }

    #[test]
    fn the_log_is_bounded_and_a_feed_it_no_longer_covers_is_behind() {
        let mut log = ChangeLog::new(1 << 20, 4);
        for i in 0..10 {
            log.push(i, vec![put(&format!("/k{i}"), "v")]);
        }
        assert_eq!((log.head(), log.floor()), (10, 6));
        assert_eq!(log.since(5, 1 << 20), CatchUp::Behind);
        let (upto, _, records) = changes(log.since(6, 1 << 20));
        assert_eq!((upto, records.len()), (10, 4));

        // By bytes: each batch is ~100 bytes, the log keeps ~250.
        let big = "x".repeat(90);
        let size = record_size(&put("/b0", &big));
        let mut log = ChangeLog::new(size * 5 / 2, 1024);
        for i in 0..100 {
            log.push(i, vec![put(&format!("/b{i}"), &big)]);
        }
        assert!(log.bytes() <= size * 5 / 2, "{} bytes held", log.bytes());
        assert_eq!(log.floor(), 98);
        assert_eq!(log.since(97, usize::MAX), CatchUp::Behind);

        // One batch over the bound is kept alone (the newest always is).
        log.push(100, vec![put("/huge", &"y".repeat(size * 10))]);
        assert_eq!((log.floor(), log.head()), (100, 101));
        let (upto, _, records) = changes(log.since(100, 1));
        assert_eq!((upto, records.len()), (101, 1));
    }
}
