//! A task's volumes: targets absolute, distinct and outside what the
//! runtime provides; `bind` with an absolute source, `tmpfs` with a size.

use std::collections::BTreeSet;

use drover_proto::v1 as pb;

use super::task::check_abs_path;
use super::{clamp_u64, Problems};
use crate::job::{VolumeSpec, MAX_TMPFS_MB, RESERVED_VOLUME_TARGETS};
use crate::wire::VolumeKind;

/// Checks a task's volumes (the task at `path`); only those without a
/// problem are returned.
pub(super) fn check_volumes(
    p: &mut Problems,
    path: &str,
    volumes: &[pb::Volume],
) -> Vec<VolumeSpec> {
    let mut out = Vec::with_capacity(volumes.len());
    let mut targets = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vpath = format!("{path} volume #{}", i + 1);
        let mut problems = Vec::new();
        if let Some(msg) = target_problem(v, &mut targets) {
            problems.push(msg);
        }
        let volume = volume(v, &mut problems);
        let ok = problems.is_empty();
        for msg in problems {
            p.push(&vpath, msg);
        }
        if let (true, Some(volume)) = (ok, volume) {
            out.push(volume);
        }
    }
    out
}

/// What is wrong with `v`'s target, if anything; a good one is added to
/// `targets` (the targets of the task's volumes so far).
fn target_problem(v: &pb::Volume, targets: &mut BTreeSet<String>) -> Option<String> {
    if let Err(e) = check_abs_path(&v.target) {
        return Some(format!("target {e}"));
    }
    let target = v.target.trim_end_matches('/');
    if target.is_empty() {
        return Some("target / would hide the whole root filesystem".into());
    }
    if let Some(r) = RESERVED_VOLUME_TARGETS
        .iter()
        .find(|r| target == **r || target.starts_with(&format!("{r}/")))
    {
        return Some(format!(
            "target {:?} is at or under {r}, which the runtime provides",
            v.target
        ));
    }
    if !targets.insert(target.to_owned()) {
        return Some(format!("target {:?} is used by another volume", v.target));
    }
    None
}

/// The volume `v` asks for, its problems added to `problems`; `None` for
/// an unknown type.
fn volume(v: &pb::Volume, problems: &mut Vec<String>) -> Option<VolumeSpec> {
    let kind = match VolumeKind::parse("type", &v.kind) {
        Ok(kind) => kind,
        Err(e) => {
            problems.push(format!(
                "type {:?} is not one of \"bind\", \"tmpfs\"",
                e.value
            ));
            return None;
        }
    };
    Some(match kind {
        VolumeKind::Bind => {
            if let Err(e) = check_abs_path(&v.source) {
                problems.push(format!("source {e}"));
            }
            if v.size_mb != 0 {
                problems.push("size_mb is only for type \"tmpfs\"".into());
            }
            VolumeSpec::Bind {
                source: v.source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
            }
        }
        VolumeKind::Tmpfs => {
            if !v.source.is_empty() {
                problems.push("source is only for type \"bind\"".into());
            }
            if v.read_only {
                problems.push(
                    "read_only is only for type \"bind\" (an empty read-only tmpfs is useless)"
                        .into(),
                );
            }
            if !(0..=MAX_TMPFS_MB).contains(&v.size_mb) {
                problems.push(format!(
                    "size_mb must be between 0 and {MAX_TMPFS_MB}, got {}",
                    v.size_mb
                ));
            }
            VolumeSpec::Tmpfs {
                target: v.target.clone(),
                size_mb: clamp_u64(v.size_mb),
            }
        }
    })
}
