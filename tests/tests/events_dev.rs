//! Allocation events and truthful job statuses through the real
//! `drover dev`: a task that exits 3 shows its starts, exits and restarts
//! in `alloc status` and `drover events`; `events -f` receives what
//! happens after it started; a job the node policy refuses shows the
//! refusal and is `failed`; `degraded`, `complete` and `stopped`; and the
//! store keeps at most the per-allocation bound of events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use drover_tests::checks::{arr, batch, edit, str_of, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// The per-allocation bound of the scheduler (`EventLimits::default`).
const PER_ALLOC: usize = 25;

/// A service job `name` of `count` instances running `script`, restarted
/// as `restart` says and never rescheduled.
fn service(name: &str, count: u32, script: &str, restart: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
count = {count}
restart = {restart}
reschedule = {{ attempts = 0 }}

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 16 }}
"#
    )
}

fn run_detached(c: &DevCluster, name: &str, text: &str) {
    let file = c.write_file(&format!("{name}.toml"), text);
    let _ = c.cli(&["job", "run", "--detach", file.to_str().unwrap()]);
}

/// The job's row in `job list -o json`.
fn listed(c: &DevCluster, job: &str) -> Value {
    let list = c.cli_json(&["job", "list"]);
    arr(&list)
        .iter()
        .find(|j| j["name"] == job)
        .cloned()
        .unwrap_or_else(|| panic!("job {job} not listed: {list}"))
}

fn wait_job_status(c: &DevCluster, job: &str, status: &str) -> Value {
    poll_until(&format!("job {job} to be {status}"), WAIT, || {
        let row = listed(c, job);
        (row["status"] == status).then_some(row)
    })
}

/// `drover events --job JOB -o json`.
fn events_of(c: &DevCluster, job: &str) -> Vec<Value> {
    arr(&c.cli_json(&["events", "--job", job])).clone()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| str_of(e, "type").to_string())
        .collect()
}

fn only_alloc(c: &DevCluster, job: &str) -> String {
    let s = c.cli_json(&["job", "status", job]);
    let allocs = arr(&s["allocations"]);
    assert_eq!(allocs.len(), 1, "{s}");
    str_of(&allocs[0], "id").to_string()
}

/// A `drover events -f` process, killed by pid on drop; its stdout lines
/// arrive on `lines`.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(c: &DevCluster, args: &[&str]) -> Follower {
        let mut child = Command::new(drover_tests::drover_bin())
            .args(["events", "-f", "--addr", c.addr()])
            .args(args)
            .env_remove("DROVER_ADDR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting drover events -f");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// Waits for a line `pred` accepts; returns it.
    fn wait_for(&self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("waiting for {what} from events -f: {e}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("events -f -o json printed {line:?}: {e}"));
            if pred(&v) {
                return v;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_failing_command_shows_its_exits_and_restarts_as_events() {
    let c = DevCluster::start();
    let job = unique_name("exit3");
    run_detached(
        &c,
        &job,
        &service(&job, 1, "exit 3", "{ attempts = 2, delay_ms = 100 }"),
    );
    // Two restarts, then the allocation fails for good: the job with it.
    let row = wait_job_status(&c, &job, "failed");
    assert_eq!(
        (row["healthy"].as_i64(), row["desired"].as_i64()),
        (Some(0), Some(1)),
        "{row}"
    );
    let alloc = only_alloc(&c, &job);
    // The allocation's end is recorded from its record's change.
    poll_until("the allocation's failure event", WAIT, || {
        types(&events_of(&c, &job))
            .contains(&"Failed".to_string())
            .then_some(())
    });

    // `alloc status`: a Recent Events table, newest first.
    let text = c.cli_ok(&["alloc", "status", &alloc]);
    assert!(text.contains("Recent Events:"), "{text}");
    for want in [
        "Exited",
        "app: task exited with code 3",
        "Restarting",
        "app: task restarts in 100ms (restart 2 of 2)",
        "Started",
        "restart 2 of 2",
        "Not Restarting",
    ] {
        assert!(text.contains(want), "{want:?} not in alloc status:\n{text}");
    }
    let json = c.cli_json(&["alloc", "status", &alloc]);
    let shown = arr(&json["events"]);
    assert!(!shown.is_empty() && shown.len() <= 10, "{json}");

    // `drover events --job`: the whole story, oldest first.
    let events = events_of(&c, &job);
    let t = types(&events);
    let pos = |ty: &str| {
        t.iter()
            .position(|x| x == ty)
            .unwrap_or_else(|| panic!("no {ty} in {t:?}"))
    };
    assert!(pos("Placed") < pos("Started"), "{t:?}");
    assert!(
        pos("Started") < pos("Exited") && pos("Exited") < pos("Restarting"),
        "{t:?}"
    );
    let exits = events
        .iter()
        .filter(|e| e["type"] == "Exited" && str_of(e, "message") == "task exited with code 3")
        .count();
    assert_eq!(exits, 3, "one exit per run: {events:?}");
    assert_eq!(t.iter().filter(|x| *x == "Restarting").count(), 2, "{t:?}");
    for e in &events {
        assert_eq!(str_of(e, "alloc_id"), alloc, "{e}");
        assert_eq!(str_of(e, "job"), job, "{e}");
        assert_eq!(str_of(e, "alloc_name"), format!("{job}.main[0]"), "{e}");
    }
    // Another job's events are not this job's.
    assert!(events_of(&c, "no-such-job").is_empty());
}

#[test]
fn events_follow_receives_what_happens_after_it_started() {
    let c = DevCluster::start();
    let job = unique_name("follow");
    run_detached(
        &c,
        &job,
        &service(&job, 1, "exec sleep 600", "{ attempts = 0 }"),
    );
    poll_until("the task to start", WAIT, || {
        types(&events_of(&c, &job))
            .contains(&"Started".to_string())
            .then_some(())
    });
    // The newest kept event comes first: once it is printed, the server
    // follows the store, so the stop below cannot be missed.
    let f = Follower::start(&c, &["--job", &job, "--limit", "1", "-o", "json"]);
    let first = f.wait_for("the backlog event", |_| true);
    assert_eq!(str_of(&first, "job"), job, "{first}");
    c.cli_ok(&["job", "stop", &job]);
    let stop = f.wait_for("the stop request", |e| e["type"] == "Stop Requested");
    assert_eq!(str_of(&stop, "message"), "its job was stopped", "{stop}");
    f.wait_for("the task's exit", |e| e["type"] == "Exited");
    f.wait_for("the allocation stopped", |e| e["type"] == "Stopped");
    assert_eq!(str_of(&listed(&c, &job), "status"), "stopped");
}

#[test]
fn a_job_the_node_policy_refuses_fails_and_says_why() {
    let c = DevCluster::start();
    let job = unique_name("refused");
    let text = edit(
        &service(&job, 1, "exec sleep 600", "{ attempts = 0 }"),
        "kill_timeout_ms = 200\n",
        "kill_timeout_ms = 200\nseccomp = \"unconfined\"\n",
    );
    run_detached(&c, &job, &text);
    let row = wait_job_status(&c, &job, "failed");
    assert_eq!(
        (row["running"].as_i64(), row["healthy"].as_i64()),
        (Some(0), Some(0)),
        "{row}"
    );
    assert_eq!(
        str_of(&c.cli_json(&["job", "status", &job]), "status"),
        "failed"
    );
    let refused = poll_until("the refusal event", WAIT, || {
        events_of(&c, &job)
            .into_iter()
            .find(|e| e["type"] == "Refused")
    });
    let message = str_of(&refused, "message");
    assert!(
        message.contains("refused by the node policy")
            && message.contains("seccomp.allow_unconfined"),
        "{refused}"
    );
    assert_eq!(str_of(&refused, "task"), "app");
    let text = c.cli_ok(&["alloc", "status", &only_alloc(&c, &job)]);
    assert!(
        text.contains("Refused") && text.contains("seccomp.allow_unconfined"),
        "{text}"
    );
}

#[test]
fn job_statuses_follow_their_allocations() {
    let c = DevCluster::start();
    // One instance runs, the other fails: degraded, 1 of 2 healthy.
    let job = unique_name("half");
    let script = r#"if [ "$DROVER_ALLOC_INDEX" = 0 ]; then exec sleep 600; else exit 1; fi"#;
    run_detached(&c, &job, &service(&job, 2, script, "{ attempts = 0 }"));
    // Once the second has failed for good (it may run a moment first).
    poll_until("the second instance to fail", WAIT, || {
        let s = c.cli_json(&["job", "status", &job]);
        let a = arr(&s["allocations"]);
        let has = |st: &str| a.iter().any(|x| x["status"] == st);
        (has("failed") && has("running")).then_some(())
    });
    let row = listed(&c, &job);
    assert_eq!(str_of(&row, "status"), "degraded", "{row}");
    assert_eq!(
        (row["healthy"].as_i64(), row["desired"].as_i64()),
        (Some(1), Some(2)),
        "{row}"
    );
    let table = c.cli_ok(&["job", "list"]);
    let line = table
        .lines()
        .find(|l| l.starts_with(&job))
        .unwrap_or_default();
    assert!(line.contains("degraded") && line.contains("1/2"), "{table}");
    c.cli_ok(&["job", "stop", &job]);
    wait_job_status(&c, &job, "stopped");

    // All running: running, 1 of 1.
    let ok = unique_name("whole");
    run_detached(
        &c,
        &ok,
        &service(&ok, 1, "exec sleep 600", "{ attempts = 0 }"),
    );
    let row = wait_job_status(&c, &ok, "running");
    assert_eq!(
        (row["healthy"].as_i64(), row["desired"].as_i64()),
        (Some(1), Some(1)),
        "{row}"
    );

    // A batch job that ends well: complete.
    let done = unique_name("done");
    run_detached(&c, &done, &batch(&done, "true"));
    wait_job_status(&c, &done, "complete");
}

#[test]
fn many_restarts_keep_at_most_the_bound_of_events() {
    let c = DevCluster::start();
    let job = unique_name("flappy");
    // Each run makes three events (started, exited, restarting): 30 runs
    // make far more than the bound.
    run_detached(
        &c,
        &job,
        &service(&job, 1, "exit 1", "{ attempts = 30, delay_ms = 10 }"),
    );
    wait_job_status(&c, &job, "failed");
    let alloc = only_alloc(&c, &job);
    // The last events are in: the allocation's end.
    let events = poll_until("the allocation's last events", WAIT, || {
        let e = events_of(&c, &job);
        let t = types(&e);
        (t.contains(&"Failed".to_string()) && t.contains(&"Not Restarting".to_string()))
            .then_some(e)
    });
    let keys = c.store_keys("/drover/events/");
    assert!(
        keys.len() <= PER_ALLOC,
        "{} events kept for one allocation, over the bound of {PER_ALLOC}",
        keys.len()
    );
    assert_eq!(events.len(), keys.len());
    // The oldest went: the placement is no longer kept, the end is.
    let t = types(&events);
    assert!(!t.contains(&"Placed".to_string()), "{t:?}");
    // Failed once, at the end: a task restarted at once is never shown
    // failed in between.
    assert_eq!(t.iter().filter(|x| *x == "Failed").count(), 1, "{t:?}");
    assert_eq!(t.last().map(String::as_str), Some("Failed"), "{t:?}");
    assert!(events.iter().all(|e| str_of(e, "alloc_id") == alloc));
}
