//! Checks shared by the e2e tests of a [`DevCluster`]: job files to submit,
//! accessors for the CLI's `-o json` output that fail loudly, waiting for
//! allocations to run, snapshots of what a refused request must leave
//! untouched, and the shape of a refusal on the command line.
//!
//! Everything here panics with the offending value instead of returning
//! errors: these are assertions for tests.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::{poll_until, DevCluster};

/// Generous bound for conditions that normally hold within a second.
pub const WAIT: Duration = Duration::from_secs(20);

/// A service job file with one group `main` of `count` instances of one
/// task `app` running `/bin/sh -c script`, stopped quickly.
pub fn service(name: &str, count: u32, script: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
count = {count}

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 16 }}
"#
    )
}

/// A batch job file with one task `app` in group `main` running
/// `/bin/sh -c script` once, stopped quickly, with 50 millicores and 16 MiB.
pub fn batch(name: &str, script: &str) -> String {
    batch_with(
        name,
        script,
        "resources = { cpu_millis = 50, memory_mb = 16 }",
    )
}

/// [`batch`] with `task` (more keys of the task table) in place of its
/// resources.
pub fn batch_with(name: &str, script: &str, task: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "batch"

[[group]]
name = "main"

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
{task}
"#
    )
}

/// `text` with `from` replaced by `to`, which must occur.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the job file");
    text.replacen(from, to, 1)
}

/// `v` as an array; panics with `v` otherwise.
pub fn arr(v: &Value) -> &Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array: {v}"))
}

/// `v[field]` as a string; panics otherwise.
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// `v[field]` as an integer; panics otherwise.
pub fn int_of(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not an integer in {v}"))
}

/// The host pid of each allocation's first task, from `job status`/`run`.
///
/// # Panics
///
/// When a task is not running.
pub fn task_pids(job: &Value) -> Vec<i32> {
    arr(&job["allocations"])
        .iter()
        .map(|a| {
            let t = &arr(&a["tasks"])[0];
            assert_eq!(str_of(t, "state"), "running", "task not running: {a}");
            i32::try_from(int_of(t, "pid")).expect("pid fits in i32")
        })
        .collect()
}

/// Polls `job status` until the job has `n` allocations, each running with
/// all its tasks running; returns that status.
pub fn wait_running(c: &DevCluster, job: &str, n: usize) -> Value {
    poll_until(&format!("{n} running allocations of {job}"), WAIT, || {
        let s = c.cli_json(&["job", "status", job]);
        let allocs = s["allocations"].as_array()?;
        let all = allocs.len() == n
            && allocs.iter().all(|a| {
                a["status"] == "running"
                    && a["tasks"].as_array().is_some_and(|ts| {
                        ts.iter()
                            .all(|t| t["state"] == "running" && t["pid"].as_i64() > Some(0))
                    })
            });
        all.then_some(s)
    })
}

/// Proof that the dev agent has acted on everything assigned to it so far:
/// submits a one-shot batch job (network `none`) and waits until it completed. An agent
/// converges on its node's whole assignment list in one pass before it
/// reports anything, so once this job has run, every allocation assigned
/// before it was adopted, started, stopped or left alone. Returns the
/// sentinel's allocation id, so that callers can leave its files out of
/// what they compare.
pub fn agent_converged(c: &DevCluster) -> String {
    let name = crate::unique_name("sync");
    // No network: the sentinel leaves no veth or address behind for
    // callers that count them.
    let job = edit(
        &batch(&name, "true"),
        "name = \"main\"\n",
        "name = \"main\"\nnetwork = \"none\"\n",
    );
    let file = c.write_file(&format!("{name}.toml"), &job);
    c.cli_ok(&["job", "run", file.to_str().expect("a UTF-8 temp path")]);
    let job = poll_until(&format!("sentinel job {name} to complete"), WAIT, || {
        let j = c.cli_json(&["job", "status", &name]);
        (j["status"] == "complete").then_some(j)
    });
    alloc_ids(&job)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("sentinel job {name} has no allocation: {job}"))
}

/// The ids of a `job status`/`job run` JSON's allocations.
pub fn alloc_ids(job: &Value) -> BTreeSet<String> {
    arr(&job["allocations"])
        .iter()
        .map(|a| str_of(a, "id").to_owned())
        .collect()
}

/// What a refused request must leave untouched: the CLI's views of jobs and
/// allocations and the store's job and allocation keys (with revisions for
/// jobs, whose records only change on submit and stop).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// `drover job list -o json`.
    pub jobs: Value,
    /// `(id, desired, status)` of every allocation.
    pub allocs: Vec<(String, String, String)>,
    /// Keys under `/drover/jobs/` with their mod revisions.
    pub job_keys: Vec<(String, i64)>,
    /// Keys under `/drover/allocs/`.
    pub alloc_keys: Vec<String>,
}

/// Takes a [`Snapshot`] of `c`.
pub fn snapshot(c: &DevCluster) -> Snapshot {
    let allocs = arr(&c.cli_json(&["alloc", "list"]))
        .iter()
        .map(|a| {
            (
                str_of(a, "id").to_owned(),
                str_of(a, "desired").to_owned(),
                str_of(a, "status").to_owned(),
            )
        })
        .collect();
    Snapshot {
        jobs: c.cli_json(&["job", "list"]),
        allocs,
        job_keys: c.store_keys("/drover/jobs/"),
        alloc_keys: c
            .store_keys("/drover/allocs/")
            .into_iter()
            .map(|(k, _)| k)
            .collect(),
    }
}

/// Checks the shape of a refusal: non-zero exit, nothing on stdout, exactly
/// one `error:` message on stderr, containing every `expect`ed fragment.
pub fn assert_refusal(what: &str, out: &Output, expect: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{what}: exited 0; stderr: {stderr}");
    assert!(
        stdout.trim().is_empty(),
        "{what}: printed to stdout: {stdout}"
    );
    assert!(stderr.starts_with("error: "), "{what}: stderr: {stderr}");
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "{what}: more than one message: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    for e in expect {
        assert!(stderr.contains(e), "{what}: {e:?} not in: {stderr}");
    }
    stderr
}
