//! The DNS server's Prometheus metrics: queries by type and response code,
//! answer latency, and per server (`dns`: the host's or `drover dns`;
//! `node`: an agent's, on its bridge) the index size, the store revision
//! it reflects and whether its watch is connected.
//!
//! Watch lag is read as revisions: the store's revision
//! (`drover_store_revision` in `drover dev`, etcd's
//! `etcd_debugging_mvcc_current_revision`) minus
//! `drover_dns_index_revision`.

use std::sync::LazyLock;
use std::time::Instant;

use drover_metrics::prometheus::{Histogram, IntCounterVec, IntGaugeVec};
use drover_metrics::{MetricsError, FAST_BUCKETS};
use hickory_server::proto::op::ResponseCode;
use hickory_server::server::Request;

use crate::index::SharedIndex;
use crate::watch::WatchStatus;

struct Metrics {
    queries: IntCounterVec,
    seconds: Histogram,
    records: IntGaugeVec,
    revision: IntGaugeVec,
    connected: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    queries: drover_metrics::counter_vec(
        "drover_dns_queries_total",
        "DNS queries answered, by question type and response code.",
        &["type", "rcode"],
    ),
    seconds: drover_metrics::histogram(
        "drover_dns_query_duration_seconds",
        "Time to answer a DNS request, forwarded ones included (up to the response being encoded).",
        FAST_BUCKETS,
    ),
    records: drover_metrics::gauge_vec(
        "drover_dns_index_records",
        "Service endpoints in the DNS server's in-memory index.",
        &["server"],
    ),
    revision: drover_metrics::gauge_vec(
        "drover_dns_index_revision",
        "Store revision the DNS server's index reflects (watch lag: the store's revision minus this).",
        &["server"],
    ),
    connected: drover_metrics::gauge_vec(
        "drover_dns_watch_connected",
        "1 while the DNS server's watch of the records is established.",
        &["server"],
    ),
}
});

/// Question types counted by name; the rest count as `other`.
const TYPES: &[&str] = &[
    "A", "AAAA", "SRV", "PTR", "SOA", "NS", "TXT", "CNAME", "MX", "ANY", "HTTPS", "SVCB",
];

/// Registers the DNS metrics (once per process, whatever the number of
/// servers in it).
pub fn register(registry: &drover_metrics::prometheus::Registry) -> Result<(), MetricsError> {
    let m = &*METRICS;
    drover_metrics::register(registry, m.queries.clone())?;
    drover_metrics::register(registry, m.seconds.clone())?;
    drover_metrics::register(registry, m.records.clone())?;
    drover_metrics::register(registry, m.revision.clone())?;
    drover_metrics::register(registry, m.connected.clone())
}

/// `request` was answered with `rcode`; it arrived at `started`.
pub(crate) fn answered(request: &Request, rcode: ResponseCode, started: Instant) {
    let qtype = request
        .queries
        .queries()
        .first()
        .map(|q| q.original().query_type().to_string());
    let m = &*METRICS;
    m.queries
        .with_label_values(&[type_label(qtype.as_deref()), rcode_label(rcode)])
        .inc();
    m.seconds.observe(started.elapsed().as_secs_f64());
}

fn type_label(qtype: Option<&str>) -> &'static str {
    match qtype {
        None => "none",
        Some(t) => TYPES.iter().find(|k| **k == t).copied().unwrap_or("other"),
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

/// Reads one server's index size and revision (and its watch's state,
/// when it watches the store itself) at scrape time.
#[derive(Debug, Clone)]
pub struct IndexSampler {
    server: &'static str,
    index: SharedIndex,
    watch: Option<WatchStatus>,
}

impl IndexSampler {
    /// The sampler of `index`, labelled `server` (`dns` or `node`), fed by
    /// a watch whose status is `watch` (none for an index the scheduler
    /// relays records into).
    pub fn new(server: &'static str, index: SharedIndex, watch: Option<WatchStatus>) -> Self {
        IndexSampler {
            server,
            index,
            watch,
        }
    }
}

#[async_trait::async_trait]
impl drover_metrics::Sampler for IndexSampler {
    async fn sample(&self) {
        let (len, revision) = self.index.read(|i| (i.len(), i.revision()));
        let m = &*METRICS;
        m.records
            .with_label_values(&[self.server])
            .set(i64::try_from(len).unwrap_or(i64::MAX));
        m.revision.with_label_values(&[self.server]).set(revision);
        if let Some(w) = &self.watch {
            m.connected
                .with_label_values(&[self.server])
                .set(i64::from(w.is_connected()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_in_a_fixed_set() {
        assert_eq!(type_label(Some("SRV")), "SRV");
        assert_eq!(type_label(Some("TYPE65280")), "other");
        assert_eq!(type_label(None), "none");
        assert_eq!(rcode_label(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_label(ResponseCode::Unknown(3999)), "other");
    }
}
