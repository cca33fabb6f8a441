//! What a job's allocations make of its status, as `drover job list` and
//! `job status` show it: pure, no I/O.
//!
//! The stored [`JobStatus`] is the job's lifecycle (running until stopped,
//! or until a batch job ends); people need to know whether what it wants
//! runs. So a running job is shown as:
//!
//! - `running`: every wanted instance runs (for a batch job: runs or has
//!   completed);
//! - `degraded`: some do, not all;
//! - `failed`: none does, and at least one failed (or was lost) and has
//!   no replacement yet;
//! - `pending`: none does yet, none failed (placing, starting, or waiting
//!   for capacity).
//!
//! A stopped job is `stopped`; a finished batch job `complete` or
//! `failed`; a periodic parent, which places nothing itself, `running`.

use drover_model::{CheckStatus, JobKind};

use crate::state::{AllocRecord, AllocStatus, DesiredState, JobRecord, JobStatus};

/// A job's status and instance counts, as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHealth {
    /// `pending`, `running`, `degraded`, `failed`, `complete` or `stopped`.
    pub status: &'static str,
    /// Instances running.
    pub running: u32,
    /// Instances running whose health checks all pass.
    pub healthy: u32,
    /// Instances wanted.
    pub desired: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The health of `job` whose allocations are `allocs` (others' are
/// ignored).
pub fn job_health(job: &JobRecord, allocs: &[AllocRecord]) -> JobHealth {
    let spec = &job.spec;
    // The instances wanted now: not asked to stop, not replaced.
    let live: Vec<&AllocRecord> = allocs
        .iter()
        .filter(|a| a.job == spec.name)
        .filter(|a| a.desired == DesiredState::Run && a.reschedule.replaced_by.is_empty())
        .collect();
    let running: Vec<&&AllocRecord> = live
        .iter()
        .filter(|a| a.status == AllocStatus::Running)
        .collect();
    let healthy = running
        .iter()
        .filter(|a| a.checks.iter().all(|c| c.status == CheckStatus::Passing))
        .count();
    let desired = if spec.periodic.is_some() {
        // A periodic parent places nothing itself: its children do.
        0
    } else if spec.kind == JobKind::System {
        // One per eligible node: as many as are placed.
        count(live.len())
    } else {
        spec.groups.iter().map(|g| g.count).sum()
    };
    let completed = if spec.kind == JobKind::Batch {
        live.iter()
            .filter(|a| a.status == AllocStatus::Complete)
            .count()
    } else {
        0
    };
    let satisfied = count(running.len() + completed);
    let failed = live
        .iter()
        .any(|a| matches!(a.status, AllocStatus::Failed | AllocStatus::Lost));
    let status = match job.status {
        JobStatus::Stopped => "stopped",
        JobStatus::Complete => "complete",
        JobStatus::Failed => "failed",
        JobStatus::Running if desired == 0 || satisfied >= desired => "running",
        JobStatus::Running if satisfied > 0 => "degraded",
        JobStatus::Running if failed => "failed",
        JobStatus::Running => "pending",
    };
    JobHealth {
        status,
        running: count(running.len()),
        healthy: count(healthy),
        desired,
    }
}

#[cfg(test)]
mod tests {
    use drover_model::{CheckKind, CheckState};

    use super::*;
    use crate::testkit::{alloc, job};

    fn record(kind: &str, count: u32, status: JobStatus) -> JobRecord {
        JobRecord {
            spec: job(kind, count, "true"),
            status,
            version: 1,
            submitted_unix_ms: 0,
            pending: Vec::new(),
        }
    }

    fn allocs(statuses: &[AllocStatus]) -> Vec<AllocRecord> {
        statuses
            .iter()
            .enumerate()
            .map(|(i, s)| alloc(&format!("a{i}"), count(i), "n1", *s))
            .collect()
    }

    use AllocStatus::{Complete, Failed, Lost, Pending, Running};

    #[test]
    fn a_service_job_is_as_running_as_its_instances() {
        let j = record("service", 2, JobStatus::Running);
        let status = |s: &[AllocStatus]| job_health(&j, &allocs(s)).status;
        assert_eq!(status(&[Running, Running]), "running");
        assert_eq!(status(&[Running, Failed]), "degraded");
        assert_eq!(status(&[Running, Pending]), "degraded");
        assert_eq!(status(&[Failed]), "failed");
        assert_eq!(status(&[Lost, Pending]), "failed");
        assert_eq!(status(&[Pending, Pending]), "pending");
        assert_eq!(status(&[]), "pending");
        let h = job_health(&j, &allocs(&[Running, Failed]));
        assert_eq!((h.running, h.healthy, h.desired), (1, 1, 2));
    }

    #[test]
    fn replaced_and_stopping_allocations_are_not_wanted_instances() {
        let j = record("service", 1, JobStatus::Running);
        let mut a = allocs(&[Failed, Pending]);
        a[0].reschedule.replaced_by = "a1".into();
        a[1].index = 0;
        assert_eq!(job_health(&j, &a).status, "pending");
        a[1].status = Running;
        assert_eq!(job_health(&j, &a).status, "running");
        a[1].desired = DesiredState::Stop;
        assert_eq!(job_health(&j, &a).status, "pending");
    }

    #[test]
    fn healthy_counts_running_instances_whose_checks_pass() {
        let j = record("service", 2, JobStatus::Running);
        let mut a = allocs(&[Running, Running]);
        let check = |status| CheckState {
            service: "web".into(),
            index: 0,
            kind: CheckKind::Tcp,
            status,
            output: String::new(),
            last_unix_ms: 0,
        };
        a[0].checks = vec![check(CheckStatus::Passing)];
        a[1].checks = vec![check(CheckStatus::Critical)];
        let h = job_health(&j, &a);
        assert_eq!((h.status, h.running, h.healthy), ("running", 2, 1));
    }

    #[test]
    fn batch_instances_that_completed_count_and_lifecycle_ends_win() {
        let j = record("batch", 2, JobStatus::Running);
        assert_eq!(
            job_health(&j, &allocs(&[Complete, Running])).status,
            "running"
        );
        assert_eq!(
            job_health(&j, &allocs(&[Complete, Failed])).status,
            "degraded"
        );
        let done = record("batch", 2, JobStatus::Complete);
        assert_eq!(
            job_health(&done, &allocs(&[Complete, Complete])).status,
            "complete"
        );
        let stopped = record("service", 2, JobStatus::Stopped);
        assert_eq!(job_health(&stopped, &allocs(&[Running])).status, "stopped");
        let failed = record("batch", 1, JobStatus::Failed);
        assert_eq!(job_health(&failed, &allocs(&[Failed])).status, "failed");
    }
}
