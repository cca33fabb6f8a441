//! Typed access to Drover's state in etcd, through `etcd-client` only.
//!
//! Layout under the prefix (default `/drover/`):
//!
//! | key                       | value                        |
//! |---------------------------|------------------------------|
//! | `<prefix>jobs/<name>`     | JSON job record              |
//! | `<prefix>allocs/<id>`     | JSON allocation record       |
//! | `<prefix>nodes/<id>`      | JSON node record             |
//!
//! Values are JSON (serde), one object per key; the record types belong to
//! the scheduler. Writes that depend on what was read go through
//! [`Store::commit`], a transaction that compares each guarded key's
//! `mod_revision` with the one read, so two writers can never both win.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/drover/";

/// The kinds of record Drover stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `jobs/<name>`
    Job,
    /// `allocs/<id>`
    Alloc,
    /// `nodes/<id>`
    Node,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Job => "jobs/",
            Kind::Alloc => "allocs/",
            Kind::Node => "nodes/",
        }
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Could not reach etcd at all.
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd request failed.
    #[error("etcd {op} on {key:?} failed: {source}")]
    Etcd {
        /// What was attempted (`get`, `put`, `txn`, `watch`...).
        op: &'static str,
        /// The key or prefix involved.
        key: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// A stored value is not the JSON Drover expects.
    #[error("value at {key:?} is not valid JSON for this record: {source}")]
    Decode {
        /// The key whose value failed to decode.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded.
    #[error("cannot encode value for {key:?}: {source}")]
    Encode {
        /// The key being written.
        key: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A decoded value with the revisions etcd holds for it.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record's name (key without prefix and kind directory).
    pub name: String,
    /// The decoded record.
    pub value: T,
    /// Revision of the last write to the key: what [`Guard`]s compare.
    pub mod_revision: i64,
}

/// A consistent listing of one kind and the store revision it was read at.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    /// Records, ordered by name.
    pub items: Vec<Versioned<T>>,
    /// Store revision of the read: a watch from `revision + 1` misses nothing.
    pub revision: i64,
}

/// One write in a [`Store::commit`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Put an encoded record.
    Put {
        /// Kind of record.
        kind: Kind,
        /// Record name.
        name: String,
        /// Encoded value (see [`encode`]).
        value: Vec<u8>,
    },
    /// Delete a record.
    Delete {
        /// Kind of record.
        kind: Kind,
        /// Record name.
        name: String,
    },
}

/// A condition a [`Store::commit`] checks before writing.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Kind of record.
    pub kind: Kind,
    /// Record name.
    pub name: String,
    /// Expected `mod_revision`; 0 means the key must not exist.
    pub mod_revision: i64,
}

/// Outcome of a guarded commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written at this store revision.
    Yes(i64),
    /// A guard failed: someone else wrote first; re-read and retry.
    Conflict,
}

/// A change seen by [`Store::watch`].
#[derive(Debug, Clone)]
pub struct Change {
    /// Record name.
    pub name: String,
    /// New value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Store revision of the change.
    pub revision: i64,
}

/// Encodes a record as the JSON Drover stores.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

/// Drover's view of etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// Connects to etcd (real or embedded). `prefix` should end in '/'.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Store, StoreError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|source| StoreError::Connect {
                endpoints: endpoints.join(","),
                source,
            })?;
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Store { client, prefix })
    }

    /// The full etcd key of a record.
    pub fn key(&self, kind: Kind, name: &str) -> String {
        format!("{}{}{}", self.prefix, kind.dir(), name)
    }

    fn dir(&self, kind: Kind) -> String {
        format!("{}{}", self.prefix, kind.dir())
    }

    /// Reads one record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let key = self.key(kind, name);
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(key.as_bytes(), None)
            .await
            .map_err(|source| StoreError::Etcd {
                op: "get",
                key: key.clone(),
                source,
            })?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                name: name.to_string(),
                value: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
            })),
        }
    }

    /// Lists every record of a kind, in one consistent read.
    pub async fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Listing<T>, StoreError> {
        let dir = self.dir(kind);
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(dir.as_bytes(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|source| StoreError::Etcd {
                op: "range",
                key: dir.clone(),
                source,
            })?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut items = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let name = key.strip_prefix(&dir).unwrap_or(&key).to_string();
            items.push(Versioned {
                name,
                value: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
            });
        }
        Ok(Listing { items, revision })
    }

    /// Writes one record unconditionally; returns the store revision.
    pub async fn put<T: Serialize>(
        &self,
        kind: Kind,
        name: &str,
        value: &T,
    ) -> Result<i64, StoreError> {
        let key = self.key(kind, name);
        let bytes = encode(&key, value)?;
        let mut kv = self.client.kv_client();
        let resp = kv
            .put(key.as_bytes(), bytes, None)
            .await
            .map_err(|source| StoreError::Etcd {
                op: "put",
                key: key.clone(),
                source,
            })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Applies `writes` atomically if every guard holds.
    pub async fn commit(
        &self,
        guards: &[Guard],
        writes: &[Write],
    ) -> Result<Committed, StoreError> {
        let compares: Vec<Compare> = guards
            .iter()
            .map(|g| {
                Compare::mod_revision(
                    self.key(g.kind, &g.name).into_bytes(),
                    CompareOp::Equal,
                    g.mod_revision,
                )
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { kind, name, value } => {
                    TxnOp::put(self.key(*kind, name).into_bytes(), value.clone(), None)
                }
                Write::Delete { kind, name } => {
                    TxnOp::delete(self.key(*kind, name).into_bytes(), None)
                }
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let mut kv = self.client.kv_client();
        let resp = kv.txn(txn).await.map_err(|source| StoreError::Etcd {
            op: "txn",
            key: self.prefix.clone(),
            source,
        })?;
        if resp.succeeded() {
            Ok(Committed::Yes(
                resp.header().map(|h| h.revision()).unwrap_or(0),
            ))
        } else {
            Ok(Committed::Conflict)
        }
    }

    /// Streams changes to every record of `kind` from `from_revision` on
    /// (0: from now). The receiver ends when the watch fails; the caller
    /// re-lists and watches again.
    pub async fn watch(
        &self,
        kind: Kind,
        from_revision: i64,
    ) -> Result<mpsc::Receiver<Change>, StoreError> {
        let dir = self.dir(kind);
        let mut opts = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let mut wc = self.client.watch_client();
        let mut stream = wc
            .watch(dir.as_bytes(), Some(opts))
            .await
            .map_err(|source| StoreError::Etcd {
                op: "watch",
                key: dir.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let resp = match msg {
                    Ok(r) => r,
                    Err(error) => {
                        tracing::warn!(prefix = %dir, %error, "etcd watch ended");
                        return;
                    }
                };
                if resp.canceled() {
                    tracing::warn!(prefix = %dir, reason = resp.cancel_reason(), "etcd watch canceled");
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let name = key.strip_prefix(&dir).unwrap_or(&key).to_string();
                    let change = Change {
                        name,
                        value: match ev.event_type() {
                            EventType::Put => Some(kv.value().to_vec()),
                            EventType::Delete => None,
                        },
                        revision: kv.mod_revision(),
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
