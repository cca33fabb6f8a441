//! The agent's event counters that the executor counts where they happen
//! (task restarts, task start latency); [`crate::metrics`] registers them.
//! A leaf: the executor need not know the exporter.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use drover_metrics::prometheus::{Histogram, IntCounter};
use drover_metrics::SLOW_BUCKETS;

/// `drover_agent_task_restarts_total`.
pub(crate) static RESTARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    drover_metrics::counter(
        "drover_agent_task_restarts_total",
        "Tasks the agent started again after they exited.",
    )
});

/// `drover_agent_task_start_duration_seconds`.
pub(crate) static START_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    drover_metrics::histogram(
        "drover_agent_task_start_duration_seconds",
        "Time from asking the runtime to start a task to its supervisor reporting it running (or failed).",
        SLOW_BUCKETS,
    )
});

/// A task was started again.
pub(crate) fn restarted() {
    RESTARTS.inc();
}

/// Awaits `start` (a task start) and records how long it took.
pub(crate) async fn timed_start<F: Future>(start: F) -> F::Output {
    let started = Instant::now();
    let out = start.await;
    START_SECONDS.observe(started.elapsed().as_secs_f64());
    out
}
