//! The scheduler's event counters (placement passes), counted where they
//! happen; [`crate::metrics`] registers them and reads the cluster's
//! gauges. A leaf: the modules that count need not know the exporter.

use std::sync::LazyLock;
use std::time::Instant;

use drover_metrics::prometheus::{Histogram, IntCounterVec};
use drover_metrics::SLOW_BUCKETS;

use crate::placement::Plan;

pub(crate) struct Metrics {
    pub(crate) placements: IntCounterVec,
    pub(crate) placement_seconds: Histogram,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    placements: drover_metrics::counter_vec(
        "drover_scheduler_placements_total",
        "Instances the placement passes placed (result=placed) or found no node for (result=unplaced).",
        &["result"],
    ),
    placement_seconds: drover_metrics::histogram(
        "drover_scheduler_placement_duration_seconds",
        "Time of one placement pass over a job (reading the cluster excluded).",
        SLOW_BUCKETS,
    ),
}
});

/// A placement pass that started at `started` produced `plan`.
pub(crate) fn planned(plan: &Plan, started: Instant) {
    let m = &*METRICS;
    m.placement_seconds.observe(started.elapsed().as_secs_f64());
    let unplaced: u64 = plan.unplaced.iter().map(|u| u64::from(u.count)).sum();
    m.placements
        .with_label_values(&["placed"])
        .inc_by(plan.place.len() as u64);
    m.placements
        .with_label_values(&["unplaced"])
        .inc_by(unplaced);
}
