//! Root-only e2e tests of tasks with a root filesystem of their own
//! ([`Rootfs::Dir`] over a busybox-static tree built here, and
//! [`Rootfs::Host`]), each property probed from inside the container.
//! Build the binary first: `cargo build -p drover-cli`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use drover_agent::policy::NodePolicy;
use drover_agent::runtime::{
    Rootfs, RuntimeError, TaskSpec, TaskState, DEV_ENTRIES, MASKED_PATHS, READONLY_PATHS,
};
use drover_tests::runtime::{busybox_tree, mount_count, Harness};

/// Busybox applets linked into the test rootfs's `/bin`.
const APPLETS: [&str; 20] = [
    "sh", "ls", "cat", "id", "mount", "touch", "echo", "test", "rm", "mkdir", "sleep", "grep",
    "wc", "head", "hostname", "true", "env", "sort", "tr", "stat",
];

/// Marker file at the root of the test rootfs.
const MARKER: &str = "drover-rootfs-marker";

/// A harness with its busybox rootfs built at [`Harness::rootfs`].
fn harness() -> Result<Harness> {
    let h = Harness::new()?;
    build_rootfs(&h.rootfs())?;
    Ok(h)
}

/// A busybox-static tree: `/bin/busybox`, applets as relative links,
/// one absolute link (resolved inside the rootfs), a marker file, and
/// `/proc` and `/dev` but no `/sys` or `/tmp` (the runtime creates those
/// in the overlay's upper dir).
fn build_rootfs(root: &Path) -> Result<()> {
    for dir in ["bin", "proc", "dev", "etc"] {
        std::fs::create_dir_all(root.join(dir))
            .with_context(|| format!("mkdir {}", root.join(dir).display()))?;
    }
    busybox_tree(root, &APPLETS)?;
    // Resolvable only inside the rootfs: the host has no /drover-bb.
    symlink("bin", root.join("drover-bb")).context("linking drover-bb")?;
    symlink("/drover-bb/busybox", root.join("bin/printf")).context("linking printf")?;
    std::fs::write(root.join(MARKER), "rootfs\n").context("writing the marker")?;
    Ok(())
}

/// [`drover_tests::runtime::task_spec`] on `rootfs`.
fn task_spec(alloc_id: &str, rootfs: Rootfs, command: &[&str]) -> TaskSpec {
    TaskSpec {
        rootfs: Some(rootfs),
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

/// Every path below `dir`, relative and sorted, with its size for files.
fn tree(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            let rel = entry.path().strip_prefix(dir)?.to_owned();
            out.push((rel, if meta.is_file() { meta.len() } else { 0 }));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn dir_rootfs_is_the_root_and_writes_go_to_the_overlay() -> Result<()> {
    let h = harness()?;
    let mounts_before = mount_count()?;
    let lower_before = tree(&h.rootfs())?;
    let spec = task_spec(
        "dir",
        h.dir_rootfs(),
        &[
            "sh",
            "-c",
            &format!(
                "cat /{MARKER}; test -e /etc/debian_version && echo host-visible; \
                 test -e /usr && echo usr-visible; echo written > /new-file; cat /new-file; \
                 rm /bin/true; test -e /bin/true || echo removed; echo $$; hostname"
            ),
        ],
    );
    let out = h.probe(&spec).await?;
    assert_eq!(out, "rootfs\nwritten\nremoved\n1\ndir-host\n");
    assert_eq!(tree(&h.rootfs())?, lower_before, "the lower dir changed");
    let upper = h.root().join("dir/main/rootfs/upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("new-file"))?,
        "written\n"
    );
    assert!(!h.rootfs().join("new-file").exists());
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");

    h.rt.remove("dir", "main")?;
    assert!(!h.root().join("dir").exists(), "task dir left behind");
    Ok(())
}

#[tokio::test]
async fn absolute_links_and_bare_names_resolve_inside_the_rootfs() -> Result<()> {
    let h = harness()?;
    let spec = task_spec("abs", h.dir_rootfs(), &["/bin/printf", "via-link\\n"]);
    assert_eq!(h.probe(&spec).await?, "via-link\n");
    let spec = task_spec("bare", h.dir_rootfs(), &["echo", "bare"]);
    assert_eq!(h.probe(&spec).await?, "bare\n");
    Ok(())
}

#[tokio::test]
async fn host_rootfs_is_read_only_with_private_tmp_and_run() -> Result<()> {
    let h = harness()?;
    let mounts_before = mount_count()?;
    let name = format!("drover-rootfs-test-{}", std::process::id());
    let script = format!(
        "touch /usr/{name} 2>/dev/null && echo usr-writable; \
         touch /{name} 2>/dev/null && echo root-writable; \
         touch /tmp/{name} && echo tmp-ok; touch /run/{name} && echo run-ok; \
         test -e /etc/debian_version && echo host-root; \
         ls /tmp; echo $$"
    );
    let spec = task_spec("host", Rootfs::Host, &["sh", "-c", &script]);
    let out = h.probe(&spec).await?;
    assert_eq!(out, format!("tmp-ok\nrun-ok\nhost-root\n{name}\n1\n"));
    for dir in ["/usr", "/", "/tmp", "/run"] {
        let path = Path::new(dir).join(&name);
        assert!(!path.exists(), "{} appeared on the host", path.display());
    }
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");
    Ok(())
}

#[tokio::test]
async fn dev_is_minimal_and_works() -> Result<()> {
    let h = harness()?;
    for (alloc, rootfs) in [("devdir", h.dir_rootfs()), ("devhost", Rootfs::Host)] {
        let spec = task_spec(
            alloc,
            rootfs,
            &[
                "sh",
                "-c",
                "ls -a /dev | grep -v '^\\.\\.\\?$' | sort | tr '\\n' ' '; echo; \
                 ls /dev/pts; echo data > /dev/null && echo null-ok; \
                 head -c 5 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c; \
                 echo shm > /dev/shm/x && cat /dev/shm/x",
            ],
        );
        let out = h.probe(&spec).await?;
        let mut lines = out.lines();
        let entries: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(entries, DEV_ENTRIES, "{alloc}: /dev");
        let rest: Vec<&str> = lines.collect();
        assert_eq!(rest, ["ptmx", "null-ok", "5", "5", "shm"], "{alloc}");
    }
    Ok(())
}

#[tokio::test]
async fn sys_is_read_only_and_proc_is_its_own() -> Result<()> {
    let h = harness()?;
    let spec = task_spec(
        "sys",
        h.dir_rootfs(),
        &[
            "sh",
            "-c",
            "test -e /sys/kernel && echo sys-present; \
             touch /sys/x 2>/dev/null && echo sys-writable; \
             echo 1 > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null && echo sys-written; \
             grep -c '^[0-9]* [0-9]* [0-9:]* [^ ]* /sys ro[, ]' /proc/self/mountinfo; \
             grep '^[0-9]* [0-9]* [0-9:]* [^ ]* /sys[/ ]' /proc/self/mountinfo \
               | grep -vc '^[0-9]* [0-9]* [0-9:]* [^ ]* /sys[^ ]* ro[, ]'; \
             echo $$; ls /proc | grep -c '^[0-9]'",
        ],
    );
    let out = h.probe(&spec).await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 5, "unexpected output: {out:?}");
    assert_eq!(lines[0], "sys-present");
    assert_eq!(lines[1], "1", "/sys not mounted read-only: {out}");
    assert_eq!(lines[2], "0", "a mount below /sys is writable: {out}");
    assert_eq!(lines[3], "1", "not PID 1");
    // sh, and ls and grep of the pipeline: only this task's processes.
    let procs: usize = lines[4].parse()?;
    assert!(procs <= 3, "{procs} processes visible in /proc");
    Ok(())
}

#[tokio::test]
async fn kernel_internals_are_masked_and_kernel_knobs_read_only() -> Result<()> {
    // With the user namespace off the task's root is the host's root (less
    // the dropped capabilities): only the masks stand in the way.
    let mut policy = NodePolicy::default();
    policy.user_namespace.enabled = false;
    let h = Harness::builder().policy(policy).build()?;
    build_rootfs(&h.rootfs())?;
    // For every path this kernel has: a mount point inside, empty
    // (masked) or mounted read-only.
    // The mount point is mountinfo's fifth field (the fourth, the root
    // inside the file system, may look like a path too).
    let mut probe = "mp='^[0-9]* [0-9]* [0-9:]* [^ ]* '; ".to_owned();
    for path in MASKED_PATHS {
        let path = Path::new(path);
        if !path.exists() {
            continue;
        }
        let p = path.display();
        let empty = if path.is_dir() {
            format!("ls -A {p} | wc -l")
        } else {
            format!("head -c 1 {p} 2>/dev/null | wc -c")
        };
        probe += &format!("echo {p} $(grep -c \"$mp{p} \" /proc/self/mountinfo) $({empty}); ");
    }
    for path in READONLY_PATHS {
        if Path::new(path).exists() {
            probe += &format!("echo {path} $(grep -c \"$mp{path} ro,\" /proc/self/mountinfo) 0; ");
        }
    }
    let out = h
        .probe(&task_spec("masked", h.dir_rootfs(), &["sh", "-c", &probe]))
        .await?;
    let mut seen = 0;
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.get(1..) == Some(&["1", "0"][..]),
            "not masked or not read-only inside (path, mounts, bytes): {line:?}\n{out}"
        );
        seen += 1;
    }
    // Any kernel has /proc/keys, /proc/sys, /proc/bus, /proc/fs, /proc/irq.
    ensure!(seen >= 5, "too few paths probed: {out}");
    Ok(())
}

#[tokio::test]
async fn missing_rootfs_dir_is_refused_before_start() -> Result<()> {
    let h = harness()?;
    let missing = h.tmp().join("no-such-rootfs");
    let spec = task_spec(
        "missing",
        Rootfs::Dir {
            path: missing.clone(),
        },
        &["/bin/sh"],
    );
    let err = h
        .start(&spec)
        .await
        .err()
        .context("a missing rootfs was accepted")?;
    assert!(matches!(err, RuntimeError::InvalidSpec { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "message does not name the path: {message}"
    );
    assert!(!h.root().join("missing").exists(), "task dir left behind");
    Ok(())
}

#[tokio::test]
async fn command_missing_in_the_rootfs_is_refused_before_start() -> Result<()> {
    let h = harness()?;
    // `/bin/bash` and `perl` exist on the host but not in the
    // busybox tree; `nosuch` exists nowhere.
    for (alloc, command) in [
        ("bash", "/bin/bash"),
        ("perl", "perl"),
        ("nosuch", "/bin/nosuch"),
    ] {
        let spec = task_spec(alloc, h.dir_rootfs(), &[command]);
        let err = h
            .start(&spec)
            .await
            .err()
            .with_context(|| format!("{command} was accepted"))?;
        assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(command) && message.contains(&h.rootfs().display().to_string()),
            "message does not name the command and rootfs: {message}"
        );
        assert!(!h.root().join(alloc).exists(), "task dir left behind");
    }
    Ok(())
}

#[tokio::test]
async fn start_stop_cycles_leave_no_mount_or_overlay_dir() -> Result<()> {
    const CYCLES: usize = 50;
    let h = harness()?;
    let mounts_before = mount_count()?;
    let lower_before = tree(&h.rootfs())?;
    let started = Instant::now();
    for i in 0..CYCLES {
        let spec = task_spec("cycle", h.dir_rootfs(), &["sleep", "30"]);
        let state = h.start(&spec).await?;
        if !matches!(state, TaskState::Running { .. }) {
            bail!("cycle {i}: {state:?}");
        }
        let stopped = h.rt.stop("cycle", "main").await?;
        ensure!(
            matches!(stopped, TaskState::Exited { .. }),
            "cycle {i}: {stopped:?}"
        );
        h.rt.remove("cycle", "main")?;
        ensure!(
            !h.root().join("cycle").exists(),
            "cycle {i}: task dir (overlay dirs) left behind"
        );
    }
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");
    assert_eq!(tree(&h.rootfs())?, lower_before, "the lower dir changed");
    assert!(
        std::fs::read_dir(h.root())?.next().is_none(),
        "state root not empty"
    );
    eprintln!("{CYCLES} cycles in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_restart_keeps_the_overlay_and_remove_drops_it() -> Result<()> {
    let h = harness()?;
    let spec = task_spec(
        "again",
        h.dir_rootfs(),
        &["sh", "-c", "echo run >> /runs; wc -l < /runs"],
    );
    assert_eq!(h.probe(&spec).await?, "1\n");
    // Same task directory: stdout.log is appended to.
    assert_eq!(h.probe(&spec).await?, "1\n2\n");
    assert!(
        !h.rootfs().join("runs").exists(),
        "the lower dir was written"
    );
    h.rt.remove("again", "main")?;
    assert!(!h.root().join("again").exists(), "task dir left behind");
    assert_eq!(h.probe(&spec).await?, "1\n", "a new task starts clean");
    Ok(())
}
