//! Raw keys outside Drover's prefix, for service discovery: the SkyDNS
//! layout under [`SKYDNS_PREFIX`], which DNS readers (Drover's, CoreDNS's)
//! expect at that absolute place whatever Drover's own prefix is.
//!
//! Only keys under [`SKYDNS_PREFIX`] can be read or written here, so a
//! mistake in a caller cannot touch Drover's records or anyone else's.
//! Values are bytes (the caller encodes the SkyDNS JSON); a put carries
//! the lease it is bound to. [`Store::apply_skydns`] writes at most
//! [`MAX_TXN_OPS`] operations in one transaction: the caller batches.

use etcd_client::{PutOptions, Txn, TxnOp};

use super::{lease_error, Store, StoreError};

/// Where the SkyDNS layout lives.
pub const SKYDNS_PREFIX: &str = "/skydns/";

/// Most operations in one transaction: etcd's default `--max-txn-ops`, and
/// the embedded server's limit.
pub const MAX_TXN_OPS: usize = 128;

/// Largest request etcd accepts, in bytes: its default
/// `--max-request-bytes` (1.5 MiB), and the embedded server's limit. A
/// transaction's keys and values must fit in it.
pub const MAX_REQUEST_BYTES: usize = 1_572_864;

/// Largest answer the store client reads: a listing of every allocation
/// (10,000 of them are about 5 MB as JSON) is over gRPC's default of 4 MiB,
/// which would fail the read with "decoded message length too large".
/// etcd itself sends answers of any size by default
/// (`--max-send-bytes` is unset).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A key and value as stored, with the lease it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawKv {
    /// The absolute key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The lease the key is bound to; 0 for none.
    pub lease: i64,
    /// Revision of the key's last write.
    pub mod_revision: i64,
}

/// One write of [`Store::apply_skydns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOp {
    /// Put `value` at `key`, bound to `lease` (0: to none).
    Put {
        /// The absolute key.
        key: String,
        /// The value's bytes.
        value: Vec<u8>,
        /// The lease the key is bound to.
        lease: i64,
    },
    /// Delete `key`.
    Delete {
        /// The absolute key.
        key: String,
    },
}

impl RawOp {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            RawOp::Put { key, .. } | RawOp::Delete { key } => key,
        }
    }
}

/// Refuses a key outside [`SKYDNS_PREFIX`].
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.starts_with(SKYDNS_PREFIX) {
        Ok(())
    } else {
        Err(StoreError::OutsideSkydns {
            key: key.to_owned(),
        })
    }
}

impl Store {
    /// Every key under `prefix` (which must lie under [`SKYDNS_PREFIX`]),
    /// ordered by key, as of one revision (read in pages).
    pub async fn list_skydns(&self, prefix: &str) -> Result<Vec<RawKv>, StoreError> {
        check_key(prefix)?;
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let (kvs, _) = super::range_prefix(&mut kv, prefix.as_bytes(), self.page)
            .await
            .map_err(|source| StoreError::Etcd {
                op: "range",
                key: prefix.to_owned(),
                source,
            })?;
        Ok(kvs
            .iter()
            .map(|kv| RawKv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                lease: kv.lease(),
                mod_revision: kv.mod_revision(),
            })
            .collect())
    }

    /// Applies `ops` (every key under [`SKYDNS_PREFIX`], at most
    /// [`MAX_TXN_OPS`]) in one unconditional transaction; returns the
    /// store revision. A put bound to a lease that is gone fails the whole
    /// transaction with [`StoreError::LeaseNotFound`] naming the first
    /// leased key.
    pub async fn apply_skydns(&self, ops: &[RawOp]) -> Result<i64, StoreError> {
        self.apply_skydns_when(Vec::new(), ops)
            .await
            .map(|r| r.unwrap_or(0))
    }

    /// [`Store::apply_skydns`] only if every compare holds; `None` when one
    /// does not (nothing written).
    pub(crate) async fn apply_skydns_when(
        &self,
        compares: Vec<etcd_client::Compare>,
        ops: &[RawOp],
    ) -> Result<Option<i64>, StoreError> {
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: ops.len(),
                max: MAX_TXN_OPS,
            });
        }
        let mut txn_ops = Vec::with_capacity(ops.len());
        let mut leased = None;
        for op in ops {
            check_key(op.key())?;
            txn_ops.push(match op {
                RawOp::Put { key, value, lease } => {
                    let opts = (*lease != 0).then(|| {
                        leased.get_or_insert((*lease, key.as_str()));
                        PutOptions::new().with_lease(*lease)
                    });
                    TxnOp::put(key.as_bytes(), value.clone(), opts)
                }
                RawOp::Delete { key } => TxnOp::delete(key.as_bytes(), None),
            });
        }
        if txn_ops.is_empty() {
            return Ok(Some(0));
        }
        let kv = self.client.kv_client();
        let txn = Txn::new().when(compares).and_then(txn_ops);
        let resp = crate::retry::unsent("txn", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|source| match leased {
            Some((lease, key)) => lease_error(source, lease, Some(key), "txn"),
            None => StoreError::Etcd {
                op: "txn",
                key: SKYDNS_PREFIX.to_owned(),
                source,
            },
        })?;
        if !resp.succeeded() {
            return Ok(None);
        }
        Ok(Some(resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Renews `lease` once (one keep-alive, answered before this returns);
    /// [`StoreError::LeaseNotFound`] when the lease is gone.
    pub async fn renew(&self, lease: i64) -> Result<(), StoreError> {
        let mut lc = self.client.lease_client();
        match lc.keep_alive(lease).await {
            Ok(_) => Ok(()),
            // etcd answered TTL 0: the lease expired or was revoked.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                Err(StoreError::LeaseNotFound { lease, key: None })
            }
            Err(source) => Err(lease_error(source, lease, None, "lease keep-alive")),
        }
    }
}
