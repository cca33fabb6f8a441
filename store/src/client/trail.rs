//! Log-like kinds (the audit trail): records written under names that sort
//! in time order, and pruned from the oldest end by age and by count.
//!
//! Records are written with [`Store::put`] and read with
//! [`Store::list_prefix`]; what this module adds are the two bounds.

use etcd_client::{DeleteOptions, GetOptions};

use super::{Kind, Store, StoreError};
use crate::range::prefix_end;

impl Store {
    /// Deletes every record of `kind` whose name sorts before `bound`
    /// (for time-ordered names: every record older than the time `bound`
    /// starts with). Returns how many were deleted.
    pub async fn delete_before(&self, kind: Kind, bound: &str) -> Result<i64, StoreError> {
        let dir = self.dir(kind);
        let end = format!("{dir}{bound}");
        let mut kv = self.client.kv_client();
        let resp = kv
            .delete(
                dir.as_bytes(),
                Some(DeleteOptions::new().with_range(end.as_bytes())),
            )
            .await
            .map_err(|source| StoreError::Etcd {
                op: "delete range",
                key: end.clone(),
                source,
            })?;
        Ok(resp.deleted())
    }

    /// How many records of `kind` the store holds.
    pub async fn count(&self, kind: Kind) -> Result<i64, StoreError> {
        let dir = self.dir(kind);
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(
                dir.as_bytes(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(dir.as_bytes()))
                        .with_count_only(),
                ),
            )
            .await
            .map_err(|source| StoreError::Etcd {
                op: "count",
                key: dir.clone(),
                source,
            })?;
        Ok(resp.count())
    }

    /// Deletes the first records of `kind` in name order (for time-ordered
    /// names: the oldest) until at most `keep` remain. Returns how many
    /// were deleted. Records written meanwhile by another writer may leave
    /// a few more than `keep`, never fewer.
    pub async fn keep_last(&self, kind: Kind, keep: i64) -> Result<i64, StoreError> {
        let excess = self.count(kind).await? - keep.max(0);
        if excess <= 0 {
            return Ok(0);
        }
        let dir = self.dir(kind);
        let mut kv = self.client.kv_client();
        let oldest = kv
            .get(
                dir.as_bytes(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(dir.as_bytes()))
                        .with_keys_only()
                        .with_limit(excess),
                ),
            )
            .await
            .map_err(|source| StoreError::Etcd {
                op: "range",
                key: dir.clone(),
                source,
            })?;
        let Some(last) = oldest.kvs().last() else {
            return Ok(0);
        };
        // The bound is exclusive: the key just after the last one to go.
        let mut end = last.key().to_vec();
        end.push(0);
        let resp = kv
            .delete(dir.as_bytes(), Some(DeleteOptions::new().with_range(end)))
            .await
            .map_err(|source| StoreError::Etcd {
                op: "delete range",
                key: dir.clone(),
                source,
            })?;
        Ok(resp.deleted())
    }
}
