//! A task's fields: name, command, env, resources, rootfs, user, workdir,
//! logs, seccomp; its volumes are checked in [`super::volume`].

use std::collections::BTreeSet;

use drover_proto::v1 as pb;

use super::{clamp_u64, constraint, volume, Problems};
use crate::job::{
    LogSpec, Resources, RootfsSpec, SeccompMode, TaskSpec, MAX_ARGS, MAX_CPU_MILLIS,
    MAX_KILL_TIMEOUT_MS, MAX_LOG_FILES, MAX_LOG_SIZE_MB, MAX_MEMORY_MB,
};
use crate::wire::RootfsKind;

/// Checks the `index`th task of the group at `gpath`.
pub(super) fn task(
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
    let volumes = volume::check_volumes(p, &tpath, &t.volumes);
    let seccomp = SeccompMode::parse(&t.seccomp).unwrap_or_else(|| {
        p.push(
            &tpath,
            format!(
                "seccomp {:?} must be \"default\" or \"unconfined\"",
                t.seccomp
            ),
        );
        SeccompMode::Default
    });
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
        constraints: constraint::constraints(p, &tpath, &t.constraints),
        seccomp,
        no_init: t.no_init,
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
        Ok(RootfsKind::Host | RootfsKind::Dir) if !r.image.is_empty() => {
            p.push(
                tpath,
                "rootfs.image is only for type \"oci\" (an image pulled from a registry)",
            );
            RootfsSpec::Host
        }
        Ok(RootfsKind::Oci) if !r.image.is_empty() => {
            if !r.path.is_empty() {
                p.push(
                    tpath,
                    "rootfs: give either path (a local OCI layout) or image (a registry \
                     reference), not both",
                );
            }
            match crate::image_ref::ImageRef::parse(&r.image) {
                Ok(image) => RootfsSpec::Image {
                    image: image.to_string(),
                },
                Err(e) => {
                    p.push(tpath, format!("rootfs.image: {e}"));
                    RootfsSpec::Host
                }
            }
        }
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
pub(super) fn check_abs_path(path: &str) -> Result<(), String> {
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
