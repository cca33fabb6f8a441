//! Conflicting writes, counted: every attempt of a guarded write
//! (`Cluster::write`) whose compare failed because another writer got
//! there first, by the kind of record written (`node`, `job`, ...: the
//! first word of the write's description). A high count is contention
//! (two schedulers unfenced, or many agents registering at once); a write
//! that runs out of attempts fails with `ClusterError::Contended`.
//!
//! Exported as `drover_scheduler_write_conflicts_total{record}` and read by
//! tests through [`write_conflicts`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;

use drover_metrics::prometheus::IntCounterVec;

/// The counter, by record kind.
pub(crate) static CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    drover_metrics::counter_vec(
        "drover_scheduler_write_conflicts_total",
        "Store writes tried again because another writer changed a record they compare (by record kind).",
        &["record"],
    )
});

/// The record kinds the counter is labelled with.
pub const RECORDS: [&str; 6] = ["node", "job", "deployment", "alloc", "periodic", "other"];

/// The label of a write described as `what` (`node n03`, `job "web"`).
fn record_of(what: &str) -> &'static str {
    let first = what.split_whitespace().next().unwrap_or("");
    let first = if first == "the" {
        what.split_whitespace().nth(1).unwrap_or("")
    } else {
        first
    };
    RECORDS
        .iter()
        .copied()
        .find(|r| *r == first)
        .unwrap_or("other")
}

/// A write described as `what` lost a race and is tried again.
pub(crate) fn conflicted(what: &str) {
    CONFLICTS.with_label_values(&[record_of(what)]).inc();
}

/// The most attempts one write of each kind (in [`RECORDS`] order) took.
static MOST: [AtomicU32; RECORDS.len()] = [const { AtomicU32::new(0) }; RECORDS.len()];

/// A write described as `what` committed at its attempt `n` (> 1: the
/// caller leaves out first attempts, the common case).
pub(crate) fn committed(what: &str, n: u32) {
    let record = record_of(what);
    if let Some(i) = RECORDS.iter().position(|r| *r == record) {
        MOST[i].fetch_max(n, Ordering::Relaxed);
    }
}

/// The most attempts one write of kind `record` took to commit in this
/// process so far; 0 when each committed at its first. At most
/// `MAX_ATTEMPTS`.
pub fn most_attempts(record: &str) -> u32 {
    RECORDS
        .iter()
        .position(|r| *r == record)
        .map_or(0, |i| MOST[i].load(Ordering::Relaxed))
}

/// Conflicting write attempts of records of kind `record` (one of
/// [`RECORDS`]) counted in this process so far, every `Cluster` together.
pub fn write_conflicts(record: &str) -> u64 {
    CONFLICTS.with_label_values(&[record]).get()
}

#[cfg(test)]
mod tests {
    use super::record_of;

    #[test]
    fn writes_are_labelled_by_their_record_kind() {
        assert_eq!(record_of("node n03"), "node");
        assert_eq!(record_of("job \"web\""), "job");
        assert_eq!(record_of("the deployment of job \"web\""), "deployment");
        assert_eq!(record_of("something else"), "other");
    }
}
