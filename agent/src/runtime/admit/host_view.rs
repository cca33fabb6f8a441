//! Admission of a task with the `host` root: what it names (command,
//! working directory, volume targets) must be in the host view the
//! supervisor builds (see `policy::host_root`), and the view must not show
//! the runtime's own state.

use std::path::Path;

use super::super::rootfs::{is_dir_in, open_in_root, Rootfs};
use super::super::spec::resolve_command_in;
use super::super::volume::HOST_WRITABLE_DIRS;
use super::super::{RuntimeError, TaskSpec};
use super::{invalid, refused};
use crate::policy::host_root::HOST_VIEW_DIRS;
use crate::policy::{HostRootPolicy, NodePolicy};

/// What the host view shows, for error messages.
fn shown(view: &HostRootPolicy) -> String {
    let mut dirs: Vec<String> = HOST_VIEW_DIRS.iter().map(|d| d.to_string()).collect();
    dirs.extend(view.add.iter().map(|a| a.path.display().to_string()));
    dirs.join(", ")
}

/// Refuses a `host` root whose policy additions hold the runtime's state
/// directory `state_root` (every task's spec, environment and logs) or lie
/// inside it.
pub(in crate::runtime) fn check_host_root(
    policy: &NodePolicy,
    spec: &TaskSpec,
    state_root: &Path,
) -> Result<(), RuntimeError> {
    if !matches!(spec.rootfs, Some(Rootfs::Host)) {
        return Ok(());
    }
    let state = std::fs::canonicalize(state_root).unwrap_or_else(|_| state_root.to_path_buf());
    for add in &policy.host_root.add {
        let path = std::fs::canonicalize(&add.path).unwrap_or_else(|_| add.path.clone());
        if state.starts_with(&path) || path.starts_with(&state) {
            return Err(refused(
                spec,
                format!(
                    "host_root.add {} would show the node's task state {} to tasks; \
                     add a directory that does not hold it",
                    add.path.display(),
                    state_root.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The host view is read-only and minimal: the command, the working
/// directory and every volume target must exist in it, or lie below its
/// private tmpfs `/tmp` and `/run`.
pub(super) fn check_in_host_view(
    view: &HostRootPolicy,
    spec: &TaskSpec,
) -> Result<(), RuntimeError> {
    let under_tmpfs = |p: &Path| {
        HOST_WRITABLE_DIRS
            .iter()
            .any(|d| p.starts_with(Path::new(d)))
    };
    for volume in &spec.volumes {
        let target = volume.target();
        let exists = view.shows(target) && open_in_root(Path::new("/"), target).is_some();
        if !exists && !under_tmpfs(target) {
            return Err(invalid(
                spec,
                format!(
                    "volume target {} does not exist in the host view, which is read-only \
                     and shows only {}; use an existing path there or one under {}",
                    target.display(),
                    shown(view),
                    HOST_WRITABLE_DIRS.join(" or ")
                ),
            ));
        }
    }
    if let Some(w) = &spec.workdir {
        let exists = view.shows(w) && is_dir_in(Path::new("/"), w);
        if !exists && !under_tmpfs(w) {
            return Err(invalid(
                spec,
                format!(
                    "workdir {} is not a directory in the host view, which is read-only \
                     and shows only {}; use an existing directory there or one under {}",
                    w.display(),
                    shown(view),
                    HOST_WRITABLE_DIRS.join(" or ")
                ),
            ));
        }
    }
    if let Ok(program) = resolve_command_in(spec, Path::new("/")) {
        if !view.shows(&program) {
            return Err(invalid(
                spec,
                format!(
                    "command {} is not in the host view, which shows only {} \
                     (the node policy's host_root.add can show more)",
                    program.display(),
                    shown(view)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::HostRootPath;
    use crate::runtime::Volume;

    fn host_spec(command: &str) -> TaskSpec {
        TaskSpec {
            alloc_id: "a".into(),
            task: "t".into(),
            command: vec![command.into()],
            rootfs: Some(Rootfs::Host),
            ..Default::default()
        }
    }

    #[test]
    fn names_outside_the_view_are_refused() {
        let view = HostRootPolicy::default();
        check_in_host_view(&view, &host_spec("/bin/sh")).expect("/bin/sh is shown");
        // A host directory outside the view.
        let mut s = host_spec("/bin/sh");
        s.workdir = Some(PathBuf::from("/var"));
        let e = check_in_host_view(&view, &s).unwrap_err().to_string();
        assert!(
            e.contains("workdir /var is not a directory in the host view"),
            "{e}"
        );
        let mut s = host_spec("/bin/sh");
        s.volumes = vec![Volume::Tmpfs {
            target: PathBuf::from("/root"),
            size_mb: 1,
        }];
        let e = check_in_host_view(&view, &s).unwrap_err().to_string();
        assert!(e.contains("volume target /root does not exist"), "{e}");
        s.volumes = vec![Volume::Tmpfs {
            target: PathBuf::from("/tmp/new"),
            size_mb: 1,
        }];
        check_in_host_view(&view, &s).expect("below the private /tmp");
    }

    #[test]
    fn additions_may_not_hold_the_state_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("data/allocs");
        std::fs::create_dir_all(&state).unwrap();
        let mut policy = NodePolicy::default();
        policy.host_root.add = vec![HostRootPath {
            path: tmp.path().join("data"),
            writable: false,
        }];
        let e = check_host_root(&policy, &host_spec("/bin/sh"), &state)
            .unwrap_err()
            .to_string();
        assert!(e.contains("would show the node's task state"), "{e}");
        policy.host_root.add[0].path = tmp.path().join("other");
        check_host_root(&policy, &host_spec("/bin/sh"), &state).expect("unrelated path");
    }
}
