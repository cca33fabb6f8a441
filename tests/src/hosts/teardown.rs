//! Tearing a [`MultiHost`] down, also while a test panics.

use std::time::Duration;

use super::procs::{self, kill_child, stop_child};
use super::{tail, MultiHost, KILL_WAIT, TERM_GRACE};

impl Drop for MultiHost {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let mut problems = Vec::new();
        for h in &mut self.hosts {
            if let Some(mut c) = h.agent.take() {
                kill_child(&mut c);
            }
        }
        if let Some(mut c) = self.scheduler.take() {
            stop_child(&mut c, TERM_GRACE);
        }
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                stop_child(&mut c, TERM_GRACE);
            }
        }
        let cgroups = self.cgroup_parents();
        let survivors = procs::kill_leftovers(&self.root, &cgroups, self.since, KILL_WAIT);
        if !survivors.is_empty() {
            problems.push(format!("processes survived SIGKILL: {survivors:?}"));
        }
        self.store_stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        if failing {
            let mut report = String::new();
            for h in &self.hosts {
                report.push_str(&format!(
                    "--- agent h{} ({}) log, last 40 lines:\n{}\n",
                    h.index,
                    h.node_id,
                    tail(&h.log, 40)
                ));
            }
            report.push_str(&self.replica_logs(60));
            report.push_str(&format!(
                "--- scheduler log, last 60 lines:\n{}\n--- CLI commands run:\n{}\n---",
                self.scheduler_log(60),
                self.history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n")
            ));
            eprintln!("{report}");
        }
        // Close our handles first: a namespace lives while any fd holds it.
        for h in &mut self.hosts {
            h.netns = None;
        }
        self.switch = None;
        self.control = None;
        if let Err(e) = self.netns_dir.remove_all() {
            problems.push(format!("removing the test namespaces: {e}"));
        }
        // Allocation namespaces live under /run, per agent data directory.
        for h in &self.hosts {
            let dir = drover_agent::net::wiring::netns_dir_for(&h.data_dir);
            let mut mounted = procs::unmount_under(&dir);
            if let Some(run_dir) = dir.parent() {
                mounted.extend(procs::unmount_under(run_dir));
                if let Err(e) = std::fs::remove_dir_all(run_dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("removing {}: {e}", run_dir.display()));
                    }
                }
            }
            if !mounted.is_empty() {
                problems.push(format!("still mounted: {mounted:?}"));
            }
        }
        let mounted = procs::unmount_under(&self.root);
        if !mounted.is_empty() {
            problems.push(format!("still mounted: {mounted:?}"));
        }
        for c in &cgroups {
            let left = crate::procs::remove_cgroup_tree(c);
            if !left.is_empty() {
                problems.push(format!("cgroups not removed: {left:?}"));
            }
        }
        if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                problems.push(format!("removing {}: {e}", self.root.display()));
            }
        }
        if !problems.is_empty() {
            let msg = format!(
                "multi-host harness left things behind: {}",
                problems.join("; ")
            );
            if failing {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}
