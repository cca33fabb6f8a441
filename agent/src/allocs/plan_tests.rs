//! The plan, case by case: each case the root-only e2e tests cover
//! (`tests/tests/e2e_*.rs`), without root, runtime or network.

use std::time::Duration;

use super::*;
use crate::allocs::state::Track;
use crate::assignment::{Allocation, Group, NetworkMode, RestartPolicy, Task};
use crate::net::wiring::AllocNetwork;
use crate::runtime::TaskNetwork;

fn task(name: &str) -> Task {
    Task {
        name: name.into(),
        command: vec!["/bin/true".into()],
        env: Default::default(),
        cpu_millis: 100,
        memory_mb: 32,
        kill_timeout: Duration::from_secs(5),
        rootfs: crate::assignment::Rootfs::Host,
        user: None,
        workdir: None,
        volumes: Vec::new(),
        logs: None,
        seccomp: Default::default(),
        init: true,
        pinned_image: None,
    }
}

fn assignment(id: &str, desired: DesiredState, kind: JobKind, attempts: u32) -> Assignment {
    Assignment {
        alloc: Allocation {
            id: id.into(),
            name: format!("j.g[{id}]"),
            job: "j".into(),
            group: "g".into(),
            index: 0,
            desired,
            status: AllocStatus::Pending,
        },
        group: Group {
            name: "g".into(),
            tasks: vec![task("app")],
            restart: RestartPolicy {
                attempts,
                delay: Duration::from_millis(1000),
            },
            network: NetworkMode::Bridge,
            services: Vec::new(),
            stop_after_disconnect: None,
        },
        job_kind: kind,
    }
}

fn run(id: &str) -> Assignment {
    assignment(id, DesiredState::Run, JobKind::Service, 0)
}

fn running() -> TaskState {
    TaskState::Running {
        pid: 42,
        started_unix_ms: 0,
    }
}

fn exited(code: i32) -> TaskState {
    TaskState::Exited {
        pid: 42,
        exit_code: Some(code),
        signal: None,
        finished_unix_ms: 0,
        message: format!("exited with {code}"),
        oom_killed: false,
    }
}

fn tracked(a: Assignment, state: TaskState) -> Tracked {
    let mut tasks = BTreeMap::new();
    tasks.insert("app".to_string(), Track::new(state));
    Tracked {
        assignment: a,
        tasks,
        reported: None,
        stopping: false,
        net: None,
        ip: None,
    }
}

fn state_of(list: Vec<Tracked>) -> State {
    State {
        allocs: list
            .into_iter()
            .map(|t| (t.assignment.alloc.id.clone(), t))
            .collect(),
        refused: Default::default(),
    }
}

fn disk(on_disk: &[(&str, &str)], no_dirs: &[&str]) -> Disk {
    let mut d = Disk::default();
    for (alloc, task) in on_disk {
        d.tasks
            .entry(alloc.to_string())
            .or_default()
            .push(task.to_string());
    }
    d.no_dirs = no_dirs.iter().map(|s| s.to_string()).collect();
    d
}

fn ids(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::StopUntracked {
                alloc_id, report, ..
            } => format!("stop-untracked {alloc_id} report={report}"),
            Action::ReportStopped { alloc_id } => format!("report-stopped {alloc_id}"),
            Action::Refuse(r) => format!("refuse {}", r.alloc_id),
            Action::Stop { alloc_id } => format!("stop {alloc_id}"),
            Action::Forget { alloc_id } => format!("forget {alloc_id}"),
            Action::Update(a) => format!("update {}", a.alloc.id),
            Action::Start { assignment, fresh } => {
                format!("start {} fresh={fresh}", assignment.alloc.id)
            }
            Action::Restart { alloc_id, task } => format!("restart {alloc_id}/{task}"),
            Action::ScheduleRestart { alloc_id, task, .. } => {
                format!("schedule-restart {alloc_id}/{task}")
            }
            Action::CancelRestart { alloc_id, task } => format!("cancel-restart {alloc_id}/{task}"),
            Action::StopTask { alloc_id, task } => format!("stop-task {alloc_id}/{task}"),
            Action::Repin { alloc_id, task, .. } => format!("repin {alloc_id}/{task}"),
            Action::RemoveNetwork { alloc_id } => format!("remove-network {alloc_id}"),
        })
        .collect()
}

#[test]
fn a_new_allocation_is_started_fresh() {
    let actions = plan_assignments(&State::default(), &[run("a1")], &[], &disk(&[], &["a1"]));
    assert_eq!(ids(&actions), ["start a1 fresh=true"]);
    // Already tracked: only its assignment is refreshed.
    let state = state_of(vec![tracked(run("a1"), running())]);
    let actions = plan_assignments(&state, &[run("a1")], &[], &disk(&[("a1", "app")], &[]));
    assert_eq!(ids(&actions), ["update a1"]);
}

#[test]
fn an_allocation_marked_stop_or_unlisted_is_stopped_then_forgotten_once_reported() {
    let state = state_of(vec![
        tracked(run("a1"), running()),
        tracked(run("a2"), running()),
    ]);
    let stop = assignment("a1", DesiredState::Stop, JobKind::Service, 0);
    let actions = plan_assignments(&state, &[stop], &[], &disk(&[], &[]));
    assert_eq!(ids(&actions), ["stop a1", "update a1", "stop a2"]);

    // Stopped, its final status out, and no longer listed: forgotten.
    let mut done = tracked(run("a2"), exited(137));
    done.stopping = true;
    done.reported = Some(done.report());
    assert_eq!(done.report().status, AllocStatus::Complete);
    // Stopped but its final status not sent yet: kept until it is.
    let mut unreported = tracked(run("a3"), exited(137));
    unreported.stopping = true;
    let state = state_of(vec![done, unreported]);
    let actions = plan_assignments(&state, &[], &[], &disk(&[], &[]));
    assert_eq!(ids(&actions), ["forget a2"]);
}

#[test]
fn a_service_restarts_after_its_delay_until_attempts_run_out() {
    let now = Instant::now();
    let a = assignment("a1", DesiredState::Run, JobKind::Service, 2);
    // A clean exit counts for a service too.
    let state = state_of(vec![tracked(a.clone(), exited(0))]);
    let actions = plan_tick(&state, now);
    assert_eq!(
        actions,
        [Action::ScheduleRestart {
            alloc_id: "a1".into(),
            task: "app".into(),
            at: now + Duration::from_millis(1000),
        }]
    );
    // Before the delay: nothing; after it: the restart.
    let mut waiting = tracked(a.clone(), exited(0));
    waiting.tasks.get_mut("app").expect("task").restart_at = Some(now + Duration::from_secs(1));
    assert_eq!(waiting.report().status, AllocStatus::Running);
    let state = state_of(vec![waiting]);
    assert!(plan_tick(&state, now).is_empty());
    assert_eq!(
        ids(&plan_tick(&state, now + Duration::from_secs(1))),
        ["restart a1/app"]
    );
    // Attempts used up: failed for good, nothing more.
    let mut spent = tracked(a, exited(1));
    spent.tasks.get_mut("app").expect("task").restarts = 2;
    assert_eq!(spent.report().status, AllocStatus::Failed);
    assert!(plan_tick(&state_of(vec![spent]), now).is_empty());
}

#[test]
fn a_batch_task_that_exits_cleanly_is_done_and_one_that_fails_restarts() {
    let now = Instant::now();
    let batch = assignment("a1", DesiredState::Run, JobKind::Batch, 3);
    let clean = tracked(batch.clone(), exited(0));
    assert_eq!(clean.report().status, AllocStatus::Complete);
    assert!(plan_tick(&state_of(vec![clean]), now).is_empty());
    let failed = tracked(batch, exited(3));
    assert_eq!(
        ids(&plan_tick(&state_of(vec![failed]), now)),
        ["schedule-restart a1/app"]
    );
}

#[test]
fn tasks_on_disk_from_before_an_agent_restart_are_adopted_when_wanted() {
    // Wanted running and on disk: started with fresh = false, which adopts
    // each task found on disk instead of starting it again.
    let actions = plan_assignments(
        &State::default(),
        &[run("a1")],
        &[],
        &disk(&[("a1", "app")], &[]),
    );
    assert_eq!(ids(&actions), ["start a1 fresh=false"]);
}

#[test]
fn a_finished_allocation_whose_files_were_collected_is_not_started_again() {
    let mut collected = run("a1");
    collected.alloc.status = AllocStatus::Complete;
    let actions = plan_assignments(
        &State::default(),
        &[collected.clone()],
        &[],
        &disk(&[], &["a1"]),
    );
    assert!(actions.is_empty(), "{actions:?}");
    // Still on disk (the scheduler's status an early guess): adopted.
    let actions = plan_assignments(
        &State::default(),
        &[collected],
        &[],
        &disk(&[("a1", "app")], &[]),
    );
    assert_eq!(ids(&actions), ["start a1 fresh=false"]);
    // Failed or lost, with nothing on disk: not started either.
    for status in [AllocStatus::Failed, AllocStatus::Lost] {
        let mut a = run("a2");
        a.alloc.status = status;
        assert!(plan_assignments(&State::default(), &[a], &[], &disk(&[], &["a2"])).is_empty());
    }
}

#[test]
fn an_allocation_refused_for_want_of_network_is_failed_and_never_restarted() {
    // The executor fails each task with the reason when the network cannot
    // be set up (see `tests.rs`); the plan then leaves it failed.
    let a = assignment("a1", DesiredState::Run, JobKind::Service, 3);
    let refused = tracked(
        a,
        TaskState::Failed {
            message: "cannot start allocation: no subnet".into(),
        },
    );
    assert_eq!(refused.report().status, AllocStatus::Failed);
    assert!(plan_tick(&state_of(vec![refused]), Instant::now()).is_empty());
}

#[test]
fn untracked_tasks_on_disk_are_stopped_unless_wanted_running() {
    let stop = assignment("a2", DesiredState::Stop, JobKind::Service, 0);
    let never = assignment("a3", DesiredState::Stop, JobKind::Service, 0);
    let actions = plan_assignments(
        &State::default(),
        &[run("a1"), stop, never],
        &[],
        &disk(&[("a1", "app"), ("a2", "app"), ("old", "app")], &["a3"]),
    );
    assert_eq!(
        ids(&actions),
        [
            "stop-untracked a2 report=true",
            "stop-untracked old report=false",
            "report-stopped a3",
            "start a1 fresh=false",
        ]
    );
}

#[test]
fn a_failed_allocation_is_not_turned_complete_by_a_stop() {
    let mut failed = tracked(run("a1"), exited(1));
    failed.reported = Some(failed.report());
    assert_eq!(failed.report().status, AllocStatus::Failed);
    let stop = assignment("a1", DesiredState::Stop, JobKind::Service, 0);
    let state = state_of(vec![failed]);
    let actions = plan_assignments(&state, &[stop], &[], &disk(&[("a1", "app")], &[]));
    assert_eq!(ids(&actions), ["update a1"]);
    let alloc = &state.allocs["a1"];
    assert!(!alloc.stopping);
    assert_eq!(alloc.report().status, AllocStatus::Failed);
}

#[test]
fn a_stop_cancels_pending_restarts_and_is_retried_until_tasks_end() {
    let now = Instant::now();
    let mut stopping = tracked(
        assignment("a1", DesiredState::Stop, JobKind::Service, 3),
        running(),
    );
    stopping.stopping = true;
    let mut other = Track::new(exited(1));
    other.restart_at = Some(now);
    stopping.tasks.insert("side".into(), other);
    assert_eq!(
        ids(&plan_tick(&state_of(vec![stopping]), now)),
        ["cancel-restart a1/side", "stop-task a1/app"]
    );
}

#[test]
fn a_failed_task_stops_its_siblings_and_an_allocation_over_releases_its_network() {
    let now = Instant::now();
    let mut a = tracked(run("a1"), running());
    a.tasks.insert(
        "init".into(),
        Track::new(TaskState::Failed {
            message: "bad".into(),
        }),
    );
    assert_eq!(
        ids(&plan_tick(&state_of(vec![a]), now)),
        ["stop-task a1/app"]
    );
    let mut over = tracked(run("a2"), exited(0));
    over.net = Some(AllocNetwork {
        mode: NetworkMode::Bridge,
        ip: None,
        task: TaskNetwork::default(),
    });
    assert_eq!(
        ids(&plan_tick(&state_of(vec![over]), now)),
        ["remove-network a2"]
    );
}

#[test]
fn a_refused_assignment_is_reported_once_and_leaves_a_running_allocation_alone() {
    let refused = Refused {
        alloc_id: "a1".into(),
        tasks: vec!["app".into()],
        error: crate::assignment::InvalidAssignment::Missing {
            field: "group".into(),
        },
    };
    let actions = plan_assignments(
        &State::default(),
        &[],
        std::slice::from_ref(&refused),
        &disk(&[], &[]),
    );
    assert_eq!(ids(&actions), ["refuse a1"]);
    let mut reported = State::default();
    reported.refused.insert("a1".into());
    assert!(plan_assignments(
        &reported,
        &[],
        std::slice::from_ref(&refused),
        &disk(&[], &[])
    )
    .is_empty());
    // Tracked and running: neither stopped nor forgotten.
    let state = state_of(vec![tracked(run("a1"), running())]);
    assert!(plan_assignments(&state, &[], &[refused], &disk(&[("a1", "app")], &[])).is_empty());
}

#[test]
fn a_task_started_on_another_digest_than_its_deployment_pin_is_restarted_on_the_pin() {
    const RUNS: &str = "reg/web@sha256:1111";
    const PINNED: &str = "reg/web@sha256:2222";
    let with = |pin: Option<&str>, image: Option<&str>, state: TaskState| {
        let mut a = run("a1");
        a.group.tasks[0].rootfs = crate::assignment::Rootfs::Oci("reg/web:1".into());
        a.group.tasks[0].pinned_image = pin.map(Into::into);
        let mut t = tracked(a, state);
        t.tasks.get_mut("app").expect("task").image = image.map(Into::into);
        t
    };
    let repins = |t: Tracked| -> Vec<Action> {
        plan_tick(&state_of(vec![t]), Instant::now())
            .into_iter()
            .filter(|a| matches!(a, Action::Repin { .. }))
            .collect()
    };
    assert_eq!(
        repins(with(Some(PINNED), Some(RUNS), running())),
        [Action::Repin {
            alloc_id: "a1".into(),
            task: "app".into(),
            runs: RUNS.into(),
            pinned: PINNED.into(),
        }]
    );
    // Already on the pin; no pin; its image not looked up yet (or none):
    // nothing.
    assert!(repins(with(Some(PINNED), Some(PINNED), running())).is_empty());
    assert!(repins(with(None, Some(RUNS), running())).is_empty());
    assert!(repins(with(Some(PINNED), None, running())).is_empty());
    assert!(repins(with(Some(PINNED), Some(""), running())).is_empty());
    // Not running (its restart starts it on the pin anyway), or being
    // stopped: nothing.
    assert!(repins(with(Some(PINNED), Some(RUNS), exited(1))).is_empty());
    let mut stopping = with(Some(PINNED), Some(RUNS), running());
    stopping.stopping = true;
    assert!(repins(stopping).is_empty());
}
