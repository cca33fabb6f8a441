//! End-to-end tests of the minimal init that is PID 1 of every task
//! (unless the task says `init = false`): it forwards the stop signal to a
//! shell-wrapped command, which then ends at once instead of at the kill
//! timeout, and it reaps orphans that the task's own process never waits
//! for.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test init_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use drover_tests::checks::{edit, service, str_of, task_pids, wait_running, WAIT};
use drover_tests::{poll_until, DevCluster};
use serde_json::Value;

/// The kill timeout of the stop test: far above what forwarding takes, so
/// that a stop that waited for it cannot pass for a forwarded one.
const KILL_TIMEOUT_MS: u64 = 60_000;

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `job stop` of `/bin/sh -c 'sleep 1000'` with a 60 s kill timeout: the
/// init forwards SIGTERM to the shell, which (not being PID 1) dies of it;
/// the stop returns long before the kill timeout, and the task's recorded
/// end is SIGTERM (15), not the SIGKILL (9) a timeout would have sent.
#[test]
fn job_stop_of_a_shell_wrapped_task_is_forwarded_not_timed_out() {
    let c = DevCluster::start();
    let spec = edit(
        &service("stopme", 1, "sleep 1000"),
        "kill_timeout_ms = 200",
        &format!("kill_timeout_ms = {KILL_TIMEOUT_MS}"),
    );
    let job = c.write_file("stopme.toml", &spec);
    c.cli_ok(&["job", "run", job.to_str().unwrap()]);
    let status = wait_running(&c, "stopme", 1);
    let pid = task_pids(&status)[0];
    assert_eq!(comm(pid), "drover-init", "the task's PID 1 is not the init");
    let alloc = str_of(&status["allocations"][0], "id").to_string();

    let started = Instant::now();
    c.cli_ok(&["job", "stop", "stopme"]);
    let took = started.elapsed();
    eprintln!(
        "job stop of /bin/sh -c 'sleep 1000' under the init: {:.1} ms (kill timeout {} s)",
        took.as_secs_f64() * 1000.0,
        KILL_TIMEOUT_MS / 1000
    );
    assert!(
        took < Duration::from_millis(KILL_TIMEOUT_MS / 2),
        "the stop took {took:?}: it waited for the kill timeout"
    );
    let task = poll_until("the task's recorded end", WAIT, || {
        let a = c.cli_json(&["alloc", "status", &alloc]);
        let t = a["tasks"][0].clone();
        (t["signal"].is_i64() || t["exit_code"].is_i64()).then_some(t)
    });
    assert_eq!(
        task["signal"].as_i64(),
        Some(15),
        "the task did not end by the forwarded SIGTERM: {task}"
    );
}

/// Every process of the PID namespace of the task whose host pid is
/// `pid`, with its state letter (`Z` for a zombie).
fn namespace_processes(pid: i32) -> Vec<(i32, char)> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .unwrap_or('?');
        out.push((p, state));
    }
    out
}

/// A task whose own process (`exec sleep`) never waits for anything,
/// with one orphan that, once the task is `sleep` (so that the shell
/// cannot reap it first), prints a line and exits.
fn orphan_job(name: &str, init: bool) -> String {
    let spec = service(
        name,
        1,
        "(sh -c 'until cat /proc/1/comm /proc/2/comm 2>/dev/null | grep -qx sleep; \
         do sleep 0.05; done; echo orphan $$' &); exec sleep 1000",
    );
    if init {
        spec
    } else {
        edit(
            &spec,
            "kill_timeout_ms = 200",
            "kill_timeout_ms = 200\ninit = false",
        )
    }
}

fn run_orphan_job(c: &DevCluster, name: &str, init: bool) -> i32 {
    let job = c.write_file(&format!("{name}.toml"), &orphan_job(name, init));
    c.cli_ok(&["job", "run", job.to_str().unwrap()]);
    let status: Value = wait_running(c, name, 1);
    let pid = task_pids(&status)[0];
    poll_until(&format!("{name}'s orphan has run"), WAIT, || {
        c.cli_ok(&["logs", name]).contains("orphan").then_some(())
    });
    pid
}

/// The orphan exits and is re-parented to PID 1. Under the init it is
/// reaped: the namespace comes down to the init and the task, with no
/// zombie. With `init = false`, PID 1 is `sleep`, which never waits: the
/// zombie stays (the same check would fail without the init).
#[test]
fn the_init_reaps_orphaned_zombies_and_init_false_does_not() {
    let c = DevCluster::start();
    let with_init = run_orphan_job(&c, "reaped", true);
    assert_eq!(comm(with_init), "drover-init");
    let procs = poll_until("the orphan reaped by the init", WAIT, || {
        let procs = namespace_processes(with_init);
        (procs.len() == 2 && procs.iter().all(|(_, s)| *s != 'Z')).then_some(procs)
    });
    let comms: Vec<String> = procs.iter().map(|(p, _)| comm(*p)).collect();
    assert!(
        comms.contains(&"drover-init".to_string()) && comms.contains(&"sleep".to_string()),
        "{comms:?}"
    );

    let without = run_orphan_job(&c, "zombie", false);
    assert_eq!(
        comm(without),
        "sleep",
        "with init = false the task is PID 1"
    );
    poll_until(
        "the orphan's zombie under a PID 1 that never waits",
        WAIT,
        || {
            namespace_processes(without)
                .iter()
                .any(|(_, s)| *s == 'Z')
                .then_some(())
        },
    );
}
