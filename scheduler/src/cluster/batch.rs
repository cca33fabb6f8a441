//! Cutting a guarded write into store transactions within the store's
//! limits: at most [`MAX_TXN_OPS`] compares and as many puts in one
//! transaction, and at most [`MAX_REQUEST_BYTES`] in one request (etcd's
//! defaults, and the embedded store's limits).
//!
//! Pure: [`split`] only looks at the size of each operation. A write that
//! fits in one transaction stays one transaction. A larger one is cut into
//! consecutive batches, in the order its operations were added; when it
//! has an anchor (the record the whole write depends on: the job, the
//! node), every batch that does not hold the anchor's own operation is
//! guarded by the anchor too, so that a concurrent change of it aborts the
//! rest of the write.

use std::ops::Range;

use drover_store::client::{MAX_REQUEST_BYTES, MAX_TXN_OPS};

/// Bytes of a request that are not keys and values (headers, field tags,
/// revisions), kept free below [`MAX_REQUEST_BYTES`].
const REQUEST_OVERHEAD: usize = 16 * 1024;

/// Protobuf framing of one compare or put besides its key and value.
const OP_OVERHEAD: usize = 32;

/// What one transaction may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Compares (and, separately, puts) in one transaction.
    pub max_ops: usize,
    /// Bytes of keys, values and framing in one transaction.
    pub max_bytes: usize,
}

/// The limits of etcd with its default flags, and of the embedded store,
/// less one compare: a leader's writes carry its term's fence (the leader
/// key's `create_revision`), and etcd counts compares against the same
/// limit as operations.
pub const STORE_LIMITS: Limits = Limits {
    max_ops: MAX_TXN_OPS - 1,
    max_bytes: MAX_REQUEST_BYTES - REQUEST_OVERHEAD,
};

/// The size of one operation: a guard on a key, and maybe a put of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSize {
    /// Bytes of the key.
    pub key: usize,
    /// Bytes of the value put; `None` for a guard alone.
    pub value: Option<usize>,
}

impl OpSize {
    /// Bytes the operation adds to a request: its compare, and its put.
    pub fn bytes(self) -> usize {
        let guard = self.key + OP_OVERHEAD;
        guard + self.value.map_or(0, |v| self.key + v + OP_OVERHEAD)
    }

    /// Bytes of its guard alone (what an anchor adds to other batches).
    fn guard_bytes(self) -> usize {
        self.key + OP_OVERHEAD
    }
}

/// An operation too large for any transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Its position in the write.
    pub index: usize,
    /// What it needs, in bytes.
    pub bytes: usize,
    /// What a transaction may hold besides it, in bytes.
    pub max: usize,
}

/// Cuts operations of sizes `ops` into consecutive batches that each fit
/// `limits`, counting the guard of operation `anchor` in every batch that
/// does not hold it. Every operation is in exactly one batch, in order;
/// no batch is empty. Fails when one operation cannot fit in any batch.
pub fn split(
    ops: &[OpSize],
    anchor: Option<usize>,
    limits: Limits,
) -> Result<Vec<Range<usize>>, TooLarge> {
    let anchor_guard = anchor.and_then(|a| ops.get(a)).map(|a| a.guard_bytes());
    let mut batches = Vec::new();
    let mut start = 0;
    while start < ops.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < ops.len() {
            let holds_anchor = anchor.is_some_and(|a| (start..=end).contains(&a));
            let (extra_ops, extra_bytes) = match (anchor_guard, holds_anchor) {
                (Some(g), false) => (1, g),
                _ => (0, 0),
            };
            let next = bytes + ops[end].bytes();
            if end - start + 1 + extra_ops > limits.max_ops || next + extra_bytes > limits.max_bytes
            {
                break;
            }
            bytes = next;
            end += 1;
        }
        if end == start {
            let extra = anchor_guard.filter(|_| anchor != Some(start)).unwrap_or(0);
            return Err(TooLarge {
                index: start,
                bytes: ops[start].bytes(),
                max: limits.max_bytes.saturating_sub(extra),
            });
        }
        batches.push(start..end);
        start = end;
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]

    use super::*;

    fn put(key: usize, value: usize) -> OpSize {
        OpSize {
            key,
            value: Some(value),
        }
    }

    const SMALL: Limits = Limits {
        max_ops: 4,
        max_bytes: 10_000,
    };

    #[test]
    fn a_write_within_the_limits_is_one_transaction() {
        let ops = vec![put(10, 100); 127];
        assert_eq!(split(&ops, Some(0), STORE_LIMITS).unwrap(), [0..127]);
        // Typed: regex (in the graph since constraints) brings more
        // `PartialEq` impls for `Range`.
        assert!(split(&[], None, STORE_LIMITS).unwrap().is_empty());
    }

    #[test]
    fn batches_count_the_anchor_guard_where_they_do_not_hold_it() {
        // Anchor first: it fills its own batch's slot, later batches keep
        // one compare for its guard.
        let ops = vec![put(10, 10); 10];
        assert_eq!(split(&ops, Some(0), SMALL).unwrap(), [0..4, 4..7, 7..10]);
        // Anchor last: earlier batches carry its guard, the last holds it.
        assert_eq!(split(&ops, Some(9), SMALL).unwrap(), [0..3, 3..6, 6..10]);
        assert_eq!(split(&ops, None, SMALL).unwrap(), [0..4, 4..8, 8..10]);
    }

    #[test]
    fn three_hundred_allocations_and_their_job_fit_in_three_store_transactions() {
        let mut ops = vec![put(20, 4_000)];
        ops.extend(vec![put(50, 600); 300]);
        let batches = split(&ops, Some(0), STORE_LIMITS).unwrap();
        assert_eq!(batches, [0..127, 127..253, 253..301]);
        for b in &batches {
            // Its own guards, the anchor's where it does not hold it, and
            // the leader's fence.
            let compares = b.len() + usize::from(!b.contains(&0)) + 1;
            assert!(compares <= MAX_TXN_OPS, "{b:?}");
        }
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let limits = Limits {
            max_ops: 100,
            max_bytes: 1_000,
        };
        // Each op is 10 + 32 + 10 + 300 + 32 = 384 bytes: two per batch.
        let ops = vec![put(10, 300); 5];
        let batches = split(&ops, None, limits).unwrap();
        assert_eq!(batches, [0..2, 2..4, 4..5]);
        for b in batches {
            let bytes: usize = ops[b].iter().map(|o| o.bytes()).sum();
            assert!(bytes <= limits.max_bytes);
        }
    }

    #[test]
    fn an_operation_larger_than_a_transaction_is_named() {
        let ops = [put(10, 10), put(10, 20_000), put(10, 10)];
        assert_eq!(
            split(&ops, Some(0), SMALL),
            Err(TooLarge {
                index: 1,
                bytes: ops[1].bytes(),
                max: SMALL.max_bytes - 42,
            })
        );
        let job = [put(10, 2_000_000)];
        let err = split(&job, Some(0), STORE_LIMITS).unwrap_err();
        assert_eq!((err.index, err.max), (0, STORE_LIMITS.max_bytes));
    }

    #[test]
    fn every_operation_is_in_exactly_one_batch_in_order() {
        for n in [1usize, 2, 127, 128, 129, 255, 256, 1000] {
            for anchor in [None, Some(0), Some(n / 2), Some(n - 1)] {
                let ops: Vec<OpSize> = (0..n)
                    .map(|i| OpSize {
                        key: 10 + i % 7,
                        value: (i % 3 != 0).then_some(100 + i % 50),
                    })
                    .collect();
                let batches = split(&ops, anchor, STORE_LIMITS).unwrap();
                let mut next = 0;
                for b in &batches {
                    assert_eq!(b.start, next, "n={n} anchor={anchor:?}");
                    assert!(!b.is_empty());
                    let extra = anchor.is_some_and(|a| !b.contains(&a));
                    assert!(b.len() + usize::from(extra) <= MAX_TXN_OPS);
                    next = b.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
