//! Validation of a submitted [`pb::Job`] into a [`JobSpec`]: every field
//! is checked and *all* problems are reported at once, each with its path.
//!
//! Owns the rules of what a job may ask for; the types live in
//! [`super`], the wire conversion back in [`super`]'s `From` impls.

use std::collections::BTreeSet;
use std::fmt;

use drover_proto::v1 as pb;

use super::{
    check_dns_label, GroupSpec, InvalidJob, JobKind, JobSpec, LogSpec, Resources, RestartPolicy,
    RootfsSpec, TaskSpec, VolumeSpec, MAX_ARGS, MAX_COUNT, MAX_CPU_MILLIS, MAX_KILL_TIMEOUT_MS,
    MAX_LOG_FILES, MAX_LOG_SIZE_MB, MAX_MEMORY_MB, MAX_RESTART_ATTEMPTS, MAX_RESTART_DELAY_MS,
    MAX_TMPFS_MB, RESERVED_VOLUME_TARGETS,
};
use crate::wire::{NetworkMode, RootfsKind, VolumeKind};

/// Collects problems under a path prefix.
struct Problems {
    list: Vec<String>,
}

impl Problems {
    fn push(&mut self, path: &str, msg: impl fmt::Display) {
        if path.is_empty() {
            self.list.push(msg.to_string());
        } else {
            self.list.push(format!("{path}: {msg}"));
        }
    }

    fn range(&mut self, path: &str, field: &str, v: i64, min: i64, max: i64) {
        if v < min {
            if min == 1 {
                self.push(path, format!("{field} must be > 0, got {v}"));
            } else {
                self.push(path, format!("{field} must be >= {min}, got {v}"));
            }
        } else if v > max {
            self.push(path, format!("{field} must be <= {max}, got {v}"));
        }
    }

    /// Checks the name of the `index`th (from 0) item of a list: a DNS
    /// label, unique among `seen`. Returns the item's path under `parent`:
    /// `group "web"`, or `group #2` while it has no name.
    fn named(
        &mut self,
        parent: &str,
        what: &str,
        index: usize,
        name: &str,
        seen: &mut BTreeSet<String>,
    ) -> String {
        let sep = if parent.is_empty() { "" } else { " " };
        let path = if name.is_empty() {
            format!("{parent}{sep}{what} #{}", index + 1)
        } else {
            format!("{parent}{sep}{what} {name:?}")
        };
        if let Err(e) = check_dns_label(name) {
            self.push(&path, format!("name {e}"));
        } else if !seen.insert(name.to_owned()) {
            self.push(&path, format!("duplicate {what} name"));
        }
        path
    }
}

fn clamp_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl TryFrom<&pb::Job> for JobSpec {
    type Error = InvalidJob;

    fn try_from(job: &pb::Job) -> Result<Self, InvalidJob> {
        let mut p = Problems { list: Vec::new() };
        if let Err(e) = check_dns_label(&job.name) {
            p.push("", format!("name {e}"));
        }
        // An empty kind is a service.
        let kind = match job.kind.as_str() {
            "" => Ok(JobKind::Service),
            other => JobKind::parse("kind", other),
        };
        let kind = kind.unwrap_or_else(|e| {
            p.push(
                "",
                format!(
                    "kind {:?} is not one of \"service\", \"batch\", \"system\"",
                    e.value
                ),
            );
            JobKind::Service
        });
        if job.groups.is_empty() {
            p.push("", "a job needs at least one [[group]]");
        }
        let mut seen = BTreeSet::new();
        let groups = job
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| group(&mut p, kind, i, g, &mut seen))
            .collect();
        if !p.list.is_empty() {
            return Err(InvalidJob { problems: p.list });
        }
        Ok(JobSpec {
            name: job.name.clone(),
            kind,
            groups,
        })
    }
}

/// Checks the `index`th group of a job of `kind`.
fn group(
    p: &mut Problems,
    kind: JobKind,
    index: usize,
    g: &pb::Group,
    seen: &mut BTreeSet<String>,
) -> GroupSpec {
    let gpath = p.named("", "group", index, &g.name, seen);
    if kind == JobKind::System {
        p.range(&gpath, "count", g.count, 0, 1);
    } else {
        p.range(&gpath, "count", g.count, 1, MAX_COUNT);
    }
    let restart = match &g.restart {
        Some(r) => {
            p.range(
                &gpath,
                "restart.attempts",
                r.attempts,
                0,
                MAX_RESTART_ATTEMPTS,
            );
            p.range(
                &gpath,
                "restart.delay_ms",
                r.delay_ms,
                0,
                MAX_RESTART_DELAY_MS,
            );
            RestartPolicy {
                attempts: u32::try_from(r.attempts).unwrap_or(0),
                delay_ms: clamp_u64(r.delay_ms),
            }
        }
        None => RestartPolicy::default_for(kind),
    };
    if g.tasks.is_empty() {
        p.push(&gpath, "a group needs at least one [[group.task]]");
    }
    let mut seen_tasks = BTreeSet::new();
    let tasks = g
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| task(p, &gpath, i, t, &mut seen_tasks))
        .collect();
    if NetworkMode::parse("network", &g.network).is_err() {
        p.push(
            &gpath,
            format!(
                "network must be \"bridge\" (the default), \"host\" or \"none\", got {:?}",
                g.network
            ),
        );
    }
    GroupSpec {
        name: g.name.clone(),
        count: u32::try_from(g.count).unwrap_or(0),
        tasks,
        restart,
        network: g.network.clone(),
    }
}

/// Checks the `index`th task of the group at `gpath`.
fn task(
    p: &mut Problems,
    gpath: &str,
    index: usize,
    t: &pb::Task,
    seen: &mut BTreeSet<String>,
) -> TaskSpec {
    let tpath = p.named(gpath, "task", index, &t.name, seen);
    // An OCI image's config may supply the command.
    let image_command = t
        .rootfs
        .as_ref()
        .is_some_and(|r| r.kind == RootfsKind::Oci.as_str());
    if !(image_command && t.command.is_empty()) {
        check_command(p, &tpath, &t.command);
    }
    check_env(p, &tpath, t);
    let rootfs = t
        .rootfs
        .as_ref()
        .map_or(RootfsSpec::Host, |r| rootfs(p, &tpath, r));
    let res = t.resources.unwrap_or_default();
    p.range(
        &tpath,
        "resources.cpu_millis",
        res.cpu_millis,
        1,
        MAX_CPU_MILLIS,
    );
    p.range(
        &tpath,
        "resources.memory_mb",
        res.memory_mb,
        1,
        MAX_MEMORY_MB,
    );
    p.range(
        &tpath,
        "kill_timeout_ms",
        t.kill_timeout_ms,
        0,
        MAX_KILL_TIMEOUT_MS,
    );
    check_user(p, &tpath, &t.user);
    if !t.workdir.is_empty() {
        if let Err(e) = check_abs_path(&t.workdir) {
            p.push(&tpath, format!("workdir {e}"));
        }
    }
    let volumes = check_volumes(p, &tpath, &t.volumes);
    let logs = t.logs.as_ref().map(|l| {
        p.range(
            &tpath,
            "logs.max_size_mb",
            l.max_size_mb,
            1,
            MAX_LOG_SIZE_MB,
        );
        p.range(&tpath, "logs.max_files", l.max_files, 1, MAX_LOG_FILES);
        LogSpec {
            max_size_mb: u32::try_from(l.max_size_mb).unwrap_or(0),
            max_files: u32::try_from(l.max_files).unwrap_or(0),
        }
    });
    TaskSpec {
        logs,
        user: t.user.clone(),
        workdir: t.workdir.clone(),
        volumes,
        name: t.name.clone(),
        command: t.command.clone(),
        env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        resources: Resources {
            cpu_millis: clamp_u64(res.cpu_millis),
            memory_mb: clamp_u64(res.memory_mb),
        },
        kill_timeout_ms: clamp_u64(t.kill_timeout_ms),
        rootfs,
    }
}

/// Environment names without `=` or NUL, values without NUL.
fn check_env(p: &mut Problems, tpath: &str, t: &pb::Task) {
    for k in t.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(
                tpath,
                format!("env name {k:?} must be non-empty without '=' or NUL"),
            );
        }
    }
    for (k, v) in &t.env {
        if v.contains('\0') {
            p.push(tpath, format!("env {k:?} value contains a NUL byte"));
        }
    }
}

/// A task's `rootfs`: `host` (no path), or `dir`/`oci` with an absolute path.
fn rootfs(p: &mut Problems, tpath: &str, r: &pb::Rootfs) -> RootfsSpec {
    match RootfsKind::parse("rootfs.type", &r.kind) {
        Ok(RootfsKind::Host) => {
            if !r.path.is_empty() {
                p.push(tpath, "rootfs.path is only for type \"dir\"");
            }
            RootfsSpec::Host
        }
        Ok(kind @ (RootfsKind::Dir | RootfsKind::Oci)) => {
            if !r.path.starts_with('/') {
                p.push(
                    tpath,
                    format!("rootfs.path must be an absolute path, got {:?}", r.path),
                );
            } else if r.path.contains(['\0', ',', ':', '\\']) {
                p.push(
                    tpath,
                    format!(
                        "rootfs.path {:?} may not contain NUL, ',', ':' or '\\'",
                        r.path
                    ),
                );
            }
            if kind == RootfsKind::Oci {
                RootfsSpec::Oci {
                    path: r.path.clone(),
                }
            } else {
                RootfsSpec::Dir {
                    path: r.path.clone(),
                }
            }
        }
        Err(e) => {
            p.push(
                tpath,
                format!(
                    "rootfs.type {:?} is not one of \"host\", \"dir\", \"oci\"",
                    e.value
                ),
            );
            RootfsSpec::Host
        }
    }
}

/// `Ok` for an absolute path made of normal components (no `.`, `..`,
/// empty components or NUL); the error completes "<field> ...".
fn check_abs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("must be an absolute path, got {path:?}"));
    }
    if path.contains('\0') || path[1..].split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{path:?} may not contain `.`, `..` or NUL"));
    }
    Ok(())
}

/// `user`: empty, or `user[:group]` where each is a number (a 32-bit id)
/// or a name of 1-32 characters from `[A-Za-z0-9_.-]`.
fn check_user(p: &mut Problems, path: &str, user: &str) {
    if user.is_empty() {
        return;
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    for (what, part) in [("user", Some(u)), ("group", g)] {
        let Some(part) = part else { continue };
        let ok = if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse::<u32>().is_ok()
        } else {
            !part.is_empty()
                && part.len() <= 32
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !ok {
            p.push(
                path,
                format!(
                    "user {user:?}: the {what} must be a number below 2^32 or a name of 1-32 \
                     characters from [A-Za-z0-9_.-] (forms: \"uid\", \"uid:gid\", \"name\", \
                     \"name:group\")"
                ),
            );
            return;
        }
    }
}

fn check_volumes(p: &mut Problems, path: &str, volumes: &[pb::Volume]) -> Vec<VolumeSpec> {
    let mut out = Vec::with_capacity(volumes.len());
    let mut targets = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vpath = format!("{path} volume #{}", i + 1);
        let mut ok = true;
        let mut problem = |p: &mut Problems, msg: String| {
            ok = false;
            p.push(&vpath, msg);
        };
        match check_abs_path(&v.target) {
            Err(e) => problem(p, format!("target {e}")),
            Ok(()) => {
                let target = v.target.trim_end_matches('/');
                if target.is_empty() {
                    problem(p, "target / would hide the whole root filesystem".into());
                } else if let Some(r) = RESERVED_VOLUME_TARGETS
                    .iter()
                    .find(|r| target == **r || target.starts_with(&format!("{r}/")))
                {
                    problem(
                        p,
                        format!(
                            "target {:?} is at or under {r}, which the runtime provides",
                            v.target
                        ),
                    );
                } else if !targets.insert(target.to_owned()) {
                    problem(
                        p,
                        format!("target {:?} is used by another volume", v.target),
                    );
                }
            }
        }
        let volume = match VolumeKind::parse("type", &v.kind) {
            Ok(VolumeKind::Bind) => {
                if let Err(e) = check_abs_path(&v.source) {
                    problem(p, format!("source {e}"));
                }
                if v.size_mb != 0 {
                    problem(p, "size_mb is only for type \"tmpfs\"".into());
                }
                VolumeSpec::Bind {
                    source: v.source.clone(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                }
            }
            Ok(VolumeKind::Tmpfs) => {
                if !v.source.is_empty() {
                    problem(p, "source is only for type \"bind\"".into());
                }
                if v.read_only {
                    problem(
                        p,
                        "read_only is only for type \"bind\" (an empty read-only tmpfs is useless)"
                            .into(),
                    );
                }
                if !(0..=MAX_TMPFS_MB).contains(&v.size_mb) {
                    problem(
                        p,
                        format!(
                            "size_mb must be between 0 and {MAX_TMPFS_MB}, got {}",
                            v.size_mb
                        ),
                    );
                }
                VolumeSpec::Tmpfs {
                    target: v.target.clone(),
                    size_mb: clamp_u64(v.size_mb),
                }
            }
            Err(e) => {
                problem(
                    p,
                    format!("type {:?} is not one of \"bind\", \"tmpfs\"", e.value),
                );
                continue;
            }
        };
        if ok {
            out.push(volume);
        }
    }
    out
}

fn check_command(p: &mut Problems, path: &str, command: &[String]) {
    match command.first() {
        None => p.push(path, "command must not be empty"),
        Some(prog) if prog.trim().is_empty() => {
            p.push(path, "command[0] (the program) must not be empty")
        }
        Some(_) => {}
    }
    if command.len() > MAX_ARGS {
        p.push(
            path,
            format!(
                "command has {} arguments, at most {MAX_ARGS}",
                command.len()
            ),
        );
    }
    if let Some(i) = command.iter().position(|a| a.contains('\0')) {
        p.push(path, format!("command[{i}] contains a NUL byte"));
    }
}
