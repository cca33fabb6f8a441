//! Unhealthy allocations are replaced, through the real `drover dev`
//! (issue #13, rescheduling and health-gated updates): a service whose
//! exec check follows a file its task creates at start keeps running
//! while the file is there. The test removes the file with `drover exec`;
//! the check goes critical, `drover job status` shows when the allocation
//! will be replaced (its critical time + the group's healthy deadline +
//! the reschedule delay), and at that time, never before, a replacement
//! is placed and the unhealthy allocation stopped. The replacement, healthy,
//! stays; made unhealthy in turn, it is replaced after twice the delay.
//! Over a window several times the delays, nothing more is placed: no
//! tight loop.
//!
//! Needs root, busybox and the binary: `cargo build -p drover-cli &&
//! cargo test -p drover-tests --test unhealthy_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_tests::checks::{arr, int_of, str_of, WAIT};
use drover_tests::{poll_until, run_drover_with_env, unique_name, DevCluster};
use serde_json::Value;

/// The group's healthy deadline and first reschedule delay, ms.
const DEADLINE_MS: i64 = 1_500;
const DELAY_MS: i64 = 1_000;

fn job_file(name: &str) -> String {
    let script = "touch /tmp/up && exec sleep 3600";
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
update = {{ min_healthy_time_ms = 200, healthy_deadline_ms = {DEADLINE_MS}, progress_deadline_ms = 60000 }}
reschedule = {{ delay_ms = {DELAY_MS}, max_delay_ms = 8000, unlimited = true }}

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 16 }}

[[group.service]]
name = "{name}"
port = 8080
[[group.service.check]]
type = "exec"
command = ["/bin/sh", "-c", "test -f /tmp/up && echo up"]
interval_ms = 300
timeout_ms = 250
failures_before_critical = 2
"#
    )
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The job's allocations, oldest first.
fn allocs(c: &DevCluster, job: &str) -> Vec<Value> {
    let mut v = arr(&c.cli_json(&["job", "status", job])["allocations"]).clone();
    v.sort_by_key(|a| int_of(a, "created_unix_ms"));
    v
}

/// The verdict of allocation `a`'s one check (`alloc status` shows checks).
fn check_status(c: &DevCluster, a: &Value) -> String {
    c.cli_json(&["alloc", "status", str_of(a, "id")])["checks"]
        .as_array()
        .and_then(|c| c.first())
        .map(|c| str_of(c, "status").to_string())
        .unwrap_or_default()
}

/// Waits until the job's newest allocation runs with its check passing
/// and there are `n` allocations; returns the newest.
fn wait_healthy(c: &DevCluster, job: &str, n: usize) -> Value {
    poll_until(&format!("allocation {n} of {job} healthy"), WAIT, || {
        let all = allocs(c, job);
        let last = all.last()?;
        (all.len() == n
            && str_of(last, "status") == "running"
            && check_status(c, last) == "passing")
            .then(|| last.clone())
    })
}

/// Removes the file the check follows in allocation `id`: from then on
/// its check fails.
fn make_unhealthy(c: &DevCluster, id: &str) -> i64 {
    let at = now_ms();
    let out = run_drover_with_env(
        &["exec", id, "--", "rm", "/tmp/up"],
        &[("DROVER_ADDR", c.addr())],
    );
    assert!(
        out.status.success(),
        "drover exec rm: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    at
}

/// Waits for allocation `old` to be replaced, checking what `job status`
/// said before and the replacement's lineage; returns the replacement and
/// the due time that was shown.
fn replaced(c: &DevCluster, job: &str, old: &str, broken_at: i64, attempt: i64) -> Value {
    let delay = DELAY_MS << (attempt - 1);
    // While critical, still running: the due time is shown, not before
    // the deadline plus the delay from when the check failed.
    let shown = poll_until(&format!("{old} to show its replacement time"), WAIT, || {
        let a = allocs(c, job)
            .into_iter()
            .find(|a| str_of(a, "id") == old)?;
        let due = int_of(&a, "reschedule_unix_ms");
        (due > 0 || !str_of(&a, "replaced_by").is_empty()).then_some(due)
    });
    if shown > 0 {
        assert!(
            shown >= broken_at + DEADLINE_MS + delay,
            "attempt {attempt}: due at {shown}, sooner than {} ms after the check broke at {broken_at}",
            DEADLINE_MS + delay
        );
    }
    let new = poll_until(&format!("{old} to be replaced"), WAIT, || {
        allocs(c, job)
            .into_iter()
            .find(|a| str_of(a, "previous_alloc") == old)
    });
    assert_eq!(int_of(&new, "reschedule_attempt"), attempt, "{new}");
    let due = int_of(&new, "reschedule_eligible_unix_ms");
    eprintln!(
        "attempt {attempt}: check broken at +0 ms, due shown +{} ms, due +{} ms, \
         placed +{} ms (deadline {DEADLINE_MS} + delay {delay})",
        shown - broken_at,
        due - broken_at,
        int_of(&new, "created_unix_ms") - broken_at
    );
    assert!(
        due >= broken_at + DEADLINE_MS + delay,
        "attempt {attempt}: due {due}, check broke at {broken_at}: {new}"
    );
    assert!(
        int_of(&new, "created_unix_ms") >= due,
        "placed before it was due: {new}"
    );
    // The unhealthy one is stopped, naming its replacement and why.
    let gone = poll_until(&format!("{old} to be stopped"), WAIT, || {
        let a = allocs(c, job)
            .into_iter()
            .find(|a| str_of(a, "id") == old)?;
        (str_of(&a, "desired") == "stop" && str_of(&a, "status") != "running").then_some(a)
    });
    assert_eq!(str_of(&gone, "replaced_by"), str_of(&new, "id"), "{gone}");
    assert!(
        str_of(&gone, "desired_reason").contains("rescheduled: unhealthy"),
        "{gone}"
    );
    new
}

#[test]
fn an_allocation_whose_check_stays_critical_is_replaced_after_its_deadline_and_delay() {
    let c = DevCluster::start();
    let name = unique_name("sick");
    let file = c.write_file(&format!("{name}.toml"), &job_file(&name));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let first = wait_healthy(&c, &name, 1);
    let first_id = str_of(&first, "id").to_string();

    let broke = make_unhealthy(&c, &first_id);
    // People see it coming in `job status`.
    poll_until("job status to say when it is replaced", WAIT, || {
        let table = c.cli_ok(&["job", "status", &name]);
        (table.contains("check critical: rescheduled") || table.contains("replaced by"))
            .then_some(())
    });
    let second = replaced(&c, &name, &first_id, broke, 1);
    let second_id = str_of(&second, "id").to_string();
    wait_healthy(&c, &name, 2);

    // The event says what it replaces and why.
    let events = arr(&c.cli_json(&["events", "--job", &name])).clone();
    assert!(
        events.iter().any(|e| str_of(e, "type") == "Rescheduled"
            && str_of(e, "message")
                .contains(&format!("replaces unhealthy allocation {}", &first_id[..8]))),
        "{events:?}"
    );

    // Unhealthy in turn: replaced after twice the delay.
    let broke = make_unhealthy(&c, &second_id);
    let third = replaced(&c, &name, &second_id, broke, 2);
    wait_healthy(&c, &name, 3);

    // Healthy now: over several times the longest delay, nothing more.
    let until = Instant::now() + Duration::from_millis(3 * (DEADLINE_MS + 4 * DELAY_MS) as u64);
    while Instant::now() < until {
        let all = allocs(&c, &name);
        assert_eq!(all.len(), 3, "placed again with nothing unhealthy: {all:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let wanted: Vec<String> = allocs(&c, &name)
        .iter()
        .filter(|a| str_of(a, "desired") == "run")
        .map(|a| str_of(a, "id").to_string())
        .collect();
    assert_eq!(wanted, [str_of(&third, "id")]);
}
