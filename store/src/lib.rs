//! Drover's state store.
//!
//! All cluster state lives in etcd and is reached only through the
//! `etcd-client` crate ([`client`]). For `drover dev`, which must need
//! nothing installed, [`embedded`] serves the subset of the etcd v3 gRPC API
//! that Drover uses, in process, over a durable local file. [`election`]
//! elects one scheduler leader and fences the writes of deposed ones.
//! [`mirror`] keeps an in-memory copy of a key prefix current (the
//! service-discovery records, for the DNS server and the scheduler's relay).
//! [`metrics`] counts requests and times them for Prometheus.

pub mod client;
pub mod election;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod local_peer;
pub mod metrics;
pub mod mirror;
mod range;
mod retry;

pub use client::{
    Change, Committed, Guard, KeepAlive, Kind, Lease, Listing, RawKv, RawOp, Store, StoreError,
    Versioned, WatchEvent, Write,
};
