//! End-to-end tests of periodic batch jobs on `drover dev` (issue 13,
//! point 6): a job every 10 s (a cron with a seconds field) launches
//! children `<job>/periodic-<unix>` that run and complete, visible in
//! `drover job list` with their parent; `drover job periodic force`
//! launches one at once; stopping the parent stops the launching; bad
//! schedules are refused at submission with the field named.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test periodic_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::checks::{arr, assert_refusal, str_of, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// Two ticks 10 s apart, plus the children's run and a slow machine.
const TWO_TICKS: Duration = Duration::from_secs(90);

/// A batch job file with `periodic = { PERIODIC }` and one task `true`.
fn periodic_job(name: &str, kind: &str, periodic: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "{kind}"
periodic = {{ {periodic} }}

[[group]]
name = "main"

[[group.task]]
name = "run"
command = ["true"]
resources = {{ cpu_millis = 50, memory_mb = 16 }}
"#
    )
}

/// The jobs of `drover job list` whose parent is `parent`.
fn children(c: &DevCluster, parent: &str) -> Vec<Value> {
    arr(&c.cli_json(&["job", "list"]))
        .iter()
        .filter(|j| j["parent"] == parent)
        .cloned()
        .collect()
}

fn complete(children: &[Value]) -> Vec<String> {
    children
        .iter()
        .filter(|j| j["status"] == "complete")
        .map(|j| str_of(j, "name").to_string())
        .collect()
}

#[test]
fn bad_schedules_are_refused_with_the_field_named() {
    let c = DevCluster::start();
    let name = unique_name("cron");
    let cases = [
        ("batch", r#"cron = "* * * * * *""#, "periodic.cron"),
        ("batch", r#"cron = "0 0 30 2 *""#, "never fires"),
        ("batch", r#"cron = "every day""#, "periodic.cron"),
        (
            "batch",
            r#"cron = "0 * * * *", time_zone = "Mars/Olympus""#,
            "periodic.time_zone",
        ),
        ("service", r#"cron = "0 * * * *""#, "only batch jobs"),
    ];
    for (kind, periodic, expect) in cases {
        let file = c.write_file("bad.toml", &periodic_job(&name, kind, periodic));
        let out = c.cli(&["job", "run", file.to_str().unwrap()]);
        assert_refusal(periodic, &out, &[expect]);
    }
    // Nothing was stored.
    let jobs = c.cli_json(&["job", "list"]);
    assert!(
        arr(&jobs).iter().all(|j| j["name"] != name.as_str()),
        "{jobs}"
    );
}

#[test]
fn periodic_job_runs_twice_and_force_launches_at_once() {
    let c = DevCluster::start();
    let job = unique_name("tick");
    let file = c.write_file(
        "tick.toml",
        &periodic_job(
            &job,
            "batch",
            r#"cron = "*/10 * * * * *", time_zone = "Europe/Berlin", prohibit_overlap = true"#,
        ),
    );
    // The parent is accepted and places nothing itself.
    let got = c.cli_json(&["job", "run", file.to_str().unwrap()]);
    assert_eq!(str_of(&got, "status"), "running", "{got}");
    assert!(arr(&got["allocations"]).is_empty(), "{got}");
    assert_eq!(got["periodic"]["cron"], "*/10 * * * * *", "{got}");
    assert!(
        got["periodic"]["next_tick_unix"].as_i64().unwrap() > 0,
        "{got}"
    );

    // Two children run to completion, listed with their parent.
    let done = poll_until("two periodic children complete", TWO_TICKS, || {
        let done = complete(&children(&c, &job));
        (done.len() >= 2).then_some(done)
    });
    let prefix = format!("{job}/periodic-");
    for name in &done {
        let tick: i64 = name
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("child {name:?} not named {prefix}<unix>"))
            .parse()
            .unwrap();
        assert_eq!(tick % 10, 0, "{name} is not on a 10 s tick");
        // The CLI names a child; its allocations ran `true` to the end.
        let status = c.cli_json(&["job", "status", name]);
        assert_eq!(str_of(&status, "parent"), job, "{status}");
        assert_eq!(str_of(&status, "kind"), "batch", "{status}");
        let allocs = arr(&status["allocations"]);
        assert_eq!(allocs.len(), 1, "{status}");
        assert_eq!(str_of(&allocs[0], "status"), "complete", "{status}");
        assert_eq!(str_of(&allocs[0], "name"), format!("{name}.main[0]"));
    }
    let parent = c.cli_json(&["job", "status", &job]);
    assert!(arr(&parent["allocations"]).is_empty(), "{parent}");
    assert!(
        parent["periodic"]["last_tick_unix"].as_i64().unwrap() > 0,
        "{parent}"
    );
    // The launch state is a record of its own in the store.
    let keys = c.store_keys(&format!("/drover/periodic/{job}"));
    assert_eq!(keys.len(), 1, "{keys:?}");

    // Force: the child exists when the command returns, and completes.
    let forced = c.cli_json(&["job", "periodic", "force", &job]);
    let child = str_of(&forced, "child").to_string();
    assert!(child.starts_with(&prefix), "{forced}");
    assert!(
        children(&c, &job)
            .iter()
            .any(|j| j["name"] == child.as_str()),
        "{child} not listed right after force"
    );
    poll_until("the forced child completes", WAIT, || {
        let s = c.cli_json(&["job", "status", &child]);
        (s["status"] == "complete").then_some(())
    });

    // Stopping the parent stops the launching: no next tick, and force is
    // refused.
    c.cli_ok(&["job", "stop", &job]);
    let parent = c.cli_json(&["job", "status", &job]);
    assert_eq!(str_of(&parent, "status"), "stopped", "{parent}");
    assert_eq!(parent["periodic"]["next_tick_unix"], 0, "{parent}");
    let out = c.cli(&["job", "periodic", "force", &job]);
    assert_refusal("force of a stopped job", &out, &["stopped"]);
    // A job that is not periodic cannot be forced.
    let out = c.cli(&["job", "periodic", "force", "no-such-job"]);
    assert_refusal("force of an unknown job", &out, &["no job named"]);
}
