//! The store's Prometheus metrics: the client's round trips to etcd (the
//! scheduler's and the DNS server's store latency and errors) and the
//! embedded server's requests, fsync latency, log size, revision and
//! watchers.
//!
//! Names: `drover_store_client_*` for the client side of any etcd,
//! `drover_store_*` for the embedded server of `drover dev` (registered
//! and sampled by `crate::embedded::metrics`).

use std::sync::LazyLock;
use std::time::Instant;

use drover_metrics::prometheus::{Histogram, HistogramVec, IntCounterVec};
use drover_metrics::{MetricsError, SLOW_BUCKETS};

pub(crate) struct Metrics {
    client_seconds: HistogramVec,
    client_errors: IntCounterVec,
    // Read by the embedded server's metrics only.
    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    pub(crate) requests: IntCounterVec,
    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    pub(crate) fsync_seconds: Histogram,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    client_seconds: drover_metrics::histogram_vec(
        "drover_store_client_request_duration_seconds",
        "Time of one request to etcd (or the embedded store), retries of unsent ones included, by operation.",
        &["op"],
        SLOW_BUCKETS,
    ),
    client_errors: drover_metrics::counter_vec(
        "drover_store_client_errors_total",
        "Requests to etcd (or the embedded store) that failed, by operation.",
        &["op"],
    ),
    requests: drover_metrics::counter_vec(
        "drover_store_requests_total",
        "gRPC requests the embedded store received, by method (watch and lease keep-alive streams count once).",
        &["method"],
    ),
    fsync_seconds: drover_metrics::histogram(
        "drover_store_fsync_duration_seconds",
        "Time of one fdatasync of the embedded store's log.",
        SLOW_BUCKETS,
    ),
}
});

/// The operations the client names (`crate::retry::unsent`'s `what`).
const OPS: [&str; 6] = ["get", "put", "txn", "range", "lease grant", "lease revoke"];

/// Registers the client-side metrics (for a process that talks to a store).
pub fn register_client(
    registry: &drover_metrics::prometheus::Registry,
) -> Result<(), MetricsError> {
    let m = &*METRICS;
    // Every operation's error count reads 0 from the start, not absent.
    for op in OPS {
        m.client_errors.with_label_values(&[op]);
    }
    drover_metrics::register(registry, m.client_seconds.clone())?;
    drover_metrics::register(registry, m.client_errors.clone())
}

/// A request `op` to etcd took from `started` to now and succeeded or not.
pub(crate) fn client_request(op: &'static str, started: Instant, ok: bool) {
    let m = &*METRICS;
    m.client_seconds
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
    if !ok {
        m.client_errors.with_label_values(&[op]).inc();
    }
}
