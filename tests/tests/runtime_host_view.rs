//! The minimal `host` root, probed from inside a task: the host's program
//! directories and `/etc` (without its secrets), the task's own `/tmp` and
//! `/run`, what the node policy adds (read-only unless writable) and
//! nothing else of the host: no `/root`, `/home`, `/srv`, `/var`, no
//! directory the policy does not add. The task starts with umask 0022,
//! not the supervisor's 0077.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;
use drover_agent::policy::host_root::HOST_VIEW_DIRS;
use drover_agent::policy::{HostRootPath, NodePolicy, DEFAULT_USERNS_BASE};
use drover_agent::runtime::Rootfs;
use drover_tests::runtime::{mount_count, task_spec, Harness};

#[tokio::test]
async fn the_host_view_shows_programs_etc_and_additions_only() -> Result<()> {
    // Host directories that no default view shows.
    let outside = tempfile::Builder::new()
        .prefix("drover-view-")
        .tempdir_in("/var/tmp")?;
    std::fs::set_permissions(outside.path(), PermissionsExt::from_mode(0o755))?;
    let (ro, rw, other) = (
        outside.path().join("ro"),
        outside.path().join("rw"),
        outside.path().join("other"),
    );
    for d in [&ro, &rw, &other] {
        std::fs::create_dir(d)?;
        std::fs::set_permissions(d, PermissionsExt::from_mode(0o755))?;
    }
    for f in [ro.join("hello"), ro.join("secret"), other.join("x")] {
        std::fs::write(&f, "from the host\n")?;
        std::fs::set_permissions(&f, PermissionsExt::from_mode(0o644))?;
    }
    // Root inside may write there.
    std::os::unix::fs::chown(&rw, Some(DEFAULT_USERNS_BASE), Some(DEFAULT_USERNS_BASE))?;
    let mut policy = NodePolicy::default();
    policy.host_root.add = vec![
        HostRootPath {
            path: ro.clone(),
            writable: false,
        },
        HostRootPath {
            path: rw.clone(),
            writable: true,
        },
    ];
    policy.host_root.hide = vec![ro.join("secret")];
    let h = Harness::builder()
        .cgroups("hostview")
        .policy(policy)
        .build()?;
    let mounts = mount_count()?;

    let (ro_s, rw_s, other_s) = (ro.display(), rw.display(), other.display());
    let script = format!(
        "ls / | tr '\\n' ' '; echo; ls /var/tmp; \
         for d in /root /home /srv /var/lib {other_s}; do test -e $d && echo visible:$d; done; \
         cat {ro_s}/hello; (echo x > {ro_s}/x) 2>/dev/null && echo ro-writable; \
         echo data > {rw_s}/out && echo rw-ok; \
         echo secret:$(cat {ro_s}/secret 2>/dev/null | wc -c); \
         echo shadow:$(cat /etc/shadow 2>/dev/null | wc -c); \
         echo private:$(ls -A /etc/ssl/private 2>/dev/null | wc -l); \
         mkdir /new 2>/dev/null && echo root-writable; \
         test -x /usr/bin/env && grep -q '^root:' /etc/passwd && echo programs-ok; \
         echo umask:$(umask)"
    );
    let mut spec = task_spec("view", &["sh", "-c", &script]);
    spec.rootfs = Some(Rootfs::Host);
    let out = h.probe_and_remove(&spec).await?;

    let mut top: Vec<String> = HOST_VIEW_DIRS
        .iter()
        .filter(|d| Path::new(d).exists() || Path::new(d).is_symlink())
        .map(|d| d.trim_start_matches('/').to_string())
        .chain(["dev", "proc", "run", "sys", "tmp", "var"].map(String::from))
        .collect();
    top.sort();
    let name = outside
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let expected = format!(
        "{} \n{name}\nfrom the host\nrw-ok\nsecret:0\nshadow:0\nprivate:0\nprograms-ok\numask:0022\n",
        top.join(" ")
    );
    assert_eq!(out, expected);
    assert!(!ro.join("x").exists());
    assert_eq!(std::fs::read_to_string(rw.join("out"))?, "data\n");
    assert_eq!(mount_count()?, mounts, "a mount was left behind");
    Ok(())
}

#[tokio::test]
async fn a_policy_may_not_show_the_node_state_to_tasks() -> Result<()> {
    let h = Harness::builder().cgroups("hostview-state").build()?;
    let mut policy = NodePolicy::default();
    // The runtime's state directory lies below the harness's.
    policy.host_root.add = vec![HostRootPath {
        path: h.tmp().to_path_buf(),
        writable: false,
    }];
    let rt = h.rt.clone().with_policy(policy);
    let mut spec = task_spec("state", &["true"]);
    spec.rootfs = Some(Rootfs::Host);
    let err = rt.start(&spec).await.expect_err("state shown");
    assert!(
        err.to_string().contains("would show the node's task state"),
        "{err}"
    );
    assert!(!h.root().join("state").exists(), "task dir left behind");
    Ok(())
}
