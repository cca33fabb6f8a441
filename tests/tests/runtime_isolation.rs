//! Root-only e2e tests of the isolation a task gets beyond its namespaces
//! and root filesystem: the user namespace (on by default), the cgroup
//! namespace, the task's user and working directory, volumes, and the node
//! policy that bounds them. Each property is probed from inside the
//! container, and the host side is checked from `/proc`.
//! Build the binary first: `cargo build -p drover-cli`.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use drover_agent::policy::{NodePolicy, DEFAULT_USERNS_BASE, DEFAULT_USERNS_SIZE};
use drover_agent::runtime::{Rootfs, RuntimeError, TaskSpec, TaskState, Volume};
use drover_tests::procs::{all_parents, namespace};
use drover_tests::runtime::{busybox_tree, mount_count, Harness};

/// Busybox applets linked into the test rootfs's `/bin`.
const APPLETS: [&str; 20] = [
    "sh", "cat", "id", "echo", "stat", "pwd", "df", "grep", "sleep", "touch", "ls", "dd", "test",
    "tr", "mkdir", "head", "true", "tail", "cut", "hostname",
];

/// A harness enforcing `policy`, with its cgroups under
/// `drover-test-<pid>-<name>` and its busybox rootfs built at
/// [`Harness::rootfs`].
fn harness(name: &str, policy: NodePolicy) -> Result<Harness> {
    let h = Harness::builder().cgroups(name).policy(policy).build()?;
    build_rootfs(&h.rootfs())?;
    Ok(h)
}

/// A busybox-static tree with `/etc/passwd` and `/etc/group` (root and
/// `app` 1000:1000), plus a setuid-root copy of the host's `id`
/// (`/usr/bin/suid-id`) with the libraries it needs.
fn build_rootfs(root: &Path) -> Result<()> {
    for dir in ["etc", "usr/bin"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    busybox_tree(root, &APPLETS)?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
    )?;
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:\n",
    )?;
    // coreutils' id honours a setuid bit (busybox drops it itself, so
    // it could not show that the kernel refuses it).
    let id = root.join("usr/bin/suid-id");
    std::fs::copy("/usr/bin/id", &id).context("copying /usr/bin/id")?;
    std::fs::set_permissions(&id, PermissionsExt::from_mode(0o4755))?;
    let ldd = std::process::Command::new("ldd")
        .arg("/usr/bin/id")
        .output()
        .context("running ldd")?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(lib, &to).with_context(|| format!("copying {lib}"))?;
    }
    Ok(())
}

/// [`drover_tests::runtime::task_spec`] on `rootfs` (`None`: the host's
/// mount tree).
fn task_spec(alloc_id: &str, rootfs: impl Into<Option<Rootfs>>, command: &[&str]) -> TaskSpec {
    TaskSpec {
        rootfs: rootfs.into(),
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

/// `/proc/<pid>/<file>` with its whitespace collapsed.
fn proc_line(pid: i32, file: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The `Uid:` or `Gid:` line of `/proc/<pid>/status`, collapsed.
fn status_ids(pid: i32, field: &str) -> Result<String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .with_context(|| format!("no {field} in {path}"))
}

#[tokio::test]
async fn root_inside_is_an_unprivileged_range_outside_and_cgroups_are_rooted() -> Result<()> {
    let h = harness("userns", NodePolicy::default())?;
    // The host view: the task's own /proc, cgroup and user namespaces.
    let spec = task_spec(
        "userns",
        Some(Rootfs::Host),
        &[
            "sh",
            "-c",
            "id -u; id -g; cat /proc/self/cgroup; echo ready; exec sleep 30",
        ],
    );
    let (pid, out) = h.start_until_ready(&spec).await?;
    let base = DEFAULT_USERNS_BASE;
    let map = format!("0 {base} {DEFAULT_USERNS_SIZE}");
    assert_eq!(proc_line(pid, "uid_map")?, map);
    assert_eq!(proc_line(pid, "gid_map")?, map);
    assert_eq!(
        status_ids(pid, "Uid:")?,
        format!("{base} {base} {base} {base}")
    );
    assert_eq!(
        status_ids(pid, "Gid:")?,
        format!("{base} {base} {base} {base}")
    );
    assert_eq!(status_ids(pid, "Groups:")?, "", "supplementary groups kept");
    // It joined its cgroup in every hierarchy (a v1 child joins through
    // `tasks`, one thread: the process, since it has no other).
    let cg = h.cg_path("userns");
    for procs in h.cgroups().procs_files(&cg) {
        let listed = std::fs::read_to_string(&procs)?;
        ensure!(
            listed.lines().any(|l| l == pid.to_string()),
            "task {pid} not in {}: {listed:?}",
            procs.display()
        );
    }
    // The user namespace's helper is reaped once the task runs: the
    // supervisor's only child is the task.
    let supervisor = h.supervisor_pid("userns")?;
    let children: Vec<i32> = all_parents()
        .into_iter()
        .filter(|&(_, parent)| parent == supervisor)
        .map(|(child, _)| child)
        .collect();
    assert_eq!(children, [pid], "the supervisor's children");
    for kind in ["user", "cgroup"] {
        assert_ne!(
            namespace(&pid.to_string(), kind)?,
            namespace("self", kind)?,
            "{kind} shared"
        );
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["0", "0"], "stdout: {out}");
    let cgroups = &lines[2..lines.len() - 1];
    ensure!(!cgroups.is_empty(), "no /proc/self/cgroup lines: {out}");
    for line in cgroups {
        assert!(line.ends_with(":/"), "cgroup not rooted at /: {line}");
    }
    // Root inside has no capability over the namespaces made on the host:
    // it cannot even set its own hostname.
    h.rt.stop("userns", "main").await?;
    h.rt.remove("userns", "main")?;
    let out = h
        .probe_and_remove(&task_spec(
            "hostname",
            h.dir_rootfs(),
            &[
                "sh",
                "-c",
                "hostname x 2>/dev/null && echo changed || echo refused",
            ],
        ))
        .await?;
    assert_eq!(out, "refused\n");
    assert!(!h.any_cgroup_left());
    Ok(())
}

#[tokio::test]
async fn with_user_namespaces_disabled_the_map_is_the_identity() -> Result<()> {
    let mut policy = NodePolicy::default();
    policy.user_namespace.enabled = false;
    let h = harness("nouserns", policy)?;
    let spec = task_spec(
        "nouserns",
        Some(Rootfs::Host),
        &["sh", "-c", "id -u; echo ready; exec sleep 30"],
    );
    let (pid, out) = h.start_until_ready(&spec).await?;
    assert_eq!(proc_line(pid, "uid_map")?, "0 0 4294967295");
    assert_eq!(
        namespace(&pid.to_string(), "user")?,
        namespace("self", "user")?
    );
    assert_eq!(status_ids(pid, "Uid:")?, "0 0 0 0");
    assert_eq!(out, "0\nready\n");
    h.rt.stop("nouserns", "main").await?;
    h.rt.remove("nouserns", "main")?;
    Ok(())
}

#[tokio::test]
async fn users_by_number_and_name_and_a_uid_outside_the_range_is_refused() -> Result<()> {
    let h = harness("users", NodePolicy::default())?;
    let probe = "id -u; id -g; id -G";
    let mut spec = task_spec("u1000", h.dir_rootfs(), &["sh", "-c", probe]);
    spec.user = Some("1000".to_owned());
    assert_eq!(h.probe_and_remove(&spec).await?, "1000\n1000\n1000\n");
    let mut spec = task_spec("uname", h.dir_rootfs(), &["sh", "-c", probe]);
    spec.user = Some("app:staff".to_owned());
    assert_eq!(h.probe_and_remove(&spec).await?, "1000\n50\n50\n");
    // On the host: the mapped ids, and no supplementary group at all.
    let mut spec = task_spec(
        "uhost",
        h.dir_rootfs(),
        &["sh", "-c", "echo ready; exec sleep 30"],
    );
    spec.user = Some("1000:1000".to_owned());
    let (pid, _) = h.start_until_ready(&spec).await?;
    let host = DEFAULT_USERNS_BASE + 1000;
    assert_eq!(
        status_ids(pid, "Uid:")?,
        format!("{host} {host} {host} {host}")
    );
    assert_eq!(status_ids(pid, "Groups:")?, "");
    h.rt.stop("uhost", "main").await?;
    h.rt.remove("uhost", "main")?;

    let mounts = mount_count()?;
    for (user, needle) in [
        ("70000", "uid 70000 is outside the mapped range 0..65536"),
        ("1:65536", "gid 65536 is outside the mapped range"),
        (
            "nosuchuser",
            "user \"nosuchuser\" is not in the task's /etc/passwd",
        ),
        (
            "app:nogroup",
            "group \"nogroup\" is not in the task's /etc/group",
        ),
        ("a b", "is neither a number nor a user/group name"),
    ] {
        let mut spec = task_spec("refused", h.dir_rootfs(), &["true"]);
        spec.user = Some(user.to_owned());
        let err = h.start(&spec).await.expect_err(user);
        assert!(err.to_string().contains(needle), "{user}: {err}");
        assert!(!h.root().join("refused").exists(), "{user}: task dir left");
    }
    assert_eq!(mount_count()?, mounts);
    assert!(!h.any_cgroup_left());
    Ok(())
}

#[tokio::test]
async fn a_setuid_root_binary_gains_nothing_and_root_owns_its_rootfs() -> Result<()> {
    let h = harness("suid", NodePolicy::default())?;
    let suid = h.rootfs().join("usr/bin/suid-id");
    // Outside, without no_new_privs, the setuid bit works: the check below
    // is meaningful.
    std::fs::set_permissions(h.tmp(), PermissionsExt::from_mode(0o755))?;
    let outside = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&suid)
        .arg("-u")
        .output()
        .context("running setpriv")?;
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout),
        "0\n",
        "{outside:?}"
    );

    let mut spec = task_spec(
        "suid",
        h.dir_rootfs(),
        &[
            "sh",
            "-c",
            "/usr/bin/suid-id -u; grep NoNewPrivs /proc/self/status | tr -d ' \\t'",
        ],
    );
    spec.user = Some("1000".to_owned());
    assert_eq!(h.probe_and_remove(&spec).await?, "1000\nNoNewPrivs:1\n");

    // The idmapped rootfs: its files keep their owners inside, root may
    // change them, and the change lands in the upper dir only.
    let lower_passwd = std::fs::read(h.rootfs().join("etc/passwd"))?;
    let spec = task_spec(
        "owner",
        h.dir_rootfs(),
        &[
            "sh",
            "-c",
            "stat -c '%u %g' / /etc/passwd /usr/bin/suid-id; \
             echo extra:x:5:5::/:/bin/sh >> /etc/passwd && touch /etc/new && echo wrote",
        ],
    );
    h.start(&spec).await?;
    let state = h.rt.wait("owner", "main", Duration::from_secs(10)).await?;
    ensure!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(0),
                ..
            }
        ),
        "{state:?} {:?}",
        h.log("owner", "stderr.log")
    );
    assert_eq!(h.log("owner", "stdout.log")?, "0 0\n0 0\n0 0\nwrote\n");
    assert_eq!(std::fs::read(h.rootfs().join("etc/passwd"))?, lower_passwd);
    let upper = h.root().join("owner/main/rootfs/upper/etc");
    let meta = std::fs::metadata(upper.join("new"))?;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (DEFAULT_USERNS_BASE, DEFAULT_USERNS_BASE),
        "files root creates belong to the mapped root on the host"
    );
    h.rt.remove("owner", "main")?;
    Ok(())
}

#[tokio::test]
async fn bind_volumes_read_only_and_writable_and_a_sized_tmpfs() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let allowed = tmp.path().join("allowed");
    let (ro, rw) = (allowed.join("ro"), allowed.join("rw"));
    std::fs::create_dir_all(&ro)?;
    std::fs::create_dir_all(&rw)?;
    std::fs::write(ro.join("hello"), "from the host\n")?;
    // Writable for root inside: owned by the mapped root.
    std::os::unix::fs::chown(&rw, Some(DEFAULT_USERNS_BASE), Some(DEFAULT_USERNS_BASE))?;
    let policy = NodePolicy {
        allowed_host_paths: vec![allowed.clone()],
        ..Default::default()
    };
    let h = harness("volumes", policy)?;
    let script = "cat /ro/hello; \
                  (echo x > /ro/x) 2>/dev/null && echo ro-writable || echo ro-refused; \
                  echo data > /rw/out && echo rw-ok; \
                  df -k /scratch | tail -n 1 | tr -s ' ' | cut -d ' ' -f 2; \
                  dd if=/dev/zero of=/scratch/big bs=1048576 count=9 2>/dev/null \
                    && echo tmpfs-unbounded || echo tmpfs-full; \
                  stat -c '%u %a' /scratch; cat /etc/hello";
    for (alloc, rootfs) in [("vdir", h.dir_rootfs()), ("vhost", Rootfs::Host)] {
        let mut spec = task_spec(alloc, rootfs, &["/bin/sh", "-c", script]);
        if alloc == "vhost" {
            // The host view has no /bin/sh guaranteed to be busybox: use
            // the host's shell with the same applets.
            spec.command = vec![
                "sh".into(),
                "-c".into(),
                script.replace("/etc/hello", "/tmp/cfg/hello"),
            ];
        }
        let cfg_target = if alloc == "vhost" {
            "/tmp/cfg/hello"
        } else {
            "/etc/hello"
        };
        spec.volumes = vec![
            Volume::Bind {
                source: ro.clone(),
                target: "/ro".into(),
                read_only: true,
            },
            Volume::Bind {
                source: rw.clone(),
                target: "/rw".into(),
                read_only: false,
            },
            Volume::Tmpfs {
                target: "/scratch".into(),
                size_mb: 8,
            },
            // A single file, bound over a path that does not exist yet.
            Volume::Bind {
                source: ro.join("hello"),
                target: cfg_target.into(),
                read_only: true,
            },
        ];
        if alloc == "vhost" {
            // /ro, /rw and /scratch do not exist in the host view, which is
            // read-only: refused before start, naming the target.
            let err = h.start(&spec).await.expect_err("missing host targets");
            assert!(
                err.to_string().contains("volume target /ro does not exist"),
                "{err}"
            );
            assert!(!h.root().join(alloc).exists());
            for v in &mut spec.volumes {
                let (Volume::Bind { target, .. } | Volume::Tmpfs { target, .. }) = v;
                if !target.starts_with("/tmp") {
                    *target = Path::new("/tmp").join(target.strip_prefix("/")?);
                }
            }
            spec.command[2] = spec.command[2]
                .replace("/ro/", "/tmp/ro/")
                .replace("/rw/", "/tmp/rw/")
                .replace("/scratch", "/tmp/scratch");
        }
        let out = h.probe_and_remove(&spec).await?;
        assert_eq!(
            out, "from the host\nro-refused\nrw-ok\n8192\ntmpfs-full\n0 1777\nfrom the host\n",
            "{alloc}"
        );
        let meta = std::fs::metadata(rw.join("out"))?;
        assert_eq!(meta.uid(), DEFAULT_USERNS_BASE, "{alloc}");
        assert!(!ro.join("x").exists());
        std::fs::remove_file(rw.join("out"))?;
    }
    assert!(!h.any_cgroup_left());
    Ok(())
}

#[tokio::test]
async fn a_volume_outside_the_policy_is_refused_before_anything_starts() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let allowed = tmp.path().join("allowed");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&allowed)?;
    std::fs::create_dir_all(&other)?;
    // A link under the allowed directory that leads out of it.
    symlink(&other, allowed.join("escape"))?;
    let policy = NodePolicy {
        allowed_host_paths: vec![allowed.clone()],
        allowed_rootfs_dirs: vec![tmp.path().join("rootfs-dirs")],
        // As a policy file sets it: only the listed dirs.
        any_rootfs: false,
        ..Default::default()
    };
    let h = harness("policy", policy)?;
    let mounts = mount_count()?;
    for (source, needle) in [
        (
            other.clone(),
            format!("volume source {} is not allowed", other.display()),
        ),
        (
            allowed.join("escape"),
            format!("(which resolves to {}) is not allowed", other.display()),
        ),
    ] {
        let mut spec = task_spec("outside", Some(Rootfs::Host), &["true"]);
        spec.volumes = vec![Volume::Bind {
            source,
            target: "/tmp/data".into(),
            read_only: true,
        }];
        let err = h.start(&spec).await.expect_err("volume outside the policy");
        assert!(matches!(err, RuntimeError::PolicyRefused { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&needle), "{msg}");
        assert!(msg.contains("allowed_host_paths"), "{msg}");
        assert!(!h.root().join("outside").exists(), "task dir left behind");
    }
    // The rootfs directory is outside allowed_rootfs_dirs.
    let err = h
        .start(&task_spec("rootfsdir", h.dir_rootfs(), &["true"]))
        .await
        .expect_err("rootfs outside the policy");
    let msg = err.to_string();
    assert!(msg.contains("allowed_rootfs_dirs"), "{msg}");
    assert!(msg.contains(&h.rootfs().display().to_string()), "{msg}");
    assert!(!h.root().join("rootfsdir").exists());
    // A node that lists none allows none; `/` is refused even where any
    // directory is allowed (it would be the host, idmapped).
    let none = harness(
        "policy-none",
        NodePolicy {
            any_rootfs: false,
            ..Default::default()
        },
    )?;
    let msg = none
        .start(&task_spec("nodirs", none.dir_rootfs(), &["true"]))
        .await
        .expect_err("no rootfs dirs allowed")
        .to_string();
    assert!(msg.contains("this node allows none"), "{msg}");
    let mut root = task_spec("slash", None, &["true"]);
    root.rootfs = Some(Rootfs::Dir { path: "/".into() });
    let msg = h.start(&root).await.expect_err("/ as rootfs").to_string();
    assert!(msg.contains("is the host itself"), "{msg}");
    assert_eq!(mount_count()?, mounts, "a mount was left behind");
    assert!(!h.any_cgroup_left(), "a cgroup was left behind");
    assert!(h.tracked().is_empty(), "a process was started");
    Ok(())
}

#[tokio::test]
async fn the_working_directory_is_honoured_and_created() -> Result<()> {
    let h = harness("workdir", NodePolicy::default())?;
    let mut spec = task_spec(
        "wdir",
        h.dir_rootfs(),
        &["sh", "-c", "pwd; stat -c '%u %g' ."],
    );
    spec.workdir = Some("/app/sub".into());
    spec.user = Some("app".to_owned());
    assert_eq!(h.probe_and_remove(&spec).await?, "/app/sub\n1000 1000\n");
    assert!(!h.rootfs().join("app").exists(), "created in the lower dir");

    let mut spec = task_spec("whost", Some(Rootfs::Host), &["sh", "-c", "pwd"]);
    spec.workdir = Some("/etc".into());
    assert_eq!(h.probe_and_remove(&spec).await?, "/etc\n");

    let mut spec = task_spec("wmissing", Some(Rootfs::Host), &["true"]);
    spec.workdir = Some("/nonexistent-drover-dir".into());
    let err = h
        .start(&spec)
        .await
        .expect_err("missing workdir in the host view");
    assert!(
        err.to_string().contains("workdir /nonexistent-drover-dir"),
        "{err}"
    );
    assert!(!h.root().join("wmissing").exists());
    Ok(())
}
