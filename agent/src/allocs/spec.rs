//! From an assignment's task to the runtime's [`TaskSpec`]: the job's
//! environment plus Drover's `DROVER_*` variables, limits, root
//! filesystem, user, working directory, volumes and seccomp request.

use crate::assignment::{self, Allocation, Task};
use crate::runtime::logs::LogLimits;
use crate::runtime::{Rootfs, TaskNetwork, TaskSpec, Volume, DEFAULT_PIDS_MAX};
use crate::seccomp::Seccomp;
use drover_model::job::SeccompMode;

/// The spec of task `t` of allocation `a`, joining `network`.
pub fn task_spec(a: &Allocation, t: &Task, network: Option<TaskNetwork>) -> TaskSpec {
    let mut env = t.env.clone();
    for (k, v) in [
        ("DROVER_ALLOC_ID", a.id.clone()),
        ("DROVER_ALLOC_NAME", a.name.clone()),
        ("DROVER_ALLOC_INDEX", a.index.to_string()),
        ("DROVER_JOB", a.job.clone()),
        ("DROVER_GROUP", a.group.clone()),
        ("DROVER_TASK", t.name.clone()),
    ] {
        env.entry(k.to_string()).or_insert(v);
    }
    TaskSpec {
        alloc_id: a.id.clone(),
        task: t.name.clone(),
        hostname: a.hostname(),
        command: t.command.clone(),
        env,
        kill_timeout_ms: u64::try_from(t.kill_timeout.as_millis()).unwrap_or(u64::MAX),
        cpu_millis: t.cpu_millis,
        memory_mb: t.memory_mb,
        // The job format has no pids limit yet: the node's default.
        pids_max: DEFAULT_PIDS_MAX,
        logs: t.logs.map_or_else(LogLimits::default, |l| LogLimits {
            max_size_bytes: l.max_size_mb.saturating_mul(1024 * 1024),
            max_files: l.max_files,
        }),
        rootfs: Some(match &t.rootfs {
            assignment::Rootfs::Host => Rootfs::Host,
            assignment::Rootfs::Dir(path) => Rootfs::Dir { path: path.clone() },
            // A tag pinned for its deployment runs the pinned digest.
            assignment::Rootfs::Oci(image) => Rootfs::Oci {
                image: t
                    .pinned_image
                    .as_ref()
                    .map_or_else(|| image.clone(), Into::into),
            },
        }),
        network,
        // The scheduler checked the shape; the runtime checks them against
        // the node policy and the rootfs before anything starts.
        user: t.user.clone(),
        workdir: t.workdir.clone(),
        volumes: t
            .volumes
            .iter()
            .map(|v| match v {
                assignment::Volume::Tmpfs { target, size_mb } => Volume::Tmpfs {
                    target: target.clone(),
                    size_mb: *size_mb,
                },
                assignment::Volume::Bind {
                    source,
                    target,
                    read_only,
                } => Volume::Bind {
                    source: source.clone(),
                    target: target.clone(),
                    read_only: *read_only,
                },
            })
            .collect(),
        // Set by the runtime from the node policy.
        user_namespace: None,
        run_as: None,
        host_root: None,
        // The runtime applies the node policy to the request.
        seccomp: match t.seccomp {
            SeccompMode::Default => Seccomp::Default,
            SeccompMode::Unconfined => Seccomp::Unconfined,
        },
        init: t.init,
    }
}
