//! Admission: what the agent checks and resolves before a task's
//! supervisor is spawned, so that a refused task leaves nothing behind.
//!
//! - [`check_rootfs`]: the node policy's `allowed_rootfs_dirs` and
//!   `allowed_images` (before an image is even read);
//! - [`admit`]: the seccomp filter from the policy (`unconfined` only
//!   where it allows it), the user namespace from the policy, the task's user
//!   looked up in its own `/etc/passwd` and `/etc/group` and checked
//!   against the mapped range, bind volume sources canonicalized and
//!   checked against `allowed_host_paths`, and targets and working
//!   directories that the read-only host view could not create.

use std::path::{Path, PathBuf};

use super::identity::{check_mapped, IdMap, RunAs, UserSpec};
use super::oci::read_in_layers;
use super::rootfs::{read_in_root, Rootfs};
use super::volume::Volume;
use super::{RuntimeError, SpecProblem, TaskSpec};
use crate::policy::NodePolicy;
use crate::seccomp;

mod host_view;
pub(super) use host_view::check_host_root;
use host_view::check_in_host_view;

fn refused(spec: &TaskSpec, problem: impl Into<SpecProblem>) -> RuntimeError {
    RuntimeError::PolicyRefused {
        alloc_id: spec.alloc_id.clone(),
        task: spec.task.clone(),
        problem: problem.into(),
    }
}

fn invalid(spec: &TaskSpec, problem: impl Into<SpecProblem>) -> RuntimeError {
    RuntimeError::InvalidSpec {
        alloc_id: spec.alloc_id.clone(),
        task: spec.task.clone(),
        problem: problem.into(),
    }
}

fn list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Whether `path` is allowed by `allowed`, both as written and with its
/// symlinks resolved (so a link under an allowed directory cannot lead
/// out of it). Returns the canonical path, or `None` when `path` does not
/// exist (then only as written); `Err` describes the refused path.
fn allowed_path(allowed: &[PathBuf], path: &Path) -> Result<Option<PathBuf>, String> {
    let canonical = std::fs::canonicalize(path).ok();
    let lexical_ok = NodePolicy::allows(allowed, path);
    match canonical {
        Some(c) if lexical_ok && NodePolicy::allows(allowed, &c) => Ok(Some(c)),
        None if lexical_ok => Ok(None),
        Some(c) if c != path => Err(format!(
            "{} (which resolves to {}) is not",
            path.display(),
            c.display()
        )),
        _ => Err(format!("{} is not", path.display())),
    }
}

/// Refuses a `dir` rootfs outside `allowed_rootfs_dirs` and an image
/// outside `allowed_images`; an empty list allows none, or any when the
/// policy says so ([`NodePolicy::any_rootfs`]); `/` as a `dir` rootfs is
/// always refused.
pub(super) fn check_rootfs(policy: &NodePolicy, spec: &TaskSpec) -> Result<(), RuntimeError> {
    // An image from a registry: its prefixes and digest rule, before any
    // request is sent.
    if let Some(Rootfs::Oci { image }) = &spec.rootfs {
        if let Some(r) = super::rootfs::registry_ref(image) {
            return policy.check_image_ref(&r).map_err(|m| refused(spec, m));
        }
    }
    let (setting, allowed, path, what) = match &spec.rootfs {
        Some(Rootfs::Dir { path }) => (
            "allowed_rootfs_dirs",
            &policy.allowed_rootfs_dirs,
            path,
            "rootfs directory",
        ),
        Some(Rootfs::Oci { image }) => ("allowed_images", &policy.allowed_images, image, "image"),
        _ => return Ok(()),
    };
    if path == Path::new("/") {
        return Err(refused(
            spec,
            format!("{what} / is the host itself: use rootfs type \"host\" for a read-only view"),
        ));
    }
    if allowed.is_empty() {
        if policy.any_rootfs {
            return Ok(());
        }
        return Err(refused(
            spec,
            format!(
                "{what} {} is not allowed: this node allows none ({setting} is empty in its \
                 policy; list the directories in the file given to --policy)",
                path.display()
            ),
        ));
    }
    // A missing path that would be allowed is named by the checks that
    // follow (rootfs validation, image resolution).
    allowed_path(allowed, path).map(drop).map_err(|e| {
        refused(
            spec,
            format!(
                "{what} {e} allowed: {setting} = {} (a path must be one of them or under one)",
                list(allowed)
            ),
        )
    })
}

/// The spec as the supervisor will run it: user namespace from the
/// policy, `run_as` resolved, bind sources canonical. `layers` are the
/// unpacked image layers (top first) of an OCI rootfs.
pub(super) fn admit(
    policy: &NodePolicy,
    spec: &TaskSpec,
    layers: Option<&[PathBuf]>,
) -> Result<TaskSpec, RuntimeError> {
    let mut out = spec.clone();
    out.seccomp = seccomp::admit(&policy.seccomp, &spec.seccomp).map_err(|e| refused(spec, e))?;
    let ns = &policy.user_namespace;
    out.user_namespace = ns.enabled.then_some(IdMap {
        host_base: ns.host_base,
        size: ns.size,
    });
    out.run_as = match &spec.user {
        None => None,
        Some(user) => Some(resolve_user(
            spec,
            user,
            layers,
            out.user_namespace.as_ref(),
        )?),
    };
    for volume in &mut out.volumes {
        if let Volume::Bind { source, .. } = volume {
            let canonical = allowed_path(&policy.allowed_host_paths, source).map_err(|e| {
                refused(
                    spec,
                    format!(
                        "volume source {e} allowed: allowed_host_paths = {} \
                         (a path must be one of them or under one)",
                        list(&policy.allowed_host_paths)
                    ),
                )
            })?;
            *source = canonical.ok_or_else(|| {
                invalid(
                    spec,
                    format!(
                        "volume source {} does not exist on the node",
                        source.display()
                    ),
                )
            })?;
        }
    }
    out.host_root = None;
    if matches!(spec.rootfs, Some(Rootfs::Host)) {
        out.host_root = Some(policy.host_root.clone());
        check_in_host_view(&policy.host_root, spec)?;
    }
    if spec.rootfs.is_none() {
        if let Some(w) = spec.workdir.as_ref().filter(|w| !w.is_dir()) {
            return Err(invalid(
                spec,
                format!("workdir {} is not a directory on the host", w.display()),
            ));
        }
    }
    Ok(out)
}

/// Resolves `user` in the task's own `/etc/passwd` and `/etc/group` and
/// checks that both ids are mapped.
fn resolve_user(
    spec: &TaskSpec,
    user: &str,
    layers: Option<&[PathBuf]>,
    map: Option<&IdMap>,
) -> Result<RunAs, RuntimeError> {
    let parsed = UserSpec::parse(user).map_err(|e| invalid(spec, e))?;
    let read = |file: &str| -> Option<String> {
        if !parsed.needs_lookup() {
            return None;
        }
        let path = Path::new(file);
        let bytes = match (&spec.rootfs, layers) {
            (Some(Rootfs::Oci { .. }), Some(layers)) => read_in_layers(layers, path),
            (Some(Rootfs::Dir { path: root }), _) => read_in_root(root, path),
            _ => read_in_root(Path::new("/"), path),
        };
        bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let (passwd, group) = (read("/etc/passwd"), read("/etc/group"));
    let run_as = parsed
        .resolve(passwd.as_deref(), group.as_deref())
        .map_err(|e| invalid(spec, e))?;
    check_mapped(user, run_as, map).map_err(|e| refused(spec, e))?;
    Ok(run_as)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(rootfs: Rootfs) -> TaskSpec {
        TaskSpec {
            alloc_id: "a".into(),
            task: "t".into(),
            rootfs: Some(rootfs),
            ..Default::default()
        }
    }

    #[test]
    fn images_and_rootfs_dirs_are_bounded_by_the_policy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let images = tmp.path().join("images");
        std::fs::create_dir_all(images.join("app")).expect("mkdir");
        let policy = NodePolicy {
            allowed_images: vec![images.clone()],
            ..Default::default()
        };
        let ok = spec(Rootfs::Oci {
            image: images.join("app"),
        });
        check_rootfs(&policy, &ok).expect("allowed image");
        // Missing but under an allowed path: the resolver names it later.
        let missing = spec(Rootfs::Oci {
            image: images.join("missing.tar"),
        });
        check_rootfs(&policy, &missing).expect("missing image is not a policy matter");
        let other = spec(Rootfs::Oci {
            image: tmp.path().join("other.tar"),
        });
        let e = check_rootfs(&policy, &other).unwrap_err().to_string();
        assert!(
            e.contains("other.tar is not allowed: allowed_images"),
            "{e}"
        );
        // A dir rootfs is unbounded while allowed_rootfs_dirs is empty.
        check_rootfs(
            &policy,
            &spec(Rootfs::Dir {
                path: tmp.path().to_owned(),
            }),
        )
        .expect("any rootfs dir");
    }

    #[test]
    fn the_user_namespace_comes_from_the_policy() {
        let mut policy = NodePolicy::default();
        let admitted = admit(&policy, &spec(Rootfs::Host), None).expect("admit");
        assert_eq!(
            admitted.user_namespace,
            Some(IdMap {
                host_base: policy.user_namespace.host_base,
                size: policy.user_namespace.size
            })
        );
        assert_eq!(admitted.run_as, None);
        policy.user_namespace.enabled = false;
        let mut s = spec(Rootfs::Host);
        s.user = Some("70000:70000".into());
        let admitted = admit(&policy, &s, None).expect("no range without a namespace");
        assert_eq!(admitted.user_namespace, None);
        assert_eq!(
            admitted.run_as,
            Some(RunAs {
                uid: 70000,
                gid: 70000
            })
        );
    }
}
