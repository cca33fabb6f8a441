//! `drover dev --cleanup`: after `drover dev` was stopped (its tasks keep
//! running, as a node's do when its agent stops), it stops those tasks and
//! removes the bridge, the allocations' namespaces and veths and the
//! firewall table, so a laptop is left as it was.
//! Build the binary first: `cargo build -p drover-cli`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use drover_tests::checks::{service, task_pids, wait_running, WAIT};
use drover_tests::{poll_until, run_drover, unique_name, DevCluster};

/// Whether link `name` exists on the host.
fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .expect("ip (iproute2)")
        .status
        .success()
}

/// The names of the host's nftables tables.
fn nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft (nftables)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cleanup_after_dev_stopped_removes_its_tasks_and_networking() {
    let mut c = DevCluster::start();
    let job = unique_name("left");
    let file = c.write_file("left.toml", &service(&job, 1, "exec sleep 3600"));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let pid = task_pids(&wait_running(&c, &job, 1))[0];
    let node = c.cli_json(&["node", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let table = format!("drover-{node}");
    assert!(nft_tables().contains(&table), "{}", nft_tables());

    c.stop();
    // Stopping drover dev leaves the task and the node's networking.
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
    assert!(link_exists(c.bridge()));

    let data_dir = c.data_dir().display().to_string();
    let cgroup_parent = c.cgroup_parent();
    let out = run_drover(&[
        "dev",
        "--cleanup",
        "--data-dir",
        &data_dir,
        "--bridge",
        c.bridge(),
        "--subnet",
        c.subnet(),
        "--cgroup-parent",
        &cgroup_parent,
    ]);
    assert!(
        out.status.success(),
        "drover dev --cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!link_exists(c.bridge()), "the bridge {} stayed", c.bridge());
    assert!(!nft_tables().contains(&table), "{}", nft_tables());
    poll_until(&format!("task pid {pid} to end"), WAIT, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .is_err()
            .then_some(())
    });
}
