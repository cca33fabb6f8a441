//! The one way the scheduler writes to the store: a guarded transaction,
//! built from what was read and tried again on fresh reads when someone
//! else wrote first.
//!
//! Every record a write depends on is guarded by the revision it was read
//! at (0: it must not exist), so two schedulers can never both win a race,
//! and a write never undoes one it did not see.

use std::future::Future;

use drover_store::client::encode;
use drover_store::{Committed, Guard, Kind, Store, Write};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Cluster, ClusterError};

/// Attempts at a write before giving up with [`ClusterError::Contended`].
pub const MAX_ATTEMPTS: u32 = 8;

/// A transaction being built: the guards of what was read and the writes
/// of what changes. There is no unguarded write.
pub struct Txn<'s> {
    store: &'s Store,
    guards: Vec<Guard>,
    writes: Vec<Write>,
}

impl Txn<'_> {
    /// Requires the record to be unchanged since it was read at
    /// `mod_revision` (0: still absent), without writing it.
    pub fn expect(&mut self, kind: Kind, name: &str, mod_revision: i64) {
        self.guards.push(Guard {
            kind,
            name: name.to_string(),
            mod_revision,
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
        self.expect(kind, name, mod_revision);
        self.writes.push(Write::Put {
            kind,
            name: name.to_string(),
            value,
        });
        Ok(())
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
            guards: Vec::new(),
            writes: Vec::new(),
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
                Step::Commit(txn, value) if txn.writes.is_empty() => {
                    return Ok(Written::unchanged(value))
                }
                Step::Commit(txn, value) => (txn, value),
            };
            match self.store.commit(&txn.guards, &txn.writes).await? {
                Committed::Yes(revision) => {
                    return Ok(Written {
                        value,
                        revision: Some(revision),
                    })
                }
                Committed::Conflict => {
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
