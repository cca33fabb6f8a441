//! Placements that wait (issue 13, point 3), end to end on `drover dev`:
//! a job that does not fit is accepted, shown pending with its reason by
//! `drover job status` and `drover job list`, and `drover job run` fails
//! saying it is queued; it is placed as soon as capacity appears (another
//! job stops) without waiting for the periodic reconcile pass, which is
//! set far beyond the test's deadlines; and nothing plans it again while
//! nothing changes (the passes over waiting jobs are counted in the dev
//! log). `drover job run --wait` waits for a queued job to be placed.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test queue_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::checks::{arr, edit, int_of, service, str_of, wait_running, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster, DEV_LOG};
use serde_json::Value;

/// The periodic full pass: far longer than any wait below, so that only
/// the capacity trigger can place what waits.
const RECONCILE_MS: &str = "600000";

/// What the scheduler logs once per pass over the waiting jobs.
const PASS_LINE: &str = "planned the jobs waiting for capacity";

/// How long the test watches a quiet cluster for passes that should not
/// happen.
const QUIET: Duration = Duration::from_secs(3);

/// A service job of one instance of `sleep` with `cpu` millicores.
fn hog(name: &str, cpu: i64) -> String {
    edit(
        &service(name, 1, "exec sleep 3600"),
        "cpu_millis = 50",
        &format!("cpu_millis = {cpu}"),
    )
}

/// The dev node's CPU capacity in millicores.
fn node_cpu(c: &DevCluster) -> i64 {
    let nodes = c.cli_json(&["node", "list"]);
    int_of(&arr(&nodes)[0], "cpu_millis")
}

/// How many passes over waiting jobs the dev scheduler has logged.
fn passes(c: &DevCluster) -> usize {
    let log = std::fs::read_to_string(c.data_dir().join(DEV_LOG)).unwrap_or_default();
    log.lines().filter(|l| l.contains(PASS_LINE)).count()
}

/// The pending placements of `job` in `job status -o json`.
fn pending(c: &DevCluster, job: &str) -> Vec<Value> {
    arr(&c.cli_json(&["job", "status", job])["pending"]).clone()
}

/// `job list -o json`'s row of `job`.
fn listed(c: &DevCluster, job: &str) -> Value {
    let list = c.cli_json(&["job", "list"]);
    arr(&list)
        .iter()
        .find(|j| j["name"] == job)
        .cloned()
        .unwrap_or_else(|| panic!("job {job} not listed: {list}"))
}

#[test]
fn a_job_that_does_not_fit_waits_visibly_and_is_placed_when_capacity_appears() {
    let c = DevCluster::start_with(&["--reconcile-ms", RECONCILE_MS]);
    // Two jobs of 60% of the node each: the second cannot fit beside the
    // first.
    let share = node_cpu(&c) * 6 / 10;
    let (first, second) = (unique_name("hog"), unique_name("waiter"));
    let f1 = c.write_file("first.toml", &hog(&first, share));
    let f2 = c.write_file("second.toml", &hog(&second, share));
    c.cli_ok(&["job", "run", f1.to_str().unwrap()]);
    wait_running(&c, &first, 1);

    // `job run` fails, saying the job is queued and why.
    let out = c.cli(&["job", "run", f2.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "job run of a queued job succeeded");
    assert!(
        stderr.contains(&format!(
            "job {second:?} is queued: 1 instance could not be placed"
        )) && stderr.contains("group \"main\": 1 pending")
            && stderr.contains("as soon as capacity appears"),
        "job run's message: {stderr}"
    );

    // `job status` shows it pending with its reason, text and JSON.
    let p = pending(&c, &second);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (str_of(&p[0], "group"), int_of(&p[0], "count")),
        ("main", 1)
    );
    let reason = str_of(&p[0], "reason").to_string();
    assert!(reason.to_lowercase().contains("cpu"), "reason: {reason}");
    assert!(int_of(&p[0], "since_unix_ms") > 0);
    let text = c.cli_ok(&["job", "status", &second]);
    assert!(
        text.contains("Pending") && text.contains(&reason),
        "job status:\n{text}"
    );
    let row = listed(&c, &second);
    assert_eq!((int_of(&row, "pending"), int_of(&row, "running")), (1, 0));

    // Nothing changes: nothing is planned again.
    let before = passes(&c);
    std::thread::sleep(QUIET);
    assert_eq!(
        passes(&c),
        before,
        "waiting jobs planned again without a capacity event"
    );
    assert_eq!(pending(&c, &second).len(), 1, "still waiting");

    // Capacity appears: the first job stops, and the second runs long
    // before the periodic pass (ten minutes away) could place it.
    c.cli_ok(&["job", "stop", &first]);
    wait_running(&c, &second, 1);
    assert!(pending(&c, &second).is_empty(), "placed, no longer pending");
    let row = listed(&c, &second);
    assert_eq!((int_of(&row, "pending"), int_of(&row, "running")), (0, 1));
    let used = passes(&c) - before;
    assert!(
        (1..=3).contains(&used),
        "a stop and the end of one allocation took {used} passes"
    );

    // `job run --wait` waits for a queued job until it is placed.
    let third = unique_name("patient");
    let f3 = c.write_file("third.toml", &hog(&third, share));
    std::thread::scope(|s| {
        let run = s.spawn(|| c.cli(&["job", "run", f3.to_str().unwrap(), "--wait", "60"]));
        poll_until("the third job to be queued", WAIT, || {
            // Not found until `job run` has submitted it.
            let out = c.cli(&["job", "status", &third, "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["pending"].as_array()?.len() == 1).then_some(())
        });
        c.cli_ok(&["job", "stop", &second]);
        let out = run.join().expect("job run thread");
        assert!(
            out.status.success(),
            "job run --wait failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    wait_running(&c, &third, 1);
    c.cli_ok(&["job", "stop", &third]);
}
