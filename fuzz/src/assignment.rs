//! The agent's decoding of what its scheduler sends: bytes ->
//! `pb::SchedulerMessage` (prost, as tonic decodes each message of the
//! `Connect` stream) -> for `assignments`, the agent's decoded
//! [`Assignment`]s and refusals ([`decode_all`], as the session does) ->
//! its plan on them ([`plan_assignments`], [`plan_disconnected`]) and each
//! task's runtime spec ([`task_spec`]), validated as the runtime does
//! before anything starts ([`TaskSpec::validate`], which only reads the
//! file system), with the seccomp setting admitted under a node policy
//! that refuses `unconfined`.
//!
//! Checked beyond "no panic":
//! - every assignment is decoded or refused, a refusal names its
//!   allocation and a field;
//! - a decoded allocation has an id, and its host name is a DNS label of at
//!   most 63 bytes;
//! - `unconfined` is refused by the default node policy, `default` never.

use std::time::Duration;

use drover_agent::allocs::disconnect::plan_disconnected;
use drover_agent::allocs::plan::plan_assignments;
use drover_agent::allocs::spec::task_spec;
use drover_agent::allocs::state::{Disk, State};
use drover_agent::assignment::{decode_all, Assignment};
use drover_agent::runtime::TaskSpec;
use drover_agent::seccomp::{admit, Seccomp, SeccompPolicy};
use drover_proto::v1 as pb;
use drover_scheduler::job::JobSpec;
use prost::Message;

/// Runs `data` through the agent's decoding, panicking on a broken
/// promise.
pub fn check(data: &[u8]) {
    let Ok(msg) = pb::SchedulerMessage::decode(data) else {
        return;
    };
    let Some(pb::scheduler_message::Msg::Assignments(list)) = msg.msg else {
        return;
    };
    let (ok, refused) = decode_all(&list.allocations);
    assert!(ok.len() + refused.len() <= list.allocations.len());
    for r in &refused {
        assert!(!r.alloc_id.is_empty(), "a refusal names its allocation");
        assert!(!r.error.field().is_empty(), "a refusal names a field");
    }
    for a in &ok {
        decoded(a);
    }
    let _ = plan_assignments(&State::default(), &ok, &refused, &Disk::default());
    for away in [Duration::ZERO, Duration::from_secs(60), Duration::MAX] {
        let _ = plan_disconnected(&ok, away);
    }
}

/// What the agent relies on of a decoded assignment.
fn decoded(a: &Assignment) {
    assert!(!a.alloc.id.is_empty(), "a decoded allocation has an id");
    let host = a.alloc.hostname();
    assert!(host.len() <= 63, "host name {host:?} is over 63 bytes");
    let policy = SeccompPolicy::default();
    for t in &a.group.tasks {
        let spec: TaskSpec = task_spec(&a.alloc, t, None);
        let _ = spec.validate();
        match (&spec.seccomp, admit(&policy, &spec.seccomp)) {
            (Seccomp::Unconfined, Ok(_)) => panic!("unconfined admitted by the default policy"),
            (Seccomp::Default, Err(e)) => panic!("the default profile refused: {e}"),
            _ => {}
        }
    }
}

/// An `Assignments` message of every group of `spec`, as the scheduler
/// builds it (two allocations per group, one to run and one to stop).
pub fn assignments_of(spec: &JobSpec) -> pb::SchedulerMessage {
    let mut allocations = Vec::new();
    for (i, group) in spec.groups.iter().enumerate() {
        for (index, desired, status) in [(0, "run", "pending"), (1, "stop", "running")] {
            allocations.push(pb::Assignment {
                allocation: Some(pb::Allocation {
                    id: format!(
                        "{:08x}-{i:04x}-{index:04x}-0000-000000000000",
                        spec.name.len()
                    ),
                    name: format!("{}.{}[{index}]", spec.name, group.name),
                    job: spec.name.clone(),
                    group: group.name.clone(),
                    index,
                    desired: desired.into(),
                    status: status.into(),
                    ..Default::default()
                }),
                group: Some(pb::Group::from(group)),
                job_kind: spec.kind.as_str().into(),
                image_pins: Default::default(),
            });
        }
    }
    pb::SchedulerMessage {
        msg: Some(pb::scheduler_message::Msg::Assignments(pb::Assignments {
            allocations,
            partial: false,
            removed: Vec::new(),
        })),
    }
}

/// The seed messages: the assignments of every seed job file that the
/// scheduler accepts (see [`super::jobfile::seeds`]), and a few the
/// agent must refuse, by name.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in super::jobfile::seeds() {
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let Ok(job) = drover_scheduler::jobfile::parse(&name, &text) else {
            continue;
        };
        if let Ok(spec) = JobSpec::try_from(&job) {
            let file = name.rsplit('/').next().unwrap_or(&name);
            out.push((format!("job-{file}"), assignments_of(&spec).encode_to_vec()));
        }
    }
    for (name, msg) in refused_seeds() {
        out.push((name.to_string(), msg.encode_to_vec()));
    }
    out.sort();
    out
}

/// Assignments the agent refuses (or drops), one reason each, wrapped in
/// a message.
fn refused_seeds() -> Vec<(&'static str, pb::SchedulerMessage)> {
    let alloc = || pb::Allocation {
        id: "a1".into(),
        name: "j.g[0]".into(),
        job: "j".into(),
        group: "g".into(),
        desired: "run".into(),
        status: "pending".into(),
        ..Default::default()
    };
    let task = || pb::Task {
        name: "t".into(),
        command: vec!["/bin/true".into()],
        ..Default::default()
    };
    let group = |t: pb::Task| pb::Group {
        name: "g".into(),
        count: 1,
        tasks: vec![t],
        ..Default::default()
    };
    let one = |a: Option<pb::Allocation>, g: Option<pb::Group>, kind: &str| pb::SchedulerMessage {
        msg: Some(pb::scheduler_message::Msg::Assignments(pb::Assignments {
            allocations: vec![pb::Assignment {
                allocation: a,
                group: g,
                job_kind: kind.into(),
                image_pins: Default::default(),
            }],
            partial: true,
            removed: vec!["gone".into()],
        })),
    };
    let with = |f: &dyn Fn(&mut pb::Task)| {
        let mut t = task();
        f(&mut t);
        one(Some(alloc()), Some(group(t)), "service")
    };
    vec![
        ("no-allocation", one(None, Some(group(task())), "service")),
        ("no-group", one(Some(alloc()), None, "service")),
        (
            "unknown-kind",
            one(Some(alloc()), Some(group(task())), "cron"),
        ),
        (
            "negative-memory",
            with(&|t| {
                t.resources = Some(pb::Resources {
                    cpu_millis: 1,
                    memory_mb: -1,
                })
            }),
        ),
        (
            "unknown-volume",
            with(&|t| {
                t.volumes = vec![pb::Volume {
                    kind: "nfs".into(),
                    target: "/x".into(),
                    ..Default::default()
                }]
            }),
        ),
        ("unknown-seccomp", with(&|t| t.seccomp = "off".into())),
        ("unconfined", with(&|t| t.seccomp = "unconfined".into())),
        (
            "dir-rootfs",
            with(&|t| {
                t.rootfs = Some(pb::Rootfs {
                    kind: "dir".into(),
                    path: "/tmp".into(),
                    ..Default::default()
                })
            }),
        ),
    ]
}
