//! What each agent is sent of its assignments, at scale.
//!
//! Two costs used to grow with the square of the cluster's work. Each
//! woken session read every allocation and job from the store for itself
//! (a batch of placements wakes hundreds of nodes at once: hundreds of
//! full reads), and each push sent the node its whole list again (a node
//! acknowledging its k allocations one by one was sent k lists of up to k
//! entries).
//!
//! [`Snapshots`] serves every session woken before a read started from
//! that one read, indexed by node. [`Sent`] remembers, per stream, a
//! fingerprint of each assignment sent, and when the agent said it applies
//! partial updates (`Register.partial_assignments`) sends only the entries
//! that changed and the ids that left; otherwise (older agents) the full
//! list, as before.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use drover_proto::v1 as pb;
use prost::Message;
use tokio::time::Instant;

use crate::cluster::ClusterError;
use crate::core::Core;
use crate::transitions;

/// Every node's assignments as of one store read.
type ByNode = HashMap<String, Vec<pb::Assignment>>;

/// The latest read, shared by the sessions of one scheduler.
#[derive(Debug, Default)]
pub struct Snapshots {
    latest: tokio::sync::Mutex<Option<(Instant, Arc<ByNode>)>>,
    /// Records the image digests agents report as their deployment's pin
    /// (which the assignments then carry: [`crate::image_pins`]).
    pub pins: crate::image_pins::Recorder,
}

impl Snapshots {
    /// Node `node_id`'s assignments as of a read started no earlier than
    /// `since` (when the session was woken): one read serves every session
    /// woken before it started.
    pub async fn for_node(
        &self,
        core: &Core,
        node_id: &str,
        since: Instant,
    ) -> Result<Vec<pb::Assignment>, ClusterError> {
        let mut latest = self.latest.lock().await;
        let fresh = latest.as_ref().filter(|(at, _)| *at >= since);
        let by_node = match fresh {
            Some((_, s)) => s.clone(),
            None => {
                let started = Instant::now();
                let (allocs, jobs) = core.cluster().allocs_and_jobs().await?;
                let store = core.cluster().store();
                let pins = crate::image_pins::Pins::read(store).await?;
                let older = pins.older_specs(store, &allocs, &jobs).await?;
                let mut by_node = ByNode::new();
                for a in transitions::assigned_anywhere(&allocs, &jobs) {
                    let version = jobs.get(&a.alloc.job).map_or(0, |j| j.version);
                    // The group as of the version that placed it: its pins.
                    let own = if a.alloc.job_version == version {
                        Some(a.group)
                    } else {
                        older
                            .get(&(a.alloc.job.clone(), a.alloc.job_version))
                            .and_then(|spec| spec.group(&a.alloc.group))
                    };
                    by_node
                        .entry(a.alloc.node_id.clone())
                        .or_default()
                        .push(pb::Assignment {
                            allocation: Some(pb::Allocation::from(a.alloc)),
                            group: Some(pb::Group::from(a.group)),
                            job_kind: a.kind.as_str().into(),
                            image_pins: own.map(|g| pins.for_alloc(a.alloc, g)).unwrap_or_default(),
                        });
                }
                let s = Arc::new(by_node);
                *latest = Some((started, s.clone()));
                s
            }
        };
        drop(latest);
        Ok(by_node.get(node_id).cloned().unwrap_or_default())
    }
}

/// What one stream has sent its agent.
#[derive(Debug)]
pub struct Sent {
    partial: bool,
    first: bool,
    fingerprints: HashMap<String, u64>,
}

impl Sent {
    /// A new stream; `partial`: the agent applies partial updates.
    pub fn new(partial: bool) -> Sent {
        Sent {
            partial,
            first: true,
            fingerprints: HashMap::new(),
        }
    }

    /// The message that brings the agent to `current`, or `None` when it
    /// has it already.
    pub fn next(&mut self, current: Vec<pb::Assignment>) -> Option<pb::Assignments> {
        let mut now = HashMap::with_capacity(current.len());
        let mut changed = Vec::new();
        for a in &current {
            let id = a
                .allocation
                .as_ref()
                .map(|x| x.id.clone())
                .unwrap_or_default();
            let fp = fingerprint(a);
            if self.fingerprints.get(&id) != Some(&fp) {
                changed.push(a.clone());
            }
            now.insert(id, fp);
        }
        let removed: Vec<String> = self
            .fingerprints
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        let first = std::mem::replace(&mut self.first, false);
        self.fingerprints = now;
        if !first && changed.is_empty() && removed.is_empty() {
            return None;
        }
        Some(if self.partial && !first {
            pb::Assignments {
                allocations: changed,
                partial: true,
                removed,
            }
        } else {
            pb::Assignments {
                allocations: current,
                partial: false,
                removed: Vec::new(),
            }
        })
    }
}

fn fingerprint(a: &pb::Assignment) -> u64 {
    let mut h = DefaultHasher::new();
    a.encode_to_vec().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn asg(id: &str, status: &str) -> pb::Assignment {
        pb::Assignment {
            allocation: Some(pb::Allocation {
                id: id.into(),
                status: status.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_partial_agent_gets_the_full_set_first_then_only_changes() {
        let mut sent = Sent::new(true);
        let first = sent
            .next(vec![asg("a", "pending"), asg("b", "pending")])
            .unwrap();
        assert!(!first.partial);
        assert_eq!(first.allocations.len(), 2);
        assert_eq!(
            sent.next(vec![asg("a", "pending"), asg("b", "pending")]),
            None
        );
        let change = sent
            .next(vec![asg("a", "running"), asg("c", "pending")])
            .unwrap();
        assert!(change.partial);
        let ids: Vec<_> = change
            .allocations
            .iter()
            .map(|a| a.allocation.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(change.removed, ["b"]);
    }

    #[test]
    fn an_older_agent_always_gets_the_full_set() {
        let mut sent = Sent::new(false);
        sent.next(vec![asg("a", "pending")]).unwrap();
        let again = sent
            .next(vec![asg("a", "running"), asg("b", "pending")])
            .unwrap();
        assert!(!again.partial);
        assert_eq!(again.allocations.len(), 2);
        assert_eq!(
            sent.next(vec![asg("a", "running"), asg("b", "pending")]),
            None
        );
    }
}
