use std::time::{Duration, Instant};

use super::*;

const RULES: Rules = Rules {
    delay: Duration::from_millis(1500),
    attempts: 3,
    batch: false,
    stopping: false,
};

fn running(pid: i32, restarts: u32) -> Track {
    Track {
        state: TaskState::Running {
            pid,
            started_unix_ms: 100,
        },
        restarts,
        restart_at: None,
        image: None,
    }
}

fn exited(pid: i32, code: i32, restarts: u32, restart: bool) -> Track {
    Track {
        state: TaskState::Exited {
            pid,
            exit_code: Some(code),
            signal: None,
            finished_unix_ms: 200,
            message: String::new(),
            oom_killed: false,
        },
        restarts,
        restart_at: restart.then(Instant::now),
        image: None,
    }
}

fn kinds(events: &[TaskEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn a_task_that_starts_exits_and_restarts_tells_each_step_once() {
    let start = running(10, 0);
    let e = task_events("app", None, &start, RULES, 1);
    assert_eq!(kinds(&e), ["Started"]);
    assert_eq!(
        (e[0].time_unix_ms, e[0].message.as_str()),
        (100, "task started (pid 10)")
    );
    assert!(task_events("app", Some(&start), &start, RULES, 1).is_empty());

    // Exits with 3; its restart is scheduled in the same poll.
    let ended = exited(10, 3, 0, true);
    let e = task_events("app", Some(&start), &ended, RULES, 150);
    assert_eq!(kinds(&e), ["Exited", "Restarting"]);
    assert_eq!(e[0].message, "task exited with code 3");
    assert_eq!(e[1].message, "task restarts in 1.5s (restart 1 of 3)");
    assert!(task_events("app", Some(&ended), &ended, RULES, 160).is_empty());

    // Restarted: a new pid.
    let again = running(11, 1);
    let e = task_events("app", Some(&ended), &again, RULES, 170);
    assert_eq!(kinds(&e), ["Started"]);
    assert_eq!(e[0].message, "task started (pid 11, restart 1 of 3)");

    // Restarted and already ended within one poll: both are told.
    let quick = exited(12, 3, 2, false);
    let e = task_events("app", Some(&ended), &quick, RULES, 180);
    assert_eq!(kinds(&e), ["Started", "Exited"]);
    // ... and its next restart already due: that too.
    let due = exited(12, 3, 1, true);
    let e = task_events("app", Some(&ended), &due, RULES, 190);
    assert_eq!(kinds(&e), ["Started", "Exited", "Restarting"]);
    assert_eq!(e[2].message, "task restarts in 1.5s (restart 2 of 3)");
}

#[test]
fn the_last_attempt_is_not_restarted_and_says_so() {
    let last = running(13, 3);
    let e = task_events("app", Some(&last), &exited(13, 1, 3, false), RULES, 1);
    assert_eq!(kinds(&e), ["Exited", "Not Restarting"]);
    assert!(
        e[1].message.contains("exhausted (3 of 3)"),
        "{}",
        e[1].message
    );
    // Stopped on purpose, or a batch task done: nothing more to say.
    let stopping = Rules {
        stopping: true,
        ..RULES
    };
    let e = task_events("app", Some(&last), &exited(13, 1, 3, false), stopping, 1);
    assert_eq!(kinds(&e), ["Exited"]);
    let batch = Rules {
        batch: true,
        ..RULES
    };
    let e = task_events("app", Some(&last), &exited(13, 0, 3, false), batch, 1);
    assert_eq!(kinds(&e), ["Exited"]);
}

#[test]
fn signals_and_oom_kills_are_told_apart() {
    let start = running(10, 3);
    let mut killed = exited(10, 0, 3, false);
    if let TaskState::Exited {
        exit_code,
        signal,
        oom_killed,
        ..
    } = &mut killed.state
    {
        *exit_code = None;
        *signal = Some(9);
        *oom_killed = true;
    }
    let e = task_events("app", Some(&start), &killed, RULES, 1);
    assert_eq!(kinds(&e), ["OOM Killed", "Not Restarting"]);
    assert!(
        e[0].message.ends_with("killed by signal 9"),
        "{}",
        e[0].message
    );
}

#[test]
fn a_start_the_node_policy_refuses_is_a_refusal_with_its_reason() {
    let refused = Track::new(TaskState::Failed {
        message: "alloc a task app: refused by the node policy: seccomp \"unconfined\" \
                  needs seccomp.allow_unconfined"
            .into(),
    });
    let e = task_events("app", None, &refused, RULES, 42);
    assert_eq!(kinds(&e), ["Refused"]);
    assert!(e[0].message.contains("seccomp.allow_unconfined"));
    assert_eq!(e[0].time_unix_ms, 42);
    assert!(task_events("app", Some(&refused), &refused, RULES, 43).is_empty());
    let other = Track::new(TaskState::Failed {
        message: "no such file: /bin/nope".into(),
    });
    assert_eq!(
        kinds(&task_events("app", None, &other, RULES, 1)),
        ["Failed"]
    );
    let e = refused_events();
    assert_eq!(kinds(&e), ["Refused", "Refused"]);
}

fn refused_events() -> Vec<TaskEvent> {
    refused(&["a".into(), "b".into()], "bad assignment", 5)
}

#[test]
fn delays_read_as_people_write_them() {
    assert_eq!(humanize(Duration::from_millis(250)), "250ms");
    assert_eq!(humanize(Duration::from_secs(2)), "2s");
    assert_eq!(humanize(Duration::from_secs(120)), "2m");
    assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
}
