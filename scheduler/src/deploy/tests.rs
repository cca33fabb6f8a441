//! The deployment rules on simulated allocations: a small world where
//! placed allocations start running on the next tick, and the test says
//! which versions pass their checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::plan::{plan, Input};
use super::*;
use crate::job::{JobSpec, UpdateSpec};
use crate::state::{AllocRecord, AllocStatus, DesiredState};
use crate::testkit::{alloc, job};

const MIN_HEALTHY: u64 = 100;

fn spec(count: u32, command: &str, update: UpdateSpec) -> JobSpec {
    let mut j = job("service", count, command);
    j.groups[0].update = Some(update);
    j
}

fn update(max_parallel: u32) -> UpdateSpec {
    UpdateSpec {
        max_parallel,
        min_healthy_time_ms: MIN_HEALTHY,
        healthy_deadline_ms: 1_000,
        progress_deadline_ms: 3_000,
        ..UpdateSpec::default()
    }
}

/// A job's versions, allocations and latest deployment, stepped in ticks
/// of 50 ms.
struct World {
    versions: BTreeMap<u64, JobSpec>,
    version: u64,
    allocs: Vec<AllocRecord>,
    deployment: Option<Deployment>,
    now: i64,
    next_id: u32,
    /// Commands whose allocations never start (they fail).
    broken: Vec<String>,
}

impl World {
    /// Version 1 of `spec`, `count` instances running and healthy.
    fn running(spec: JobSpec) -> World {
        let mut w = World {
            versions: BTreeMap::from([(1, spec.clone())]),
            version: 1,
            allocs: Vec::new(),
            deployment: None,
            now: 1_000,
            next_id: 0,
            broken: Vec::new(),
        };
        for i in 0..spec.groups[0].count {
            w.add(i, AllocStatus::Running);
        }
        w
    }

    fn spec(&self) -> &JobSpec {
        &self.versions[&self.version]
    }

    fn add(&mut self, index: u32, status: AllocStatus) -> String {
        self.next_id += 1;
        let id = format!("a{}", self.next_id);
        let mut a = alloc(&id, index, "n1", status);
        a.job_version = self.version;
        a.created_unix_ms = self.now;
        self.allocs.push(a);
        id
    }

    /// Submits `spec` as the next version (a revert when `revert`).
    fn submit(&mut self, spec: JobSpec, revert: bool) -> super::plan::Outcome {
        self.version += 1;
        self.versions.insert(self.version, spec);
        self.pass(true, revert)
    }

    fn pass(&mut self, new_version: bool, revert: bool) -> super::plan::Outcome {
        let spec = self.spec().clone();
        let out = plan(Input {
            job: &spec,
            version: self.version,
            new_version,
            revert,
            latest: self.deployment.as_ref(),
            versions: &self.versions,
            allocs: &self.allocs,
            now: self.now,
        });
        if let Some(d) = &out.decision {
            self.deployment = Some(d.deployment.clone());
            for actions in d.groups.values() {
                for id in &actions.stop {
                    let a = self.allocs.iter_mut().find(|a| &a.id == id).unwrap();
                    a.desired = DesiredState::Stop;
                    a.status = AllocStatus::Complete;
                }
                for &i in &actions.place {
                    self.add(i, AllocStatus::Pending);
                }
            }
        }
        out
    }

    /// One tick: pending allocations start (or fail, when broken), then a
    /// pass.
    fn tick(&mut self) {
        self.now += 50;
        for a in self
            .allocs
            .iter_mut()
            .filter(|a| a.status == AllocStatus::Pending)
        {
            let command = &self.versions[&a.job_version].groups[0].tasks[0].command[0];
            a.status = if self.broken.contains(command) {
                AllocStatus::Failed
            } else {
                AllocStatus::Running
            };
        }
        self.pass(false, false);
    }

    /// Running allocations wanted, of a healthy (not broken) command.
    fn healthy(&self) -> usize {
        self.allocs
            .iter()
            .filter(|a| a.desired == DesiredState::Run && a.status == AllocStatus::Running)
            .count()
    }

    fn status(&self) -> DeploymentStatus {
        self.deployment.as_ref().unwrap().status
    }

    fn live_versions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .allocs
            .iter()
            .filter(|a| a.desired == DesiredState::Run)
            .map(|a| a.job_version)
            .collect();
        v.sort_unstable();
        v
    }
}

#[test]
fn rolling_keeps_count_minus_max_parallel_healthy_and_replaces_all() {
    let mut w = World::running(spec(6, "v1", update(2)));
    let out = w.submit(spec(6, "v2", update(2)), false);
    assert!(out.created);
    let first = &out.decision.unwrap().groups["g"];
    assert_eq!(first.place, [0, 1], "max_parallel at a time");
    assert!(
        first.stop.is_empty(),
        "nothing old stops before its replacement is healthy"
    );
    let mut max_in_flight = 0;
    for _ in 0..100 {
        w.tick();
        assert!(w.healthy() >= 6 - 2, "healthy dropped to {}", w.healthy());
        let pending = w
            .allocs
            .iter()
            .filter(|a| a.job_version == 2 && a.desired == DesiredState::Run)
            .filter(|a| {
                let h = &w.deployment.as_ref().unwrap().groups["g"].allocs;
                h.get(&a.id).and_then(|h| h.healthy) != Some(true)
            })
            .count();
        max_in_flight = max_in_flight.max(pending);
        if w.status() != DeploymentStatus::Running {
            break;
        }
    }
    assert_eq!(w.status(), DeploymentStatus::Successful);
    assert_eq!(w.live_versions(), [2; 6]);
    assert!(max_in_flight <= 2, "{max_in_flight} in flight");
}

#[test]
fn canaries_run_beside_the_old_version_until_promoted() {
    let u = UpdateSpec {
        canary: 1,
        ..update(2)
    };
    let mut w = World::running(spec(3, "v1", u));
    w.submit(spec(3, "v2", u), false);
    for _ in 0..10 {
        w.tick();
    }
    let d = w.deployment.clone().unwrap();
    assert_eq!(
        d.status,
        DeploymentStatus::Running,
        "waits, with no deadline"
    );
    assert_eq!(d.description, "canaries healthy; waiting for promotion");
    assert_eq!(
        w.live_versions(),
        [1, 1, 1, 2],
        "one canary beside every old one"
    );
    // Waiting for promotion is not a lack of progress.
    w.now += 10_000;
    w.tick();
    assert_eq!(w.status(), DeploymentStatus::Running);
    // Promoted: the rest rolls.
    let mut early = World::running(spec(3, "v1", u));
    early.submit(spec(3, "v2", u), false);
    let e = step::promote(early.deployment.as_ref().unwrap(), early.now).unwrap_err();
    assert!(e.contains("0 of 1 canaries healthy"), "{e}");
    let d = w.deployment.clone().unwrap();
    w.deployment = Some(step::promote(&d, w.now).unwrap());
    for _ in 0..20 {
        w.tick();
    }
    assert_eq!(w.status(), DeploymentStatus::Successful);
    assert_eq!(w.live_versions(), [2, 2, 2]);
}

#[test]
fn auto_promote_promotes_once_canaries_are_healthy() {
    let u = UpdateSpec {
        canary: 2,
        auto_promote: true,
        ..update(1)
    };
    let mut w = World::running(spec(4, "v1", u));
    let out = w.submit(spec(4, "v2", u), false);
    assert_eq!(
        out.decision.unwrap().groups["g"].place,
        [0, 1],
        "both canaries at once"
    );
    for _ in 0..40 {
        w.tick();
    }
    assert_eq!(w.status(), DeploymentStatus::Successful);
    assert!(w.deployment.as_ref().unwrap().groups["g"].promoted);
}

#[test]
fn a_deployment_without_progress_fails_at_its_deadline_and_asks_to_revert() {
    let u = UpdateSpec {
        auto_revert: true,
        ..update(2)
    };
    let mut w = World::running(spec(4, "v1", u));
    w.broken.push("v2".into());
    let before = w.deployment.clone();
    w.submit(spec(4, "v2", u), false);
    assert!(before.is_none());
    let mut failed = None;
    for _ in 0..200 {
        let d = w.deployment.clone().unwrap();
        w.now += 50;
        for a in w
            .allocs
            .iter_mut()
            .filter(|a| a.status == AllocStatus::Pending)
        {
            a.status = AllocStatus::Failed;
        }
        let out = w.pass(false, false);
        let decision = out.decision.unwrap();
        if decision.deployment.status == DeploymentStatus::Failed {
            assert!(decision.revert_wanted(&d));
            failed = Some(w.now);
            break;
        }
        assert!(
            w.healthy() >= 4,
            "an old allocation stopped for an unhealthy one"
        );
    }
    let at = failed.expect("never failed");
    assert!(at - 1_000 >= 3_000, "failed before the progress deadline");
    let d = w.deployment.clone().unwrap();
    assert!(
        d.description.contains("progress_deadline_ms"),
        "{}",
        d.description
    );
    assert_eq!(d.groups["g"].unhealthy(), 2, "only max_parallel were tried");
    // Failed: nothing more is rolled.
    w.tick();
    assert_eq!(w.live_versions(), [1, 1, 1, 1, 2, 2]);
}

#[test]
fn without_progress_deadline_the_first_unhealthy_allocation_fails_it() {
    let u = UpdateSpec {
        progress_deadline_ms: 0,
        ..update(1)
    };
    let mut w = World::running(spec(2, "v1", u));
    w.broken.push("v2".into());
    w.submit(spec(2, "v2", u), false);
    w.tick();
    assert_eq!(w.status(), DeploymentStatus::Failed);
    assert!(w
        .deployment
        .as_ref()
        .unwrap()
        .description
        .contains("unhealthy"));
}

#[test]
fn a_revert_skips_canaries_and_keeps_healthy_allocations_until_replaced() {
    let u = UpdateSpec {
        canary: 1,
        auto_revert: true,
        ..update(2)
    };
    // v1 stable on 0..3; v2 got healthy on 0 and 1 (old ones there
    // stopped) and is failing on 2.
    let mut w = World::running(spec(4, "v1", u));
    w.versions.insert(2, spec(4, "v2", u));
    w.version = 2;
    for a in w.allocs.iter_mut().filter(|a| a.index < 2) {
        a.desired = DesiredState::Stop;
        a.status = AllocStatus::Complete;
    }
    let good0 = w.add(0, AllocStatus::Running);
    let good1 = w.add(1, AllocStatus::Running);
    w.add(2, AllocStatus::Failed);
    w.now += 500;
    // Revert: v3 = v1's spec.
    let out = w.submit(spec(4, "v1", u), true);
    let d = out.decision.unwrap();
    assert!(
        d.deployment.revert && d.deployment.groups["g"].promoted,
        "no canary phase"
    );
    let g = &d.groups["g"];
    assert_eq!(
        g.place,
        [0, 1],
        "replacements of the v2 instances, max_parallel at a time"
    );
    assert!(
        g.stop.is_empty(),
        "no healthy v2 allocation stops before its replacement is healthy"
    );
    w.tick();
    let live = |w: &World, id: &str| {
        w.allocs
            .iter()
            .any(|a| a.id == id && a.desired == DesiredState::Run)
    };
    assert!(
        live(&w, &good0) && live(&w, &good1),
        "kept while replacements are not healthy"
    );
    for _ in 0..40 {
        w.tick();
    }
    assert_eq!(w.status(), DeploymentStatus::Successful);
    assert!(!live(&w, &good0) && !live(&w, &good1));
    let mut specs: Vec<&str> = w
        .allocs
        .iter()
        .filter(|a| a.desired == DesiredState::Run)
        .map(|a| w.versions[&a.job_version].groups[0].tasks[0].command[0].as_str())
        .collect();
    specs.sort_unstable();
    assert_eq!(specs, ["v1"; 4]);
}

#[test]
fn a_revert_never_gives_up_by_deadline() {
    let u = UpdateSpec {
        auto_revert: true,
        ..update(1)
    };
    let mut w = World::running(spec(2, "v1", u));
    w.broken.push("v3".into());
    w.submit(spec(2, "v3", u), true);
    for _ in 0..200 {
        w.tick();
    }
    let d = w.deployment.clone().unwrap();
    assert_eq!(d.status, DeploymentStatus::Running, "{}", d.description);
    assert_eq!(w.live_versions(), [1, 1, 2], "the old ones stay");
}

#[test]
fn a_count_change_alone_scales_without_a_deployment() {
    let mut w = World::running(spec(2, "v1", update(1)));
    let out = w.submit(spec(4, "v1", update(1)), false);
    assert!(!out.created && out.decision.is_none());
    // Under a successful deployment, the missing instances are placed at
    // once, without waiting for health.
    let mut w = World::running(spec(2, "v1", update(1)));
    w.submit(spec(2, "v2", update(1)), false);
    for _ in 0..20 {
        w.tick();
    }
    assert_eq!(w.status(), DeploymentStatus::Successful);
    let out = w.submit(spec(5, "v2", update(1)), false);
    assert!(!out.created);
    assert_eq!(out.decision.unwrap().groups["g"].place, [2, 3, 4]);
    let out = w.submit(spec(1, "v2", update(1)), false);
    assert_eq!(
        out.decision.unwrap().groups["g"].stop.len(),
        4,
        "surplus stopped at once"
    );
}

#[test]
fn health_needs_every_declared_check_passing_for_min_healthy_time() {
    let mut j = spec(1, "v1", update(1));
    let text =
        "name = \"j\"\n[[group]]\nname = \"g\"\n[[group.task]]\nname = \"t\"\ncommand = [\"x\"]\n\
        [[group.service]]\nname = \"web\"\nport = 80\n[[group.service.check]]\ntype = \"tcp\"\n";
    let with_check = JobSpec::try_from(&crate::jobfile::parse("j.toml", text).unwrap()).unwrap();
    j.groups[0].services = with_check.groups[0].services.clone();
    let d = new_deployment(&j, 1, &[("g", false)], false, 0);
    let mut a = alloc("a1", 0, "n1", AllocStatus::Running);
    fn obs(a: &AllocRecord) -> Vec<Observed<'_>> {
        vec![Observed {
            alloc: a,
            current: true,
        }]
    }
    let s = step(&d, &j, &obs(&a), 10);
    assert_eq!(
        s.deployment.groups["g"].allocs["a1"].ok_since_unix_ms, None,
        "no check reported yet"
    );
    a.checks = vec![drover_model::CheckState {
        service: "web".into(),
        index: 0,
        kind: drover_model::CheckKind::Tcp,
        status: drover_model::CheckStatus::Passing,
        output: String::new(),
        last_unix_ms: 20,
    }];
    let s = step(&s.deployment, &j, &obs(&a), 20);
    assert_eq!(
        s.wake_at,
        Some(20 + MIN_HEALTHY as i64),
        "looks again when it may be healthy"
    );
    let s = step(&s.deployment, &j, &obs(&a), 20 + MIN_HEALTHY as i64);
    assert_eq!(s.deployment.groups["g"].allocs["a1"].healthy, Some(true));
    assert_eq!(s.deployment.status, DeploymentStatus::Successful);
}

/// Placement honours a deployment's decision for the groups it manages:
/// the old and the new allocation at one index both stay (the reconciler
/// alone would stop the later one as a duplicate), and only the indexes
/// the deployment names are placed.
#[test]
fn placement_keeps_both_holders_of_an_index_under_a_deployment() {
    use crate::placement::{plan, plan_managed, Managed};
    use crate::state::NodeStatus;
    use crate::testkit::node;

    let nodes = [node("n1", "192.0.2.1", NodeStatus::Ready)];
    let j = spec(3, "v2", update(1));
    let mut allocs: Vec<AllocRecord> = (0..3)
        .map(|i| alloc(&format!("old{i}"), i, "n1", AllocStatus::Running))
        .collect();
    let mut new0 = alloc("new0", 0, "n1", AllocStatus::Running);
    new0.job_version = 2;
    new0.created_unix_ms = 5;
    allocs.push(new0);
    let plain = plan(&nodes, &allocs, &j, Some(&j));
    assert_eq!(
        plain.stop,
        ["new0"],
        "the reconciler alone stops a second holder"
    );
    let stop = vec!["old0".to_string()];
    let managed = std::collections::BTreeMap::from([(
        "g",
        Managed {
            place: &[1],
            stop: &stop,
        },
    )]);
    let p = plan_managed(&Default::default(), &nodes, &allocs, &j, Some(&j), &managed);
    assert_eq!(p.stop, ["old0"]);
    let placed: Vec<u32> = p.place.iter().map(|x| x.index).collect();
    assert_eq!(placed, [1]);
}
