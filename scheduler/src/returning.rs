//! A node that comes back: its stale copies are stopped before it is
//! ready again.
//!
//! A node that was down had its allocations lost and replaced elsewhere.
//! When its agent registers again it reports what it still runs; those of
//! the copies the cluster no longer wants there (desired stop, assigned to
//! another node, or unknown) are *stale*. Such a node is recorded
//! `initializing` (not placeable, its allocations out of service
//! discovery) until its status reports show every stale copy terminal, so
//! the cut-off copy and its replacement never both look served. A node
//! without stale copies is ready at once, as before.
//!
//! This module holds the pure part: which copies are stale
//! ([`stale`]), how long the node may stay initializing ([`bound`]), and
//! the per-node bookkeeping of what is still awaited ([`Returns`]). The
//! store write and its consequences live in `core/returning.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::state::{AllocRecord, DesiredState, JobRecord};
use crate::transitions::StatusReport;

/// The stop time assumed for a copy the cluster has no job for (unknown
/// allocation or job gone): the job file's default `kill_timeout_ms`.
pub const UNKNOWN_KILL_TIMEOUT: Duration =
    Duration::from_millis(crate::jobfile::DEFAULT_KILL_TIMEOUT_MS.unsigned_abs());

/// One stale copy a returning node reports running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The allocation.
    pub alloc_id: String,
    /// The longest `kill_timeout_ms` of its group's tasks: how long the
    /// agent may take to stop it after SIGTERM.
    pub kill_timeout: Duration,
}

/// The copies among `running` (what node `node_id` reports on
/// registering) that the cluster does not want running there: reported
/// live, and either unknown to `allocs`, assigned to another node, or
/// desired stop. `jobs` gives each one's kill timeout.
pub fn stale(
    node_id: &str,
    running: &[StatusReport],
    allocs: &BTreeMap<String, AllocRecord>,
    jobs: &BTreeMap<String, JobRecord>,
) -> Vec<Stale> {
    running
        .iter()
        .filter(|r| !r.status.is_terminal())
        .filter_map(|r| {
            let wanted = allocs
                .get(&r.alloc_id)
                .is_some_and(|a| a.node_id == node_id && a.desired == DesiredState::Run);
            if wanted {
                return None;
            }
            let kill_timeout = allocs
                .get(&r.alloc_id)
                .and_then(|a| kill_timeout(a, jobs))
                .unwrap_or(UNKNOWN_KILL_TIMEOUT);
            Some(Stale {
                alloc_id: r.alloc_id.clone(),
                kill_timeout,
            })
        })
        .collect()
}

/// The longest kill timeout of the tasks of `alloc`'s group, if its job
/// and group are known.
fn kill_timeout(alloc: &AllocRecord, jobs: &BTreeMap<String, JobRecord>) -> Option<Duration> {
    let group = jobs
        .get(&alloc.job)?
        .spec
        .groups
        .iter()
        .find(|g| g.name == alloc.group)?;
    group
        .tasks
        .iter()
        .map(|t| Duration::from_millis(t.kill_timeout_ms))
        .max()
}

/// How long a returning node may stay initializing before it is made
/// ready anyway: the longest kill timeout of its stale copies (the agent
/// sends SIGTERM, waits that long, then SIGKILL) plus the node grace (for
/// the agent to get its assignment and report the stop back). Past it the
/// agent is not stopping them (stuck, or an older agent), and a node
/// stuck initializing forever would be worse than a late stop.
pub fn bound(stale: &[Stale], node_grace: Duration) -> Duration {
    let longest = stale
        .iter()
        .map(|s| s.kill_timeout)
        .max()
        .unwrap_or_default();
    longest.saturating_add(node_grace)
}

/// What a report or the clock means for an initializing node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flip {
    /// Still waiting (or not initializing at all).
    Wait,
    /// Every stale copy reported terminal: ready now.
    Ready,
    /// Past its bound with these copies still not reported stopped: ready
    /// anyway (with a warning naming them).
    Overdue(Vec<String>),
}

/// One initializing node: the stale copies still awaited and when to give
/// up waiting.
#[derive(Debug, Clone)]
struct Awaited {
    stale: BTreeSet<String>,
    deadline: Instant,
}

/// The initializing nodes this scheduler waits on, by node id.
#[derive(Debug, Default)]
pub struct Returns(HashMap<String, Awaited>);

impl Returns {
    /// Node `node_id` registered at `now` with `stale` copies: wait for
    /// them (replacing what an earlier registration awaited) until
    /// `now + bound`. With none it is ready at once and not tracked.
    pub fn start(&mut self, node_id: &str, stale: &[Stale], now: Instant, bound: Duration) {
        if stale.is_empty() {
            self.0.remove(node_id);
            return;
        }
        let awaited = Awaited {
            stale: stale.iter().map(|s| s.alloc_id.clone()).collect(),
            deadline: now + bound,
        };
        self.0.insert(node_id.to_owned(), awaited);
    }

    /// Node `node_id` reports allocation `alloc_id` with a status that is
    /// terminal or not. [`Flip::Ready`] (and the node is no longer
    /// tracked) when that was the last stale copy.
    pub fn reported(&mut self, node_id: &str, alloc_id: &str, terminal: bool) -> Flip {
        let Some(a) = self.0.get_mut(node_id) else {
            return Flip::Wait;
        };
        if terminal {
            a.stale.remove(alloc_id);
        }
        if a.stale.is_empty() {
            self.0.remove(node_id);
            return Flip::Ready;
        }
        Flip::Wait
    }

    /// At `now`: [`Flip::Overdue`] with the copies still awaited when node
    /// `node_id` is past its deadline (and it is no longer tracked).
    pub fn check(&mut self, node_id: &str, now: Instant) -> Flip {
        match self.0.get(node_id) {
            Some(a) if now >= a.deadline => {
                let left = a.stale.iter().cloned().collect();
                self.0.remove(node_id);
                Flip::Overdue(left)
            }
            _ => Flip::Wait,
        }
    }

    /// When waiting on node `node_id` ends, if it is waited on.
    pub fn deadline(&self, node_id: &str) -> Option<Instant> {
        self.0.get(node_id).map(|a| a.deadline)
    }

    /// Whether node `node_id` is being waited on.
    pub fn tracks(&self, node_id: &str) -> bool {
        self.0.contains_key(node_id)
    }

    /// Stops waiting on node `node_id` (it went down).
    pub fn forget(&mut self, node_id: &str) {
        self.0.remove(node_id);
    }
}

#[cfg(test)]
mod tests;
