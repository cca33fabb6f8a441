//! Garbage collection of finished allocations on the node, through the real
//! `drover dev`: a finished allocation's files (logs, state, overlay upper
//! dir) stay for `--keep-finished` seconds, so `drover logs` works on it,
//! then are removed; a running allocation is never touched, and a
//! collected one is not run again, even by a restarted agent.
//! Build the binary first: `cargo build -p drover-cli`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use drover_tests::checks::{agent_converged, batch, service, str_of, wait_running, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster, DEV_LOG};

#[test]
fn finished_allocations_are_kept_for_a_while_then_removed() {
    let keep = Duration::from_secs(3);
    let c = DevCluster::start_with(&["--keep-finished", "3"]);
    let long = unique_name("keeps");
    let file = c.write_file("long.toml", &service(&long, 1, "exec sleep 3600"));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    wait_running(&c, &long, 1);
    let running_dirs = c.task_dirs();
    assert_eq!(running_dirs.len(), 1, "{running_dirs:?}");

    let job = unique_name("gc");
    let file = c.write_file("gc.toml", &batch(&job, "echo from-the-batch"));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let done = poll_until("the batch job to complete", WAIT, || {
        let j = c.cli_json(&["job", "status", &job]);
        (str_of(&j, "status") == "complete").then_some(Instant::now())
    });
    // Kept at first: its logs can still be read.
    let dirs = c.task_dirs();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let out = c.cli_ok(&["logs", &job]);
    assert_eq!(out, "from-the-batch\n");

    let finished: Vec<_> = dirs
        .into_iter()
        .filter(|d| !running_dirs.contains(d))
        .collect();
    poll_until(
        "the finished allocation's files to be removed",
        keep + WAIT,
        || (!finished[0].exists()).then_some(()),
    );
    assert!(
        done.elapsed() >= keep - Duration::from_millis(500),
        "removed after {:?}, before --keep-finished",
        done.elapsed()
    );
    // The allocation directory went with its last task.
    let alloc_dir = finished[0].parent().unwrap();
    assert!(!alloc_dir.exists(), "{} is left", alloc_dir.display());
    let out = c.cli(&["logs", &job]);
    assert!(!out.status.success(), "logs of a collected allocation");

    // The running allocation was never touched.
    assert_eq!(c.task_dirs(), running_dirs);
    wait_running(&c, &long, 1);

    // The scheduler still lists the finished allocation: neither the agent
    // nor a restarted agent runs it again, and its status stays complete.
    let mut c = c;
    c.kill9_and_restart();
    // Once a job submitted after the restart has run, the new agent has
    // acted on its whole assignment list, the collected batch included.
    let sentinel = agent_converged(&c);
    wait_running(&c, &long, 1);
    let dirs: Vec<_> = c
        .task_dirs()
        .into_iter()
        .filter(|d| !d.to_string_lossy().contains(&sentinel))
        .collect();
    assert_eq!(dirs, running_dirs, "the collected batch ran again");
    // Its files may have been collected again since: the log says whether
    // any agent started it more than once.
    let batch_alloc = alloc_dir.file_name().unwrap().to_string_lossy().to_string();
    let log = std::fs::read_to_string(c.data_dir().join(DEV_LOG)).unwrap();
    let starts: Vec<&str> = log
        .lines()
        // The executor's line (the scheduler logs a Started event too).
        .filter(|l| l.contains("executor: task started") && l.contains(&batch_alloc))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "the collected batch {batch_alloc} started {} times:\n{}",
        starts.len(),
        starts.join("\n")
    );
    let j = c.cli_json(&["job", "status", &job]);
    assert_eq!(str_of(&j, "status"), "complete", "{j}");
}
