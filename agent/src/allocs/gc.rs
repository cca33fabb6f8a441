//! Garbage collection of finished allocations' files (logs, overlay upper
//! dirs, state) once they are older than the retention period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::runtime::{Runtime, TaskState};

/// Removes the directories (logs, overlay upper dir, state) of finished
/// allocations not in `in_use` once every task of theirs ended more than
/// `keep` ago, as Nomad's client garbage-collects dead allocations:
/// `drover logs` works on a finished allocation until then. A whole
/// allocation or nothing: a task is never removed while another of its
/// allocation may still run (it would be started again). Only recorded
/// states are read, nothing is settled here. Blocking file-system work:
/// run it off the async loop. Returns the allocations removed.
pub fn collect_finished(
    runtime: &Runtime,
    in_use: &BTreeSet<String>,
    keep: Duration,
) -> BTreeSet<String> {
    let tasks = match runtime.list() {
        Ok(tasks) => tasks,
        Err(error) => {
            tracing::warn!(%error, "listing task directories for garbage collection");
            return BTreeSet::new();
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0);
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let mut by_alloc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (alloc_id, task) in tasks {
        by_alloc.entry(alloc_id).or_default().push(task);
    }
    let mut removed = BTreeSet::new();
    for (alloc_id, tasks) in by_alloc {
        if in_use.contains(&alloc_id) {
            continue;
        }
        let old_enough = tasks.iter().all(|task| {
            let ended_ms = match runtime.recorded_state(&alloc_id, task) {
                Ok(Some(TaskState::Exited {
                    finished_unix_ms, ..
                })) => finished_unix_ms,
                // No time in the record: when it was written.
                Ok(Some(TaskState::Failed { .. })) => runtime
                    .task_dir(&alloc_id, task)
                    .ok()
                    .and_then(|d| std::fs::metadata(d.join("state.json")).ok())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .unwrap_or(now),
                // Starting, running, or not recorded yet.
                _ => return false,
            };
            now.saturating_sub(ended_ms) >= keep_ms
        });
        if !old_enough {
            continue;
        }
        let mut all = true;
        for task in &tasks {
            if let Err(error) = runtime.remove(&alloc_id, task) {
                all = false;
                tracing::warn!(alloc_id = %alloc_id, task = %task, %error, "garbage-collecting a finished task");
            }
        }
        if all {
            tracing::info!(alloc_id = %alloc_id, tasks = tasks.len(), "finished allocation garbage-collected");
            removed.insert(alloc_id);
        }
    }
    removed
}
