//! Choosing the node for each instance of a group without looking at
//! every node every time.
//!
//! Scanning all N nodes for each of K instances costs O(N·K): at 10,000
//! nodes that is a few thousand placements a second. Like Nomad's
//! "limited" iterator, a [`Selector`] instead scores a bounded number of
//! *feasible* candidates per instance — [`limit`]: at least
//! [`MIN_CANDIDATES`], and log2 N on larger clusters — and takes the best
//! of those, walking the nodes as a ring from a start that depends only on
//! the job and group names (so the same input gives the same plan) and
//! resuming each instance where the previous one stopped, so that
//! successive instances look at different nodes.
//!
//! A node a filter turns away is unlinked from the ring for the rest of
//! the group: within one group's placement, usage and instance counts only
//! grow, so a node that cannot take one instance cannot take the next
//! (every [`super::feasible::Filter`] must be monotone in that sense).
//! Filling a nearly full cluster therefore costs O(N + K·limit) rather
//! than O(N·K).
//!
//! The trade-off: an instance goes to the best of `limit` feasible nodes,
//! not the best of all of them, so bin-packing and anti-affinity are
//! approximate on clusters larger than the limit (exact below it: every
//! test cluster of up to 16 nodes gets the same plan as a full scan). What
//! stays exact: an instance fails only when no node at all can take it
//! (the ring is then empty after one full turn), and its explanation still
//! counts every node.

use super::{feasible, rank, Ask, JobTally, Usage};

/// Fewest feasible nodes scored per instance.
pub const MIN_CANDIDATES: usize = 16;

/// How many feasible nodes are scored per instance on a cluster of `n`
/// nodes: `max(MIN_CANDIDATES, ceil(log2 n))`.
pub fn limit(n: usize) -> usize {
    let log2 = usize::BITS - n.saturating_sub(1).leading_zeros();
    MIN_CANDIDATES.max(log2 as usize)
}

/// The nodes still worth looking at for one group, as a ring over node
/// positions, and where the next look starts.
#[derive(Debug)]
pub(super) struct Selector {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Nodes still on the ring.
    alive: usize,
    /// Where the next instance's look starts; `None` when the ring is empty.
    cursor: Option<u32>,
    limit: usize,
}

impl Selector {
    /// A ring over `n` nodes starting at a position chosen by the job and
    /// group names.
    pub(super) fn new(n: usize, job: &str, group: &str) -> Selector {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        let len = n32 as usize;
        let start = if n32 == 0 {
            None
        } else {
            Some((fnv1a(&[job.as_bytes(), b"\0", group.as_bytes()]) % u64::from(n32)) as u32)
        };
        Selector {
            next: (0..n32).map(|i| (i + 1) % n32.max(1)).collect(),
            prev: (0..n32).map(|i| (i + n32 - 1) % n32.max(1)).collect(),
            alive: len,
            cursor: start,
            limit: limit(len),
        }
    }

    /// Scores `limit` feasible nodes per instance instead of [`limit`]'s
    /// number; `None` keeps that.
    pub(super) fn with_limit(mut self, limit: Option<usize>) -> Selector {
        if let Some(l) = limit {
            self.limit = l.max(1);
        }
        self
    }

    /// The best of up to `limit` feasible nodes for one more instance, by
    /// position; `None` when no node can take it. Ties go to the lower
    /// position (nodes come sorted by id).
    pub(super) fn select(
        &mut self,
        usage: &Usage<'_>,
        instances: &[u32],
        tally: &JobTally,
        ask: &Ask<'_>,
    ) -> Option<usize> {
        let mut pos = self.cursor?;
        let mut best: Option<(f64, u32)> = None;
        let mut found = 0;
        let turn = self.alive;
        for _ in 0..turn {
            let after = self.next[pos as usize];
            let c = usage.candidate(pos as usize, instances, tally);
            if feasible::feasible(&c, ask) {
                found += 1;
                let score = rank::score(&c, ask);
                let better = match best {
                    None => true,
                    Some((s, at)) => score > s || (score == s && pos < at),
                };
                if better {
                    best = Some((score, pos));
                }
            } else {
                self.unlink(pos);
            }
            pos = after;
            if found == self.limit {
                break;
            }
        }
        self.cursor = (self.alive > 0).then_some(pos);
        best.map(|(_, at)| at as usize)
    }

    /// Removes `pos` from the ring.
    fn unlink(&mut self, pos: u32) {
        let (p, n) = (self.prev[pos as usize], self.next[pos as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        self.alive -= 1;
    }
}

/// FNV-1a over the parts: a stable hash (the standard library's is
/// seeded per process, and plans must not change between runs).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_at_least_the_minimum_and_grows_with_log2() {
        assert_eq!(limit(0), MIN_CANDIDATES);
        assert_eq!(limit(5), MIN_CANDIDATES);
        assert_eq!(limit(1 << 16), MIN_CANDIDATES);
        assert_eq!(limit((1 << 20) + 1), 21);
    }

    #[test]
    fn the_start_depends_on_job_and_group_only() {
        let a = Selector::new(1000, "web", "g");
        assert_eq!(a.cursor, Selector::new(1000, "web", "g").cursor);
        assert_ne!(a.cursor, Selector::new(1000, "web", "h").cursor);
        assert_eq!(Selector::new(0, "web", "g").cursor, None);
    }
}
