//! Prometheus metrics for Drover's long-running roles.
//!
//! Each library crate (scheduler, agent, DNS, store) keeps its own
//! `metrics` module: the counters and histograms its code bumps where
//! things happen, and [`Sampler`]s that read state (allocations by status,
//! cgroup usage, index size) when Prometheus scrapes. The binary builds
//! one [`Exporter`] per process, registers the roles that process runs
//! into it (`drover dev` all of them, so one endpoint serves the lot) and
//! serves it over HTTP with [`serve`].
//!
//! Why the classic text format (`text/plain; version=0.0.4`) and the
//! `prometheus` crate: every Prometheus version scrapes it, and Debian's
//! `promtool check metrics` (2.42) parses only it; OpenMetrics output
//! (`# EOF`, counters declared without `_total`) fails that check.
//!
//! Event counters are process-wide (`static`s in each crate): a process
//! runs each role once, and a counter a test reads is read as a delta.

#![forbid(unsafe_code)]

use std::sync::Arc;

pub use prometheus;
use prometheus::core::Collector;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};

mod serve;

pub use serve::{serve, ServeError};

/// Latency buckets (seconds) for work that answers from memory: a DNS
/// query, a gRPC request to the embedded store (25 µs to 1 s).
pub const FAST_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Latency buckets (seconds) for work that touches a disk, the network or
/// a process start: placements, store round trips, fsync, task starts
/// (0.5 ms to 10 s).
pub const SLOW_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What went wrong building or rendering metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be registered (a name registered twice, or an
    /// invalid name).
    #[error("cannot register metric {name}: {source}")]
    Register {
        /// The metric's name.
        name: String,
        /// What the registry said.
        #[source]
        source: prometheus::Error,
    },
    /// The text encoding failed.
    #[error("cannot encode the metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// Reads state into gauges when Prometheus scrapes (a count of
/// allocations by status, a cgroup's memory), so that what is served is
/// as fresh as the scrape and no loop polls between scrapes.
#[async_trait::async_trait]
pub trait Sampler: Send + Sync {
    /// Brings this sampler's gauges up to date. Failures are logged and
    /// leave the gauges as they were (or cleared, when stale values would
    /// mislead).
    async fn sample(&self);
}

/// One process's metrics: the registry the roles register into and the
/// samplers run before each scrape.
pub struct Exporter {
    registry: Registry,
    samplers: Vec<Arc<dyn Sampler>>,
    /// One scrape at a time: samplers reset and refill label sets, and a
    /// concurrent scrape must not see one half done.
    scraping: tokio::sync::Mutex<()>,
}

impl Exporter {
    /// An exporter with `drover_build_info{version}` set to 1.
    pub fn new(version: &str) -> Result<Exporter, MetricsError> {
        let exporter = Exporter {
            registry: Registry::new(),
            samplers: Vec::new(),
            scraping: tokio::sync::Mutex::new(()),
        };
        let info = gauge_vec(
            "drover_build_info",
            "The drover binary's version (always 1).",
            &["version"],
        );
        info.with_label_values(&[version]).set(1);
        exporter.register(info)?;
        Ok(exporter)
    }

    /// The registry, for roles that register several collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers `collector` (a clone shares its values).
    pub fn register<C: Collector + 'static>(&self, collector: C) -> Result<(), MetricsError> {
        register(&self.registry, collector)
    }

    /// Runs `sampler` before every scrape, in the order added.
    pub fn add_sampler(&mut self, sampler: Arc<dyn Sampler>) {
        self.samplers.push(sampler);
    }

    /// Every metric in the text exposition format, samplers run first.
    pub async fn render(&self) -> Result<String, MetricsError> {
        let _one = self.scraping.lock().await;
        for sampler in &self.samplers {
            sampler.sample().await;
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(MetricsError::Encode)?;
        // The text encoder writes only UTF-8 (names, label values and
        // help strings are Rust strings).
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Registers `collector` into `registry`, naming the metric in the error.
pub fn register<C: Collector + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<(), MetricsError> {
    let name = collector
        .desc()
        .first()
        .map_or_else(String::new, |d| d.fq_name.clone());
    registry
        .register(Box::new(collector))
        .map_err(|source| MetricsError::Register { name, source })
}

// The constructors below take the static names and help texts of each
// crate's metric definitions: an invalid one is a programming error that
// every crate's `metrics` unit test (which registers and renders them all)
// catches, hence the panics.

/// An integer counter vector; `name` ends in `_total`.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    defined(
        name,
        prometheus::IntCounterVec::new(Opts::new(name, help), labels),
    )
}

/// An integer counter; `name` ends in `_total`.
pub fn counter(name: &str, help: &str) -> prometheus::IntCounter {
    defined(name, prometheus::IntCounter::new(name, help))
}

/// A float counter vector (seconds of CPU); `name` ends in `_total`.
pub fn float_counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::CounterVec {
    defined(
        name,
        prometheus::CounterVec::new(Opts::new(name, help), labels),
    )
}

/// An integer gauge vector.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    defined(name, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// An integer gauge.
pub fn gauge(name: &str, help: &str) -> prometheus::IntGauge {
    defined(name, prometheus::IntGauge::new(name, help))
}

/// A histogram with `buckets` (seconds); `name` ends in `_seconds`.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    defined(
        name,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

/// A histogram vector with `buckets` (seconds); `name` ends in `_seconds`.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    defined(
        name,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ),
    )
}

fn defined<T>(name: &str, made: Result<T, prometheus::Error>) -> T {
    match made {
        Ok(m) => m,
        // A static definition is wrong: see the comment above.
        Err(e) => panic!("metric {name} is defined wrong: {e}"),
    }
}

/// Sets `vec{label=v}` for every `(v, n)` of `counts`, and 0 for each of
/// `all` that `counts` lacks, so that a status with nothing in it reads 0
/// rather than vanishing.
pub fn set_counts<'a>(
    vec: &IntGaugeVec,
    all: impl IntoIterator<Item = &'a str>,
    counts: &std::collections::BTreeMap<String, i64>,
) {
    vec.reset();
    for v in all {
        vec.with_label_values(&[v]).set(0);
    }
    for (v, n) in counts {
        vec.with_label_values(&[v.as_str()]).set(*n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Counting(prometheus::IntGauge);

    #[async_trait::async_trait]
    impl Sampler for Counting {
        async fn sample(&self) {
            self.0.inc();
        }
    }

    #[tokio::test]
    async fn samplers_run_before_each_render_and_names_are_checked() {
        let mut e = Exporter::new("1.2.3").unwrap();
        let g = gauge("drover_test_samples", "Samples taken.");
        e.register(g.clone()).unwrap();
        e.add_sampler(Arc::new(Counting(g)));
        let first = e.render().await.unwrap();
        assert!(first.contains("drover_test_samples 1\n"), "{first}");
        assert!(
            first.contains("drover_build_info{version=\"1.2.3\"} 1"),
            "{first}"
        );
        let second = e.render().await.unwrap();
        assert!(second.contains("drover_test_samples 2\n"), "{second}");
        let again = gauge("drover_test_samples", "Twice.");
        let err = e.register(again).unwrap_err().to_string();
        assert!(err.contains("drover_test_samples"), "{err}");
    }

    #[test]
    fn set_counts_keeps_every_known_value_at_zero() {
        let v = gauge_vec("drover_test_by_status", "By status.", &["status"]);
        let mut counts = std::collections::BTreeMap::new();
        counts.insert("running".to_string(), 2);
        set_counts(&v, ["pending", "running"], &counts);
        assert_eq!(v.with_label_values(&["pending"]).get(), 0);
        assert_eq!(v.with_label_values(&["running"]).get(), 2);
        set_counts(&v, ["pending", "running"], &Default::default());
        assert_eq!(v.with_label_values(&["running"]).get(), 0);
    }
}
