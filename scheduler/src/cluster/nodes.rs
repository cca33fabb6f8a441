//! Nodes in the store: registration (with the node's task subnet claim),
//! loss, and drain.
//!
//! A subnet is claimed with a `subnets/<cidr>` record created in the same
//! guarded transaction as the node record that names it, and only if the
//! claim is absent: two schedulers racing for one subnet cannot both win.
//! Once a registration of this process lost such a race (another writer
//! claims too), nodes look for a subnet of their own
//! ([`crate::subnet::spread`]) instead of the lowest free one, so racers
//! stop reaching for the same one; a lone scheduler never loses one and
//! hands out the lowest free subnets in order.

use std::sync::atomic::{AtomicU32, Ordering};

use drover_store::{Kind, Versioned};

use super::{now_ms, Cluster, ClusterError, Step};
use crate::state::{NodeRecord, SubnetClaim};
use crate::subnet::{self, Claim, ClaimOp, Ipv4Net, Refusal};
use crate::sync::lock;
use crate::transitions;

impl Cluster {
    /// Records a registering node as ready. What the operator set (drain)
    /// and its task subnet are kept from an earlier record; a node seen for
    /// the first time gets the subnet it asks for or the lowest free one of
    /// the cluster CIDR. Returns the record as stored.
    pub async fn register_node(&self, reported: &NodeRecord) -> Result<NodeRecord, ClusterError> {
        let _planning = self.planning.lock().await;
        let id = &reported.id;
        let tries = AtomicU32::new(0);
        let tries = &tries;
        let done = self
            .write(
                || format!("node {id}"),
                move || async move {
                    let old = self.store.get::<NodeRecord>(Kind::Node, id).await?;
                    // The claims cached from earlier registrations, read
                    // again after a conflict (another scheduler claimed).
                    let retry = tries.fetch_add(1, Ordering::Relaxed) > 0;
                    if retry {
                        self.claims_contended.store(true, Ordering::Relaxed);
                    }
                    let spread = self.claims_contended.load(Ordering::Relaxed);
                    if retry || lock(&self.claims).is_none() {
                        let stored = self.store.list::<SubnetClaim>(Kind::Subnet).await?.items;
                        *lock(&self.claims) = Some(Claims::read(&stored));
                    }
                    let held = old.as_ref().and_then(|o| o.value.subnet);
                    let assigned = {
                        let cached = lock(&self.claims);
                        let claims = cached.as_ref().map(Claims::borrowed).unwrap_or_default();
                        // Once a race was lost, not the lowest free subnet
                        // (every racer reaches for it, and this process's
                        // cache misses the other's claims) but one of the
                        // node's own (`subnet::spread`).
                        let wanted = reported.subnet.or_else(|| {
                            let taken = claims.iter().map(|c| &c.subnet);
                            (spread && held.is_none())
                                .then(|| subnet::spread::after_conflict(&self.subnets, id, taken))
                                .flatten()
                        });
                        subnet::assign(&self.subnets, id, held, wanted, &claims)
                            .map_err(|refusal| refused(id, refusal))?
                    };
                    match (&assigned.lost, held) {
                        (Some((s, holder)), _) => {
                            tracing::error!(node_id = %id, subnet = %s, holder = %holder, "node's subnet is claimed by another node; giving it a new one");
                        }
                        (None, Some(s)) if !self.subnets.is_node_subnet(&s) => {
                            tracing::warn!(node_id = %id, subnet = %s, cluster_cidr = %self.subnets.cluster(), "node keeps a subnet outside the current cluster CIDR");
                        }
                        _ => {}
                    }
                    let node = transitions::registered(
                        reported,
                        old.as_ref().map(|o| &o.value),
                        assigned.subnet,
                        now_ms(),
                    );
                    let mut txn = self.txn();
                    let mut created = Vec::new();
                    for op in &assigned.claims {
                        match *op {
                            ClaimOp::Keep {
                                subnet,
                                mod_revision,
                            } => txn.expect(Kind::Subnet, &subnet.to_string(), mod_revision),
                            ClaimOp::Create(subnet) => {
                                let claim = SubnetClaim {
                                    node_id: id.clone(),
                                };
                                txn.create(Kind::Subnet, &subnet.to_string(), &claim)?;
                                created.push(subnet);
                            }
                        }
                    }
                    let rev = old.as_ref().map(|o| o.mod_revision).unwrap_or(0);
                    txn.update(Kind::Node, id, rev, &node)?;
                    Ok(Step::Commit(txn, (node, held.is_none(), created)))
                },
            )
            .await
            .inspect_err(|_| *lock(&self.claims) = None)?;
        let (node, new_subnet, created) = done.value;
        if let (Some(revision), Some(claims)) = (done.revision, lock(&self.claims).as_mut()) {
            for subnet in created {
                claims.insert(subnet, id, revision);
            }
        }
        let subnet = node.subnet.map(|s| s.to_string()).unwrap_or_default();
        tracing::info!(node_id = %node.id, %subnet, new_subnet, revision = done.revision.unwrap_or(0), "node recorded");
        Ok(node)
    }

    /// Marks a node down and its live allocations lost, unless `connected`
    /// says (under the planning lock, so that no registration interleaves)
    /// that its agent is back. Returns whether the node went down now.
    pub async fn node_down(
        &self,
        node_id: &str,
        connected: impl Fn() -> bool + Sync,
    ) -> Result<bool, ClusterError> {
        let _planning = self.planning.lock().await;
        let connected = &connected;
        let done = self
            .write(
                || format!("node {node_id}"),
                move || async move {
                    if connected() {
                        return Ok(Step::Done(0));
                    }
                    let Some(n) = self.store.get::<NodeRecord>(Kind::Node, node_id).await? else {
                        return Ok(Step::Done(0));
                    };
                    let allocs = self.allocs().await?;
                    let now = now_ms();
                    let Some((node, lost)) =
                        transitions::node_down(&n.value, allocs.iter().map(|a| &a.value), now)
                    else {
                        return Ok(Step::Done(0));
                    };
                    // The node last: a write cut short leaves it ready, so
                    // the next pass marks it down again and the rest lost.
                    let mut txn = self.txn();
                    for (i, r) in &lost {
                        txn.update(Kind::Alloc, &r.id, allocs[*i].mod_revision, r)?;
                    }
                    txn.update(Kind::Node, node_id, n.mod_revision, &node)?;
                    txn.anchor();
                    Ok(Step::Commit(txn, lost.len()))
                },
            )
            .await?;
        if done.revision.is_some() {
            tracing::warn!(node_id, lost = done.value, "node down");
        }
        Ok(done.revision.is_some())
    }

    /// Makes initializing node `node_id` ready (its stale copies are
    /// stopped, see [`crate::returning`]). Returns the record as stored,
    /// or `None` when the node is not initializing (down meanwhile, or
    /// ready already). Fenced like every write of the cluster.
    pub async fn node_ready(&self, node_id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        // Under the planning lock, so a registration or node_down of this
        // process cannot interleave; the record's revision guards the rest.
        let _planning = self.planning.lock().await;
        self.update(Kind::Node, "node", node_id, transitions::ready)
            .await
    }

    /// Turns draining on or off for node `node_id` (its full id). Returns
    /// the record as stored, or `None` when there is no such node.
    pub async fn set_draining(
        &self,
        node_id: &str,
        enable: bool,
    ) -> Result<Option<NodeRecord>, ClusterError> {
        // Under the planning lock, so a registration or node_down of this
        // process cannot interleave; the guard covers other processes.
        let _planning = self.planning.lock().await;
        self.update(Kind::Node, "node", node_id, |n: &NodeRecord| {
            Some(transitions::drained(n, enable))
        })
        .await
    }
}

/// The error for a node that gets no subnet.
fn refused(node_id: &str, refusal: Refusal) -> ClusterError {
    match refusal {
        Refusal::Wanted { wanted, reason } => ClusterError::SubnetRefused {
            node_id: node_id.to_string(),
            wanted,
            reason,
        },
        Refusal::Exhausted(source) => ClusterError::Subnet {
            node_id: node_id.to_string(),
            source,
        },
    }
}

/// The subnet claims of the store, kept between registrations so that one
/// does not read every claim (N reads each, N² for N nodes joining). Claims
/// are only ever created, so what this process read or wrote stays true;
/// one another scheduler created makes a registration's create-if-absent
/// guard fail, and the retry reads them all again.
#[derive(Debug, Default)]
pub(super) struct Claims(Vec<(Ipv4Net, String, i64)>);

impl Claims {
    /// The claims as read from the store.
    fn read(stored: &[Versioned<SubnetClaim>]) -> Claims {
        Claims(
            stored
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.parse().ok()?,
                        c.value.node_id.clone(),
                        c.mod_revision,
                    ))
                })
                .collect(),
        )
    }

    /// The claims as [`subnet::assign`] takes them.
    fn borrowed(&self) -> Vec<Claim<'_>> {
        self.0
            .iter()
            .map(|(subnet, node_id, mod_revision)| Claim {
                subnet: *subnet,
                node_id,
                mod_revision: *mod_revision,
            })
            .collect()
    }

    /// A claim this process created at `revision`.
    fn insert(&mut self, subnet: Ipv4Net, node_id: &str, revision: i64) {
        self.0.retain(|(s, _, _)| *s != subnet);
        self.0.push((subnet, node_id.to_owned(), revision));
    }
}
