//! Pure transitions of the stored records: what a submission, a stop, an
//! agent's status report, a lost node, a finished batch job, a registration
//! or a drain make of them, and which allocations a node should hold.
//!
//! No I/O and no clock: the caller ([`crate::cluster`]) reads the records,
//! passes the time, and writes what comes back in one guarded transaction.
//! Functions over many allocations return the changed ones with their
//! position in the input, so the caller can guard each write with the
//! revision it read.

use std::collections::{BTreeMap, BTreeSet};

use crate::job::{GroupSpec, JobKind, JobSpec};
use crate::placement::Placement;
use crate::state::{
    AllocRecord, AllocStatus, DesiredState, JobRecord, JobStatus, NodeRecord, NodeStatus,
    TaskStateRecord,
};
use drover_model::Ipv4Net;

/// Allocations that changed: position in the input and the new record.
pub type Changed = Vec<(usize, AllocRecord)>;

/// The job record after submitting `spec` over `current`, the stored job if
/// any, and whether it must be written. Resubmitting the running spec
/// changes nothing; any other submission bumps the version.
pub fn submit(current: Option<&JobRecord>, spec: &JobSpec, now: i64) -> (JobRecord, bool) {
    let running = current.filter(|j| j.status == JobStatus::Running);
    let unchanged = running.is_some_and(|j| &j.spec == spec);
    let version = match (current, unchanged) {
        (Some(j), true) => j.version,
        (Some(j), false) => j.version + 1,
        (None, _) => 1,
    };
    let record = JobRecord {
        spec: spec.clone(),
        status: JobStatus::Running,
        version,
        submitted_unix_ms: if unchanged {
            running.map(|j| j.submitted_unix_ms).unwrap_or(0)
        } else {
            now
        },
        // What waits stays recorded (with its `since`) until the caller
        // has planned the job: see `crate::queue::pending_after`.
        pending: running.map(|j| j.pending.clone()).unwrap_or_default(),
    };
    (record, !unchanged)
}

/// The record of a new allocation `id` for placement `p` of `job` at
/// `version`.
pub fn new_alloc(id: String, job: &str, version: u64, p: &Placement, now: i64) -> AllocRecord {
    AllocRecord {
        name: format!("{job}.{}[{}]", p.group, p.index),
        id,
        job: job.to_string(),
        group: p.group.clone(),
        index: p.index,
        node_id: p.node_id.clone(),
        desired: DesiredState::Run,
        status: AllocStatus::Pending,
        tasks: Vec::new(),
        job_version: version,
        resources: p.resources,
        created_unix_ms: now,
        modified_unix_ms: now,
        ip: String::new(),
        checks: Vec::new(),
        reschedule: Default::default(),
    }
}

/// An allocation a plan stops: desired stop, its node stops it.
pub fn stop_alloc(a: &AllocRecord, now: i64) -> AllocRecord {
    AllocRecord {
        desired: DesiredState::Stop,
        modified_unix_ms: now,
        ..a.clone()
    }
}

/// What stopping a job changes.
#[derive(Debug, Default)]
pub struct JobStop {
    /// The job record, when its status changes.
    pub job: Option<JobRecord>,
    /// Its allocations that change.
    pub allocs: Changed,
    /// Ids of the allocations asked to stop (or still live).
    pub stopped: Vec<String>,
    /// Nodes whose assignments change.
    pub touched: BTreeSet<String>,
}

/// Stops `job`: it is marked stopped and each of its allocations desired
/// stop; live ones on a node in `down` are lost (no agent will report them).
pub fn stop_job<'a>(
    job: &JobRecord,
    allocs: impl IntoIterator<Item = &'a AllocRecord>,
    down: &BTreeSet<&str>,
    now: i64,
) -> JobStop {
    let mut out = JobStop::default();
    if job.status != JobStatus::Stopped {
        out.job = Some(JobRecord {
            status: JobStatus::Stopped,
            // A stopped job waits for nothing.
            pending: Vec::new(),
            ..job.clone()
        });
    }
    let name = &job.spec.name;
    for (i, a) in allocs.into_iter().enumerate() {
        if &a.job != name || (a.desired == DesiredState::Stop && !a.is_live()) {
            continue;
        }
        let mut r = a.clone();
        let was_run = r.desired == DesiredState::Run;
        r.desired = DesiredState::Stop;
        if down.contains(r.node_id.as_str()) && r.is_live() {
            r.status = AllocStatus::Lost;
        }
        if &r == a {
            if r.is_live() {
                out.stopped.push(r.id.clone());
            }
            continue;
        }
        r.modified_unix_ms = now;
        if was_run || r.is_live() {
            out.stopped.push(r.id.clone());
        }
        out.touched.insert(r.node_id.clone());
        out.allocs.push((i, r));
    }
    out
}

/// What an agent reports about one of its allocations.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The allocation.
    pub alloc_id: String,
    /// Its status.
    pub status: AllocStatus,
    /// Its tasks.
    pub tasks: Vec<TaskStateRecord>,
    /// Its address, empty when not (yet) known.
    pub ip: String,
    /// Its services' health checks (a change of any of them is a change).
    pub checks: Vec<drover_model::CheckState>,
}

/// The allocation after `report`, or `None` when nothing changes.
pub fn apply_report(a: &AllocRecord, report: &StatusReport, now: i64) -> Option<AllocRecord> {
    let mut r = a.clone();
    r.status = report.status;
    r.reschedule = crate::reschedule::on_status(&a.reschedule, a.status, report.status, now);
    r.reschedule.critical_unix_ms =
        crate::reschedule::unhealthy::critical_since(a, report.status, &report.checks, now);
    r.tasks = report.tasks.clone();
    r.checks = report.checks.clone();
    if !report.ip.is_empty() {
        r.ip = report.ip.clone();
    }
    if &r == a {
        return None;
    }
    r.modified_unix_ms = now;
    Some(r)
}

/// How a running batch job ended, once every allocation it wants has
/// finished: complete when all did so successfully, failed otherwise.
/// `None` while it runs, and for other jobs.
pub fn batch_outcome<'a>(
    job: &JobRecord,
    allocs: impl IntoIterator<Item = &'a AllocRecord>,
) -> Option<JobStatus> {
    if job.spec.kind != JobKind::Batch || job.status != JobStatus::Running {
        return None;
    }
    let wanted: Vec<&AllocRecord> = allocs
        .into_iter()
        .filter(|a| a.job == job.spec.name && a.desired == DesiredState::Run)
        .collect();
    let count: u32 = job.spec.groups.iter().map(|g| g.count).sum();
    let done = wanted.iter().filter(|a| a.status.is_terminal()).count();
    if wanted.is_empty() || done < wanted.len() || (done as u64) < u64::from(count) {
        return None;
    }
    Some(
        if wanted.iter().all(|a| a.status == AllocStatus::Complete) {
            JobStatus::Complete
        } else {
            JobStatus::Failed
        },
    )
}

/// A node whose agent is gone past its grace period: it is down, and its
/// live allocations are lost and desired stop (replacements take over; if
/// the node comes back, its copies are stopped rather than run next to
/// them). `None` when it is down already.
pub fn node_down<'a>(
    node: &NodeRecord,
    allocs: impl IntoIterator<Item = &'a AllocRecord>,
    now: i64,
) -> Option<(NodeRecord, Changed)> {
    if node.status == NodeStatus::Down {
        return None;
    }
    let record = NodeRecord {
        status: NodeStatus::Down,
        ..node.clone()
    };
    let lost = allocs
        .into_iter()
        .enumerate()
        .filter(|(_, a)| a.node_id == node.id && a.is_live())
        .map(|(i, a)| {
            let r = AllocRecord {
                status: AllocStatus::Lost,
                desired: DesiredState::Stop,
                modified_unix_ms: now,
                ..a.clone()
            };
            (i, r)
        })
        .collect();
    Some((record, lost))
}

/// The record of a registering node: what it reports, ready (or
/// initializing, when `reported` says so: it still runs replaced copies,
/// see [`crate::returning`]), registered `now`, with `subnet`; what the
/// operator set (drain) is kept from the `previous` record.
pub fn registered(
    reported: &NodeRecord,
    previous: Option<&NodeRecord>,
    subnet: Ipv4Net,
    now: i64,
) -> NodeRecord {
    let status = match reported.status {
        NodeStatus::Initializing => NodeStatus::Initializing,
        NodeStatus::Ready | NodeStatus::Down => NodeStatus::Ready,
    };
    NodeRecord {
        status,
        draining: previous.is_some_and(|p| p.draining),
        subnet: Some(subnet),
        last_seen_unix_ms: now,
        ..reported.clone()
    }
}

/// An initializing node made ready (its stale copies stopped, or waited
/// on long enough); `None` when it is not initializing (down, or ready
/// already), so a late flip never revives a down node.
pub fn ready(node: &NodeRecord) -> Option<NodeRecord> {
    (node.status == NodeStatus::Initializing).then(|| NodeRecord {
        status: NodeStatus::Ready,
        ..node.clone()
    })
}

/// The node with draining turned on or off.
pub fn drained(node: &NodeRecord, enable: bool) -> NodeRecord {
    NodeRecord {
        draining: enable,
        ..node.clone()
    }
}

/// One allocation a node should hold, with what it needs to run it.
#[derive(Debug, Clone, Copy)]
pub struct Assigned<'a> {
    /// The allocation.
    pub alloc: &'a AllocRecord,
    /// Its group's spec.
    pub group: &'a GroupSpec,
    /// Its job's kind.
    pub kind: JobKind,
}

/// The allocations `node_id` should hold right now. A finished allocation
/// the job still wants stays assigned (its status may be a node's early
/// guess, e.g. right after an agent restart, and the node settles it); the
/// agent starts nothing for one it has no files of.
pub fn assigned<'a>(
    node_id: &str,
    allocs: &'a [AllocRecord],
    jobs: &'a BTreeMap<String, JobRecord>,
) -> Vec<Assigned<'a>> {
    assigned_anywhere(allocs.iter().filter(|a| a.node_id == node_id), jobs).collect()
}

/// [`assigned`] for every node at once: each allocation some node should
/// hold (its `node_id` says which).
pub fn assigned_anywhere<'a>(
    allocs: impl IntoIterator<Item = &'a AllocRecord>,
    jobs: &'a BTreeMap<String, JobRecord>,
) -> impl Iterator<Item = Assigned<'a>> {
    allocs
        .into_iter()
        .filter(|a| a.desired == DesiredState::Run || a.is_live())
        .filter_map(|a| {
            let job = jobs.get(&a.job)?;
            Some(Assigned {
                alloc: a,
                group: job.spec.group(&a.group)?,
                kind: job.spec.kind,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{alloc, job};

    fn record(kind: &str, status: JobStatus) -> JobRecord {
        JobRecord {
            spec: job(kind, 2, "true"),
            status,
            version: 3,
            submitted_unix_ms: 10,
            pending: Vec::new(),
        }
    }

    #[test]
    fn resubmitting_the_running_spec_changes_nothing_and_any_other_bumps_the_version() {
        let running = record("service", JobStatus::Running);
        let (same, write) = submit(Some(&running), &running.spec, 99);
        assert!(!write);
        assert_eq!((same.version, same.submitted_unix_ms), (3, 10));
        let stopped = record("service", JobStatus::Stopped);
        let (again, write) = submit(Some(&stopped), &stopped.spec, 99);
        assert!(write);
        assert_eq!((again.version, again.status), (4, JobStatus::Running));
        assert_eq!(submit(None, &running.spec, 99).0.version, 1);
    }

    #[test]
    fn stopping_a_job_loses_what_down_nodes_hold_and_skips_what_is_over() {
        let job = record("service", JobStatus::Running);
        let mut done = alloc("done", 1, "up", AllocStatus::Complete);
        done.desired = DesiredState::Stop;
        let allocs = [
            alloc("on-down", 0, "down", AllocStatus::Running),
            done,
            alloc("on-up", 1, "up", AllocStatus::Running),
        ];
        let stop = stop_job(&job, &allocs, &BTreeSet::from(["down"]), 7);
        assert_eq!(stop.job.map(|j| j.status), Some(JobStatus::Stopped));
        let changed: Vec<(usize, AllocStatus, DesiredState)> = stop
            .allocs
            .iter()
            .map(|(i, a)| (*i, a.status, a.desired))
            .collect();
        assert_eq!(
            changed,
            [
                (0, AllocStatus::Lost, DesiredState::Stop),
                (2, AllocStatus::Running, DesiredState::Stop)
            ]
        );
        assert_eq!(stop.stopped, ["on-down", "on-up"]);
        assert_eq!(stop.touched, BTreeSet::from(["down".into(), "up".into()]));
    }

    #[test]
    fn a_batch_job_ends_once_every_wanted_instance_is_over() {
        let job = record("batch", JobStatus::Running);
        let ok = alloc("a", 0, "n", AllocStatus::Complete);
        let running = alloc("b", 1, "n", AllocStatus::Running);
        assert_eq!(batch_outcome(&job, [&ok, &running]), None);
        let failed = alloc("b", 1, "n", AllocStatus::Failed);
        assert_eq!(batch_outcome(&job, [&ok, &failed]), Some(JobStatus::Failed));
        let ok2 = alloc("b", 1, "n", AllocStatus::Complete);
        assert_eq!(batch_outcome(&job, [&ok, &ok2]), Some(JobStatus::Complete));
        assert_eq!(
            batch_outcome(&job, [&ok]),
            None,
            "one instance still to place"
        );
        let service = record("service", JobStatus::Running);
        assert_eq!(batch_outcome(&service, [&ok, &ok2]), None);
    }

    #[test]
    fn a_lost_node_loses_its_live_allocations_once() {
        let node = crate::testkit::node("n", "198.18.0.1", NodeStatus::Ready);
        let allocs = [
            alloc("live", 0, "n", AllocStatus::Running),
            alloc("over", 1, "n", AllocStatus::Failed),
            alloc("elsewhere", 0, "m", AllocStatus::Running),
        ];
        let (down, lost) = node_down(&node, &allocs, 5).expect("ready node goes down");
        assert_eq!(down.status, NodeStatus::Down);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, 0);
        assert_eq!(
            (lost[0].1.status, lost[0].1.desired),
            (AllocStatus::Lost, DesiredState::Stop)
        );
        assert!(node_down(&down, &allocs, 6).is_none());
    }

    #[test]
    fn a_report_changes_only_what_it_says() {
        let a = alloc("a", 0, "n", AllocStatus::Pending);
        let report = StatusReport {
            alloc_id: "a".into(),
            status: AllocStatus::Running,
            tasks: Vec::new(),
            ip: String::new(),
            checks: Vec::new(),
        };
        let r = apply_report(&a, &report, 4).expect("status changes");
        assert_eq!((r.status, r.modified_unix_ms), (AllocStatus::Running, 4));
        assert_eq!(apply_report(&r, &report, 5), None);
        let passing = StatusReport {
            checks: vec![drover_model::CheckState {
                service: "web".into(),
                index: 0,
                kind: drover_model::CheckKind::Tcp,
                status: drover_model::CheckStatus::Passing,
                output: String::new(),
                last_unix_ms: 3,
            }],
            ..report
        };
        let p = apply_report(&r, &passing, 6).expect("a check changed");
        assert_eq!((p.checks.len(), p.modified_unix_ms), (1, 6));
        assert_eq!(apply_report(&p, &passing, 7), None);
    }

    #[test]
    fn nodes_are_assigned_their_allocations_except_stopped_ones_that_are_over() {
        let mut stopped = alloc("stopped", 1, "n", AllocStatus::Complete);
        stopped.desired = DesiredState::Stop;
        let mut stopping = alloc("stopping", 2, "n", AllocStatus::Running);
        stopping.desired = DesiredState::Stop;
        let allocs = [
            alloc("failed", 0, "n", AllocStatus::Failed),
            stopped,
            stopping,
            alloc("other", 0, "m", AllocStatus::Running),
        ];
        let jobs = BTreeMap::from([("j".to_string(), record("service", JobStatus::Running))]);
        let ids: Vec<&str> = assigned("n", &allocs, &jobs)
            .iter()
            .map(|a| a.alloc.id.as_str())
            .collect();
        assert_eq!(ids, ["failed", "stopping"]);
        assert!(assigned("n", &allocs, &BTreeMap::new()).is_empty());
    }

    /// A report of `a` as `status` with one check `check_status`.
    fn check_report(
        a: &AllocRecord,
        status: AllocStatus,
        check_status: drover_model::CheckStatus,
    ) -> StatusReport {
        StatusReport {
            alloc_id: a.id.clone(),
            status,
            tasks: Vec::new(),
            ip: String::new(),
            checks: vec![drover_model::CheckState {
                service: "web".into(),
                index: 0,
                kind: drover_model::CheckKind::Http,
                status: check_status,
                output: String::new(),
                last_unix_ms: 0,
            }],
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn reports_keep_since_when_a_check_has_been_critical_without_a_break() {
        let a = crate::testkit::alloc("a0", 0, "n1", AllocStatus::Running);
        let ok = apply_report(
            &a,
            &check_report(&a, AllocStatus::Running, drover_model::CheckStatus::Passing),
            1_000,
        )
        .unwrap_or(a.clone());
        assert_eq!(ok.reschedule.critical_unix_ms, None);
        let bad = apply_report(
            &ok,
            &check_report(
                &ok,
                AllocStatus::Running,
                drover_model::CheckStatus::Critical,
            ),
            5_000,
        )
        .unwrap();
        assert_eq!(bad.reschedule.critical_unix_ms, Some(5_000));
        let mut later = check_report(
            &bad,
            AllocStatus::Running,
            drover_model::CheckStatus::Critical,
        );
        later.checks[0].output = "HTTP 503".into();
        let still = apply_report(&bad, &later, 6_000).unwrap();
        assert_eq!(still.reschedule.critical_unix_ms, Some(5_000), "no break");
        let back = apply_report(
            &still,
            &check_report(
                &still,
                AllocStatus::Running,
                drover_model::CheckStatus::Passing,
            ),
            7_000,
        )
        .unwrap();
        assert_eq!(back.reschedule.critical_unix_ms, None, "passing again");
        let failed = apply_report(
            &still,
            &check_report(
                &still,
                AllocStatus::Failed,
                drover_model::CheckStatus::Critical,
            ),
            7_000,
        )
        .unwrap();
        assert_eq!(
            failed.reschedule.critical_unix_ms, None,
            "failed, not unhealthy"
        );
        // A replaced one keeps why it was replaced.
        let mut replaced = still.clone();
        replaced.reschedule.replaced_by = "b0".into();
        let stopped = apply_report(
            &replaced,
            &check_report(
                &replaced,
                AllocStatus::Complete,
                drover_model::CheckStatus::Pending,
            ),
            9_000,
        )
        .unwrap();
        assert_eq!(stopped.reschedule.critical_unix_ms, Some(5_000));
    }
}
