//! One check's loop: the first run after a random delay within its
//! interval (so that a node's checks, started together after a restart,
//! spread out), then one run per interval, measured from the start of the
//! previous run, give or take a small jitter. Each run waits for a permit
//! of the node-wide semaphore, is bounded by the check's timeout (the
//! probe's future is dropped, which ends what it started), and its result
//! goes into the allocation's state list; a change of status marks the
//! allocation for an immediate report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drover_model::check::{truncate_output, MAX_CHECK_OUTPUT};
use drover_model::job::CheckSpec;
use drover_model::{now_ms, CheckState};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::Verdict;
use super::{Changes, Outcome, Prober, Target};

/// Largest jitter added to or taken from an interval.
const MAX_JITTER: Duration = Duration::from_millis(250);

/// Everything one check's loop needs.
pub struct CheckRun {
    /// The service's name.
    pub service: String,
    /// The check's position in the service's list.
    pub index: usize,
    /// Its position in the allocation's state list.
    pub slot: usize,
    /// The check.
    pub spec: CheckSpec,
    /// Where it runs.
    pub target: Target,
    /// The allocation's states.
    pub states: Arc<Mutex<Vec<CheckState>>>,
    /// Where a status change is marked.
    pub changes: Arc<Changes>,
    /// What runs it.
    pub prober: Arc<dyn Prober>,
    /// The node-wide bound on probes at once.
    pub limit: Arc<Semaphore>,
    /// Ends the loop (a probe under way is dropped).
    pub cancel: CancellationToken,
}

/// The delay before the first run: uniform in `[0, interval)`.
pub fn first_delay(interval: Duration) -> Duration {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::rng().random_range(0..ms))
}

/// The time between two starts: `interval` plus or minus up to 5% of it,
/// at most [`MAX_JITTER`].
pub fn next_interval(interval: Duration) -> Duration {
    let span = (interval / 20).min(MAX_JITTER);
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(0);
    if span_ms == 0 {
        return interval;
    }
    let offset = rand::rng().random_range(0..=2 * span_ms);
    (interval + Duration::from_millis(offset)).saturating_sub(span)
}

/// Runs the check until cancelled.
pub async fn run(c: CheckRun) {
    let interval = Duration::from_millis(c.spec.interval_ms);
    let mut verdict = Verdict::new(
        c.spec.success_before_passing,
        c.spec.failures_before_critical,
    );
    let mut next = Instant::now() + first_delay(interval);
    loop {
        tokio::select! {
            () = c.cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            () = c.cancel.cancelled() => return,
            o = once(&c) => o,
        };
        let changed = verdict.record(outcome.passed);
        {
            let mut states = c.states.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = states.get_mut(c.slot) {
                s.status = verdict.status();
                s.output = truncate_output(outcome.output.trim_end(), MAX_CHECK_OUTPUT);
                s.last_unix_ms = now_ms();
            }
        }
        if let Some(status) = changed {
            tracing::info!(
                alloc_id = %c.target.alloc_id,
                service = %c.service,
                check = c.index,
                kind = %c.spec.kind,
                %status,
                // When the verdict turned, to the microsecond (the log's
                // own timestamp is formatted): where bench/dns's
                // propagation from a check passing starts its clock.
                unix_us = unix_us(),
                output = %outcome.output.trim_end(),
                "health check status changed"
            );
            c.changes.mark(&c.target.alloc_id);
        }
        next = (started + next_interval(interval)).max(Instant::now());
    }
}

/// Microseconds since the Unix epoch, 0 if the clock is before it.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One run: a permit, then the probe within the timeout.
async fn once(c: &CheckRun) -> Outcome {
    let Ok(_permit) = c.limit.acquire().await else {
        return Outcome::fail("the agent's check runner is shutting down");
    };
    let timeout = Duration::from_millis(c.spec.timeout_ms);
    match tokio::time::timeout(timeout, c.prober.probe(&c.target, &c.spec)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::fail(format!("timed out after {} ms", c.spec.timeout_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_run_comes_within_one_interval() {
        let interval = Duration::from_millis(1000);
        for _ in 0..1000 {
            assert!(first_delay(interval) < interval);
        }
        assert_eq!(first_delay(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn later_runs_keep_the_interval_within_a_small_jitter() {
        let interval = Duration::from_millis(1000);
        let (mut low, mut high) = (interval, interval);
        for _ in 0..2000 {
            let d = next_interval(interval);
            assert!(
                d >= Duration::from_millis(950) && d <= Duration::from_millis(1050),
                "{d:?}"
            );
            low = low.min(d);
            high = high.max(d);
        }
        assert!(
            low < interval && high > interval,
            "no jitter: {low:?}..{high:?}"
        );
        let long = Duration::from_secs(3600);
        let d = next_interval(long);
        assert!(d >= long - MAX_JITTER && d <= long + MAX_JITTER, "{d:?}");
    }
}
