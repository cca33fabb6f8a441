//! Rescheduling through the real `drover dev` (issue #13 point 4): a
//! command that always fails, with no node-local restarts, is replaced
//! after delays that grow as its policy says, and no more once its
//! attempts are used up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use drover_tests::checks::{arr, int_of, str_of, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// The policy under test: 300 ms doubling up to 1200 ms, 4 attempts.
const DELAYS_MS: [i64; 4] = [300, 600, 1_200, 1_200];

fn job_file(name: &str) -> String {
    format!(
        r#"name = "{name}"
[[group]]
name = "main"
restart = {{ attempts = 0 }}
reschedule = {{ delay_ms = 300, max_delay_ms = 1200, attempts = 4, interval_ms = 3600000 }}
[[group.task]]
name = "app"
command = ["/bin/false"]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 16 }}
"#
    )
}

/// The job's allocations, oldest first.
fn allocs_by_age(job: &Value) -> Vec<Value> {
    let mut v = arr(&job["allocations"]).clone();
    v.sort_by_key(|a| int_of(a, "created_unix_ms"));
    v
}

#[test]
fn a_command_that_always_fails_is_rescheduled_with_growing_delays_then_given_up() {
    let c = DevCluster::start();
    let name = unique_name("flaky");
    let file = c.write_file("flaky.toml", &job_file(&name));
    let _ = c.cli(&["job", "run", "--detach", file.to_str().unwrap()]);

    // The original and its 4 replacements, the last failed for good.
    let job = poll_until("the attempts to be used up", WAIT * 2, || {
        let j = c.cli_json(&["job", "status", &name]);
        let all = allocs_by_age(&j);
        let last = all.last()?;
        (all.len() == 5 && str_of(last, "not_rescheduled") == "attempts exhausted").then_some(j)
    });
    let all = allocs_by_age(&job);
    let created: Vec<i64> = all.iter().map(|a| int_of(a, "created_unix_ms")).collect();
    let gaps: Vec<i64> = created.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between allocations (ms): {gaps:?}, policy delays {DELAYS_MS:?}");
    for (k, pair) in all.windows(2).enumerate() {
        let (old, new) = (&pair[0], &pair[1]);
        // The lineage: each replaces the one before, attempt by attempt.
        assert_eq!(str_of(new, "previous_alloc"), str_of(old, "id"), "{job}");
        assert_eq!(int_of(new, "reschedule_attempt"), k as i64 + 1, "{job}");
        assert_eq!(str_of(old, "replaced_by"), str_of(new, "id"), "{job}");
        assert_eq!(
            (str_of(old, "desired"), str_of(old, "status")),
            ("stop", "failed"),
            "{job}"
        );
        // Never sooner than the policy's delay for that attempt, which
        // doubles up to its ceiling: the gaps grow with the delays.
        let gap = int_of(new, "created_unix_ms") - int_of(old, "created_unix_ms");
        assert!(
            gap >= DELAYS_MS[k],
            "attempt {} came {gap} ms after the previous allocation, before its delay of {} ms: {job}",
            k + 1,
            DELAYS_MS[k]
        );
        let due = int_of(new, "reschedule_eligible_unix_ms");
        assert!(
            due - int_of(old, "created_unix_ms") >= DELAYS_MS[k],
            "{job}"
        );
        assert!(
            int_of(new, "created_unix_ms") >= due,
            "placed before it was due: {job}"
        );
    }
    let last = all.last().unwrap();
    assert_eq!(str_of(last, "desired"), "run", "{job}");
    assert_eq!(int_of(last, "reschedule_unix_ms"), 0, "{job}");

    // People see it: the job names the exhausted instance, the allocation
    // its attempt and what it replaces.
    let table = c.cli_ok(&["job", "status", &name]);
    assert!(
        table.contains("not rescheduled: attempts exhausted"),
        "{table}"
    );
    let last_id = str_of(last, "id");
    let detail = c.cli_ok(&["alloc", "status", last_id]);
    let prev = &str_of(&all[3], "id")[..8];
    assert!(
        detail.contains(&format!("reschedule attempt 4, replaces {prev}")),
        "{detail}"
    );

    // And it stops: over several times the longest delay (and a reconcile
    // pass), no new allocation.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let j = c.cli_json(&["job", "status", &name]);
        assert_eq!(
            arr(&j["allocations"]).len(),
            5,
            "rescheduled past its attempts: {j}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
