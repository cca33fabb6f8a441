//! The one place an allocation's status is derived from its tasks, and the
//! reports built from it: what [`super::Allocs::poll`] sends when it
//! changes and what `Register` says of the tasks found on disk.

use std::collections::BTreeMap;

use crate::assignment::{AllocReport, AllocStatus, TaskReport, TaskStatus};
use crate::runtime::TaskState;

use super::state::Track;

/// The status of an allocation whose tasks are `tasks`; `stopping`: the
/// scheduler asked for its stop (a stopped allocation is complete however
/// its tasks ended, unless one failed before).
///
/// - failed: a task failed (could not start, or is beyond supervision);
/// - complete or failed, once every task ended and none waits for a
///   restart: complete when all exited with 0 or it was stopped;
/// - running: a task runs or waits for a restart;
/// - pending otherwise (no task yet, or all still starting).
pub fn derive(tasks: &BTreeMap<String, Track>, stopping: bool) -> AllocStatus {
    if tasks
        .values()
        .any(|t| matches!(t.state, TaskState::Failed { .. }))
    {
        return AllocStatus::Failed;
    }
    if finished(tasks) {
        let clean = tasks.values().all(|t| {
            matches!(
                t.state,
                TaskState::Exited {
                    exit_code: Some(0),
                    ..
                }
            )
        });
        return if clean || stopping {
            AllocStatus::Complete
        } else {
            AllocStatus::Failed
        };
    }
    if tasks
        .values()
        .any(|t| matches!(t.state, TaskState::Running { .. }) || t.restart_at.is_some())
    {
        AllocStatus::Running
    } else {
        AllocStatus::Pending
    }
}

/// Every task has ended and none waits for a restart: the status is final.
pub fn finished(tasks: &BTreeMap<String, Track>) -> bool {
    !tasks.is_empty()
        && tasks
            .values()
            .all(|t| t.state.is_terminal() && t.restart_at.is_none())
}

/// The report of one task.
pub fn task_report(name: &str, t: &Track) -> TaskReport {
    let mut out = TaskReport {
        name: name.to_string(),
        status: TaskStatus::Pending,
        pid: 0,
        exit_code: None,
        signal: None,
        message: String::new(),
        restarts: t.restarts,
        image_digest: t.image.clone().unwrap_or_default(),
    };
    match &t.state {
        TaskState::Pending => {}
        TaskState::Running { pid, .. } => {
            out.status = TaskStatus::Running;
            out.pid = *pid;
        }
        TaskState::Exited {
            exit_code,
            signal,
            message,
            oom_killed,
            ..
        } => {
            out.status = if t.restart_at.is_some() {
                TaskStatus::Restarting
            } else {
                TaskStatus::Exited
            };
            out.exit_code = *exit_code;
            out.signal = *signal;
            // The supervisor's message says so already; make sure an OOM
            // kill is visible even in a record written by an older one.
            out.message = if *oom_killed && !message.contains("OOM") {
                format!("{message} (killed by the OOM killer)")
            } else {
                message.clone()
            };
        }
        TaskState::Failed { message } => {
            out.status = TaskStatus::Failed;
            out.message = message.clone();
        }
    }
    out
}

/// The report of an allocation with `tasks`.
pub fn report(
    alloc_id: &str,
    tasks: &BTreeMap<String, Track>,
    stopping: bool,
    ip: Option<std::net::Ipv4Addr>,
) -> AllocReport {
    AllocReport {
        alloc_id: alloc_id.to_string(),
        status: derive(tasks, stopping),
        tasks: tasks.iter().map(|(n, t)| task_report(n, t)).collect(),
        ip,
        checks: Vec::new(),
        events: Vec::new(),
    }
}
