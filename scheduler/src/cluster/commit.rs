//! The one way the scheduler writes to the store: a guarded transaction,
//! built from what was read and tried again on fresh reads when someone
//! else wrote first.
//!
//! Every record a write depends on is guarded by the revision it was read
//! at (0: it must not exist), so two schedulers can never both win a race,
//! and a write never undoes one it did not see.

use std::future::Future;
use std::ops::Range;

use drover_store::client::encode;
use drover_store::{Committed, Guard, Kind, Store, Write};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::batch::{split, OpSize, STORE_LIMITS};
use super::{Cluster, ClusterError};

/// Attempts at a write before giving up with [`ClusterError::Contended`].
pub const MAX_ATTEMPTS: u32 = 8;

/// A transaction being built: one guard per record read, with the write
/// of what changes. There is no unguarded write. When it is too large for
/// one store transaction it is written in batches (see [`super::batch`]),
/// in the order its records were added.
pub struct Txn<'s> {
    store: &'s Store,
    ops: Vec<Op>,
    /// The op whose guard every batch carries: see [`Txn::anchor`].
    anchor: Option<usize>,
}

/// One record of a transaction: its guard and what is written to it.
struct Op {
    guard: Guard,
    write: Option<Write>,
}

impl Txn<'_> {
    /// Requires the record to be unchanged since it was read at
    /// `mod_revision` (0: still absent), without writing it.
    pub fn expect(&mut self, kind: Kind, name: &str, mod_revision: i64) {
        self.ops.push(Op {
            guard: guard(kind, name, mod_revision),
            write: None,
        });
    }

    /// Writes `value` over the record read at `mod_revision` (0: it must
    /// not exist yet).
    pub fn update<T: Serialize>(
        &mut self,
        kind: Kind,
        name: &str,
        mod_revision: i64,
        value: &T,
    ) -> Result<(), ClusterError> {
        let value = encode(&self.store.key(kind, name), value)?;
        self.ops.push(Op {
            guard: guard(kind, name, mod_revision),
            write: Some(Write::Put {
                kind,
                name: name.to_string(),
                value,
            }),
        });
        Ok(())
    }

    /// Deletes the record read at `mod_revision`, only if unchanged since.
    pub fn delete(&mut self, kind: Kind, name: &str, mod_revision: i64) {
        self.ops.push(Op {
            guard: guard(kind, name, mod_revision),
            write: Some(Write::Delete {
                kind,
                name: name.to_string(),
            }),
        });
    }

    /// Creates the record, only if it does not exist.
    pub fn create<T: Serialize>(
        &mut self,
        kind: Kind,
        name: &str,
        value: &T,
    ) -> Result<(), ClusterError> {
        self.update(kind, name, 0, value)
    }

    /// Makes the record added last the anchor of the write: when the
    /// transaction is written in batches, every batch is guarded by it
    /// (as read before its own batch, as written after), so a concurrent
    /// change of it stops the rest of the write, which is then planned
    /// again from fresh reads. Add it where a half-written transaction
    /// leaves a state the anchor's record still explains.
    pub fn anchor(&mut self) {
        self.anchor = self.ops.len().checked_sub(1);
    }

    /// The transaction cut into batches within the store's limits.
    fn batches(&self) -> Result<Vec<Range<usize>>, ClusterError> {
        let sizes: Vec<OpSize> = self
            .ops
            .iter()
            .map(|op| OpSize {
                key: self.store.key(op.guard.kind, &op.guard.name).len(),
                value: op.write.as_ref().map(|w| match w {
                    Write::Put { value, .. } => value.len(),
                    Write::Delete { .. } => 0,
                }),
            })
            .collect();
        split(&sizes, self.anchor, STORE_LIMITS).map_err(|e| {
            let g = &self.ops[e.index].guard;
            ClusterError::TooLarge {
                key: self.store.key(g.kind, &g.name),
                bytes: e.bytes,
                max: e.max,
            }
        })
    }
}

fn guard(kind: Kind, name: &str, mod_revision: i64) -> Guard {
    Guard {
        kind,
        name: name.to_string(),
        mod_revision,
    }
}

/// What one attempt of a write decided.
pub enum Step<'s, T> {
    /// Nothing to write: the write is over, with this value.
    Done(T),
    /// Commit the transaction (if it writes anything); once it commits, the
    /// write is over with this value.
    Commit(Txn<'s>, T),
}

/// The end of a write.
#[derive(Debug)]
pub struct Written<T> {
    /// What the attempt that ended it returned.
    pub value: T,
    /// The store revision of the commit; `None` when nothing was written.
    pub revision: Option<i64>,
}

impl Cluster {
    /// An empty transaction.
    pub(crate) fn txn(&self) -> Txn<'_> {
        Txn {
            store: &self.store,
            ops: Vec::new(),
            anchor: None,
        }
    }

    /// Runs `attempt` (read, decide, build the transaction) and commits
    /// what it returns; when a guard fails, runs it again on fresh reads,
    /// up to [`MAX_ATTEMPTS`] times. `what` names the records for the
    /// error.
    pub(crate) async fn write<'s, T, F, Fut>(
        &'s self,
        what: impl Fn() -> String,
        mut attempt: F,
    ) -> Result<Written<T>, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Step<'s, T>, ClusterError>>,
    {
        for n in 1..=MAX_ATTEMPTS {
            let (txn, value) = match attempt().await? {
                Step::Done(value) => return Ok(Written::unchanged(value)),
                Step::Commit(txn, value) if txn.ops.iter().all(|op| op.write.is_none()) => {
                    return Ok(Written::unchanged(value))
                }
                Step::Commit(txn, value) => (txn, value),
            };
            match self.commit_batches(&txn, &what).await? {
                Some(revision) => {
                    if n > 1 {
                        super::conflicts::committed(&what(), n);
                    }
                    return Ok(Written {
                        value,
                        revision: Some(revision),
                    });
                }
                None => {
                    super::conflicts::conflicted(&what());
                    tracing::debug!(what = %what(), attempt = n, "conflicting write; reading again");
                }
            }
        }
        Err(ClusterError::Contended {
            what: what(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl Cluster {
    /// Commits `txn`, in batches when it is too large for one store
    /// transaction. Returns the revision of the last batch, or `None` when
    /// a guard failed (batches before it stay written: each is a state the
    /// anchor's record explains, and the caller plans again from fresh
    /// reads, which completes the rest).
    async fn commit_batches(
        &self,
        txn: &Txn<'_>,
        what: &impl Fn() -> String,
    ) -> Result<Option<i64>, ClusterError> {
        let batches = txn.batches()?;
        let mut anchor = txn.anchor.map(|i| txn.ops[i].guard.clone());
        let mut last = None;
        for (b, range) in batches.iter().enumerate() {
            let ops = &txn.ops[range.clone()];
            let mut guards: Vec<Guard> = ops.iter().map(|op| op.guard.clone()).collect();
            let writes: Vec<Write> = ops.iter().filter_map(|op| op.write.clone()).collect();
            let holds_anchor = txn.anchor.is_some_and(|i| range.contains(&i));
            if let (false, Some(a)) = (holds_anchor, &anchor) {
                guards.push(a.clone());
            }
            match self.commit_fenced(&guards, &writes).await? {
                Committed::Yes(revision) => {
                    let anchor_written = txn
                        .anchor
                        .is_some_and(|i| holds_anchor && txn.ops[i].write.is_some());
                    if let (true, Some(a)) = (anchor_written, anchor.as_mut()) {
                        a.mod_revision = revision;
                    }
                    if batches.len() > 1 {
                        tracing::debug!(what = %what(), batch = b + 1, batches = batches.len(), writes = writes.len(), revision, "batch written");
                    }
                    last = Some(revision);
                }
                Committed::Conflict if b > 0 => {
                    tracing::info!(what = %what(), batch = b + 1, batches = batches.len(), "write interrupted by a concurrent change; planning the rest again");
                    return Ok(None);
                }
                Committed::Conflict => return Ok(None),
            }
        }
        Ok(last)
    }
}

impl Cluster {
    /// Rewrites one record through [`Cluster::write`]: `change` maps the
    /// record as read to its new value, or to `None` to leave it; a record
    /// that does not exist is left alone. Returns the new value once
    /// written. `what` names the kind of record for errors.
    pub(crate) async fn update<T>(
        &self,
        kind: Kind,
        what: &str,
        name: &str,
        change: impl Fn(&T) -> Option<T> + Sync,
    ) -> Result<Option<T>, ClusterError>
    where
        T: Serialize + DeserializeOwned + Send,
    {
        let change = &change;
        let done = self
            .write(
                || format!("{what} {name}"),
                move || async move {
                    let Some(current) = self.store.get::<T>(kind, name).await? else {
                        return Ok(Step::Done(None));
                    };
                    let Some(new) = change(&current.value) else {
                        return Ok(Step::Done(None));
                    };
                    let mut txn = self.txn();
                    txn.update(kind, name, current.mod_revision, &new)?;
                    Ok(Step::Commit(txn, Some(new)))
                },
            )
            .await?;
        Ok(done.value)
    }
}

impl<T> Written<T> {
    fn unchanged(value: T) -> Written<T> {
        Written {
            value,
            revision: None,
        }
    }
}
