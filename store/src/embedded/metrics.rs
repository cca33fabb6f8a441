//! The embedded store's own metrics (`drover_store_*`): requests by
//! method, fsync latency, log and snapshot sizes, revision, watchers.
//! The counters live in [`crate::metrics`].

use std::task::{Context, Poll};

use drover_metrics::prometheus::{IntCounter, IntGauge, IntGaugeVec};
use drover_metrics::MetricsError;
use tonic::codegen::{http, Service};

use crate::embedded::EmbeddedHandle;
use crate::metrics::METRICS;

/// The etcd methods counted by name; any other path counts as `other`
/// (a client cannot grow the label set with made-up paths).
const METHODS: &[&str] = &[
    "KV/Range",
    "KV/Put",
    "KV/DeleteRange",
    "KV/Txn",
    "KV/Compact",
    "Watch/Watch",
    "Lease/LeaseGrant",
    "Lease/LeaseRevoke",
    "Lease/LeaseKeepAlive",
    "Lease/LeaseTimeToLive",
    "Lease/LeaseLeases",
    "Maintenance/Status",
    "Maintenance/Snapshot",
    "Maintenance/Defragment",
    "Maintenance/Alarm",
    "Maintenance/Hash",
    "Maintenance/HashKV",
    "Maintenance/MoveLeader",
    "Cluster/MemberList",
];

/// Registers the embedded server's metrics and returns the sampler
/// that reads `handle` (revision, log size, watchers) at scrape time.
pub fn register_embedded(
    registry: &drover_metrics::prometheus::Registry,
    handle: EmbeddedHandle,
) -> Result<StoreSampler, MetricsError> {
    let m = &*METRICS;
    drover_metrics::register(registry, m.requests.clone())?;
    drover_metrics::register(registry, m.fsync_seconds.clone())?;
    let s = StoreSampler {
        handle,
        bytes: drover_metrics::gauge_vec(
            "drover_store_log_bytes",
            "Size of the embedded store's files: the write-ahead log (wal) and the snapshot.",
            &["file"],
        ),
        revision: drover_metrics::gauge(
            "drover_store_revision",
            "The embedded store's highest durable revision.",
        ),
        watchers: drover_metrics::gauge(
            "drover_store_watchers",
            "Live watches over all of the embedded store's watch streams.",
        ),
        snapshots: drover_metrics::counter(
            "drover_store_snapshots_total",
            "Snapshots the embedded store installed (compacting its log) since it opened.",
        ),
    };
    drover_metrics::register(registry, s.bytes.clone())?;
    drover_metrics::register(registry, s.revision.clone())?;
    drover_metrics::register(registry, s.watchers.clone())?;
    drover_metrics::register(registry, s.snapshots.clone())?;
    Ok(s)
}

/// Reads the embedded store's revision, file sizes and watchers when
/// Prometheus scrapes.
pub struct StoreSampler {
    handle: EmbeddedHandle,
    bytes: IntGaugeVec,
    revision: IntGauge,
    watchers: IntGauge,
    snapshots: IntCounter,
}

#[async_trait::async_trait]
impl drover_metrics::Sampler for StoreSampler {
    async fn sample(&self) {
        let h = &self.handle;
        let (wal, snap) = h.disk_bytes();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.bytes.with_label_values(&["wal"]).set(gauge(wal));
        self.bytes.with_label_values(&["snapshot"]).set(gauge(snap));
        self.revision.set(h.revision());
        self.watchers.set(gauge(h.watcher_count() as u64));
        // A count kept by the store: the counter follows it.
        self.snapshots.reset();
        self.snapshots.inc_by(h.snapshots());
    }
}

pub(crate) fn fsync_took(seconds: f64) {
    METRICS.fsync_seconds.observe(seconds);
}

fn method_label(path: &str) -> &'static str {
    let method = path.strip_prefix("/etcdserverpb.").unwrap_or("");
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// A tower layer's service around the embedded server's routes that
/// counts each request by its gRPC method.
#[derive(Debug, Clone)]
pub struct CountRequests<S>(pub S);

impl<S, B> Service<http::Request<B>> for CountRequests<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        METRICS
            .requests
            .with_label_values(&[method_label(req.uri().path())])
            .inc();
        self.0.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn only_known_methods_get_their_own_label() {
        assert_eq!(method_label("/etcdserverpb.KV/Range"), "KV/Range");
        assert_eq!(method_label("/etcdserverpb.Watch/Watch"), "Watch/Watch");
        assert_eq!(method_label("/etcdserverpb.KV/Made_Up"), "other");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "other");
    }
}
