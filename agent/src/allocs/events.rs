//! The events of an allocation's tasks (started, exited with its code or
//! signal, OOM-killed, restarting after a delay, not restarted, refused by
//! the node policy, failed to start), read off the difference between what
//! was known of its tasks at the last poll and what is known now: pure, no
//! I/O. [`super::Allocs::poll`] keeps the last view ([`Seen`]) and sends
//! the events with the allocation's report.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_model::EventType;

use crate::assignment::{JobKind, TaskEvent};
use crate::runtime::TaskState;

use super::state::{State, Track, Tracked};

/// What the last poll knew of each allocation's tasks.
#[derive(Debug, Default)]
pub struct Seen(BTreeMap<String, BTreeMap<String, Track>>);

impl Seen {
    /// The events of every tracked allocation since the last call, by
    /// allocation; remembers `state` for the next one (`now_ms`: the wall
    /// clock, for events that carry no time of their own).
    pub fn events(&mut self, state: &State, now_ms: i64) -> BTreeMap<String, Vec<TaskEvent>> {
        let mut out = BTreeMap::new();
        let mut next = BTreeMap::new();
        for (id, alloc) in &state.allocs {
            let before = self.0.remove(id).unwrap_or_default();
            let events = alloc_events(&before, alloc, now_ms);
            if !events.is_empty() {
                out.insert(id.clone(), events);
            }
            next.insert(id.clone(), alloc.tasks.clone());
        }
        self.0 = next;
        out
    }
}

/// The events of `alloc`'s tasks since they were `before`.
fn alloc_events(before: &BTreeMap<String, Track>, alloc: &Tracked, now_ms: i64) -> Vec<TaskEvent> {
    let policy = alloc.assignment.group.restart;
    let rules = Rules {
        delay: policy.delay,
        attempts: policy.attempts,
        batch: alloc.assignment.job_kind == JobKind::Batch,
        stopping: alloc.stopping,
    };
    let mut out: Vec<TaskEvent> = alloc
        .tasks
        .iter()
        .flat_map(|(name, now)| task_events(name, before.get(name), now, rules, now_ms))
        .collect();
    out.sort_by_key(|e| e.time_unix_ms);
    out
}

/// What decides which events a task's change makes.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The restart policy's pause.
    pub delay: Duration,
    /// The restart policy's attempts.
    pub attempts: u32,
    /// A batch job's task (a clean exit is its end).
    pub batch: bool,
    /// Its allocation is being stopped.
    pub stopping: bool,
}

/// Whether a start failure is the node policy's refusal: the runtime's
/// `PolicyRefused` and the allocation network's host-network check say
/// so in these words.
pub fn is_policy_refusal(message: &str) -> bool {
    message.contains("refused by the node policy") || message.contains("node's policy")
}

fn event(time_unix_ms: i64, task: &str, kind: EventType, message: String) -> TaskEvent {
    TaskEvent {
        time_unix_ms,
        task: task.to_string(),
        kind,
        message,
    }
}

/// How a task ended, for people.
fn ending(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exited with code {c}"),
        (None, None) => "ended (its exit status is lost)".to_string(),
    }
}

/// The events of task `name`, `before` (`None`: not seen yet) and `now`.
pub fn task_events(
    name: &str,
    before: Option<&Track>,
    now: &Track,
    rules: Rules,
    now_ms: i64,
) -> Vec<TaskEvent> {
    let restarted = before.map_or(0, |b| b.restarts) < now.restarts;
    let changed = restarted || before.is_none_or(|b| b.state != now.state);
    let mut out = Vec::new();
    if changed {
        out.extend(started(name, before, now, restarted, rules));
        out.extend(ended(name, now, rules, now_ms));
    }
    // Due anew: not due before, or due again after a restart done since.
    if now.restart_at.is_some() && (restarted || before.is_none_or(|b| b.restart_at.is_none())) {
        out.push(event(
            now_ms,
            name,
            EventType::Restarting,
            format!(
                "task restarts in {} (restart {} of {})",
                humanize(rules.delay),
                now.restarts + 1,
                rules.attempts
            ),
        ));
    }
    out
}

/// Started, when the task changed to running with a pid not seen running,
/// or to ended having run (started and ended within one poll).
fn started(
    name: &str,
    before: Option<&Track>,
    now: &Track,
    restarted: bool,
    rules: Rules,
) -> Option<TaskEvent> {
    let (pid, at) = match &now.state {
        TaskState::Running {
            pid,
            started_unix_ms,
        } => (*pid, *started_unix_ms),
        TaskState::Exited {
            pid,
            finished_unix_ms,
            ..
        } if *pid > 0 => (*pid, *finished_unix_ms),
        _ => return None,
    };
    let seen_running = before.is_some_and(|b| {
        !restarted && matches!(b.state, TaskState::Running { pid: p, .. } if p == pid)
    });
    if seen_running {
        return None;
    }
    let note = if now.restarts > 0 {
        format!(", restart {} of {}", now.restarts, rules.attempts)
    } else {
        String::new()
    };
    Some(event(
        at,
        name,
        EventType::Started,
        format!("task started (pid {pid}{note})"),
    ))
}

/// The end of a task that changed to ended or failed: how it ended, and
/// whether it is started no more.
fn ended(name: &str, now: &Track, rules: Rules, now_ms: i64) -> Vec<TaskEvent> {
    match &now.state {
        TaskState::Exited {
            exit_code,
            signal,
            finished_unix_ms,
            oom_killed,
            ..
        } => {
            let how = ending(*exit_code, *signal);
            let mut out = vec![if *oom_killed {
                event(
                    *finished_unix_ms,
                    name,
                    EventType::OomKilled,
                    format!("task killed by the OOM killer (over its memory limit): {how}"),
                )
            } else {
                event(
                    *finished_unix_ms,
                    name,
                    EventType::Exited,
                    format!("task {how}"),
                )
            }];
            let clean = rules.batch && *exit_code == Some(0);
            let exhausted = now.restarts >= rules.attempts;
            if now.restart_at.is_none() && !rules.stopping && !clean && exhausted {
                out.push(event(
                    *finished_unix_ms,
                    name,
                    EventType::NotRestarting,
                    format!(
                        "restart attempts exhausted ({} of {}): the task is not started again",
                        now.restarts, rules.attempts
                    ),
                ));
            }
            out
        }
        TaskState::Failed { message } => {
            let kind = if is_policy_refusal(message) {
                EventType::Refused
            } else {
                EventType::Failed
            };
            vec![event(now_ms, name, kind, message.clone())]
        }
        TaskState::Pending | TaskState::Running { .. } => Vec::new(),
    }
}

/// `1.5s`, `250ms`, `2m`.
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The events of an assignment the agent refused: one per task.
pub fn refused(tasks: &[String], message: &str, now_ms: i64) -> Vec<TaskEvent> {
    tasks
        .iter()
        .map(|t| event(now_ms, t, EventType::Refused, message.to_string()))
        .collect()
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
