//! Root-only e2e tests of the seccomp filter every task runs under
//! (`drover_agent::seccomp`): each refused system call fails with `EPERM`
//! inside a task and not outside it (probed with python3's ctypes, one
//! fork per call), `/proc/self/status` says `Seccomp: 2`, a task cannot
//! make a user namespace, normal workloads still run, and the node policy
//! decides about a profile file and `unconfined`. The cluster-level
//! tests (job files, `drover exec`) are in `seccomp_dev.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use drover_agent::policy::NodePolicy;
use drover_agent::runtime::{Rootfs, RuntimeError, TaskSpec};
use drover_agent::seccomp::{Seccomp, SeccompPolicy, DENIED_SYSCALLS};
use drover_tests::runtime::{busybox_tree, Harness};
use serde_json::{json, Value};

/// The interpreter, at a path the host view of a task has too.
const PYTHON: &str = "/usr/bin/python3";

/// Runs each probe `[name, nr, args]` of `argv[1]` in a child of its own
/// (a call may change the process: `unshare`, `personality`) and prints
/// `name errno` (0 on success). The clone probes' own children exit at
/// once. A session of its own first, so that `vhangup` outside has no
/// terminal to hang up.
const PROBE_SCRIPT: &str = r#"
import ctypes, json, os, sys
try:
    os.setsid()
except OSError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for name, nr, args in json.loads(sys.argv[1]):
    cargs = [ctypes.c_char_p(a.encode()) if isinstance(a, str) else ctypes.c_long(a) for a in args]
    pid = os.fork()
    if pid == 0:
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *cargs)
        if name.startswith("clone") and r == 0:
            os._exit(0)
        if name.startswith("clone") and r > 0:
            os.waitpid(r, 0)
        os._exit(ctypes.get_errno() if r == -1 else 0)
    _, status = os.waitpid(pid, 0)
    print(name, os.waitstatus_to_exitcode(status), flush=True)
"#;

/// An argument: a number or a string (passed as a pointer to it).
fn n(v: i64) -> Value {
    json!(v)
}

/// Arguments that make each refused call fail harmlessly (or do nothing)
/// for root outside a task: bad pointers, flags, descriptors or pids.
fn refused_probes() -> Vec<(&'static str, libc::c_long, Vec<Value>)> {
    let bad_pid = n(0x3fff_fff0);
    let mut p: Vec<(&'static str, libc::c_long, Vec<Value>)> = vec![
        ("init_module", libc::SYS_init_module, vec![n(0), n(0), n(0)]),
        (
            "finit_module",
            libc::SYS_finit_module,
            vec![n(-1), n(0), n(0)],
        ),
        (
            "delete_module",
            libc::SYS_delete_module,
            vec![json!("drover_no_such_module"), n(0)],
        ),
        (
            "kexec_load",
            libc::SYS_kexec_load,
            vec![n(0), n(0), n(0), n(0x7fff_0000)],
        ),
        (
            "kexec_file_load",
            libc::SYS_kexec_file_load,
            vec![n(-1), n(-1), n(0), n(0), n(0x7fff_ffff)],
        ),
        ("bpf", libc::SYS_bpf, vec![n(0xdead), n(0), n(0)]),
        (
            "add_key",
            libc::SYS_add_key,
            vec![n(0), n(0), n(0), n(0), n(0)],
        ),
        (
            "request_key",
            libc::SYS_request_key,
            vec![n(0), n(0), n(0), n(0)],
        ),
        (
            "keyctl",
            libc::SYS_keyctl,
            vec![n(0xdead), n(0), n(0), n(0), n(0)],
        ),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            vec![n(0), n(0), n(-1), n(-1), n(0)],
        ),
        ("userfaultfd", libc::SYS_userfaultfd, vec![n(0xffff)]),
        (
            "lookup_dcookie",
            libc::SYS_lookup_dcookie,
            vec![n(0), n(0), n(0)],
        ),
        // SYSLOG_ACTION_SIZE_BUFFER: reads nothing.
        ("syslog", libc::SYS_syslog, vec![n(10), n(0), n(0)]),
        (
            "fanotify_init",
            libc::SYS_fanotify_init,
            vec![n(0xffff_ffff), n(0)],
        ),
        ("io_uring_setup", libc::SYS_io_uring_setup, vec![n(0), n(0)]),
        (
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            vec![n(-1), n(0), n(0), n(0), n(0), n(0)],
        ),
        (
            "io_uring_register",
            libc::SYS_io_uring_register,
            vec![n(-1), n(0), n(0), n(0)],
        ),
        // PTRACE_ATTACH to a pid that does not exist.
        (
            "ptrace",
            libc::SYS_ptrace,
            vec![n(16), bad_pid.clone(), n(0), n(0)],
        ),
        (
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            vec![bad_pid.clone(), n(0), n(0), n(0), n(0), n(0)],
        ),
        (
            "process_vm_writev",
            libc::SYS_process_vm_writev,
            vec![bad_pid.clone(), n(0), n(0), n(0), n(0), n(0)],
        ),
        (
            "process_madvise",
            libc::SYS_process_madvise,
            vec![n(-1), n(0), n(0), n(0), n(0)],
        ),
        (
            "kcmp",
            libc::SYS_kcmp,
            vec![bad_pid.clone(), bad_pid, n(0), n(0), n(0)],
        ),
        (
            "pidfd_getfd",
            libc::SYS_pidfd_getfd,
            vec![n(-1), n(0), n(0)],
        ),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            vec![n(-1), n(0), n(0)],
        ),
        (
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            vec![n(-1), n(0), n(0), n(0), n(0xffff)],
        ),
        ("mount", libc::SYS_mount, vec![n(0), n(0), n(0), n(0), n(0)]),
        ("umount2", libc::SYS_umount2, vec![n(0), n(0)]),
        ("pivot_root", libc::SYS_pivot_root, vec![n(0), n(0)]),
        (
            "mount_setattr",
            libc::SYS_mount_setattr,
            vec![n(-1), n(0), n(0), n(0), n(0)],
        ),
        (
            "move_mount",
            libc::SYS_move_mount,
            vec![n(-1), n(0), n(-1), n(0), n(0)],
        ),
        ("open_tree", libc::SYS_open_tree, vec![n(-1), n(0), n(0)]),
        ("fsopen", libc::SYS_fsopen, vec![n(0), n(0)]),
        (
            "fsconfig",
            libc::SYS_fsconfig,
            vec![n(-1), n(0), n(0), n(0), n(0)],
        ),
        ("fsmount", libc::SYS_fsmount, vec![n(-1), n(0), n(0)]),
        ("fspick", libc::SYS_fspick, vec![n(-1), n(0), n(0)]),
        ("setns", libc::SYS_setns, vec![n(-1), n(0)]),
        // Both pointers NULL: sets nothing.
        ("settimeofday", libc::SYS_settimeofday, vec![n(0), n(0)]),
        (
            "clock_settime",
            libc::SYS_clock_settime,
            vec![n(0x7fff), n(0)],
        ),
        (
            "clock_adjtime",
            libc::SYS_clock_adjtime,
            vec![n(0x7fff), n(0)],
        ),
        ("adjtimex", libc::SYS_adjtimex, vec![n(0)]),
        ("swapon", libc::SYS_swapon, vec![n(0), n(0)]),
        ("swapoff", libc::SYS_swapoff, vec![n(0)]),
        ("quotactl", libc::SYS_quotactl, vec![n(0), n(0), n(0), n(0)]),
        (
            "quotactl_fd",
            libc::SYS_quotactl_fd,
            vec![n(-1), n(0), n(0), n(0)],
        ),
        (
            "acct",
            libc::SYS_acct,
            vec![json!("/nonexistent/drover-acct")],
        ),
        // No magic numbers: refused before anything happens.
        ("reboot", libc::SYS_reboot, vec![n(0), n(0), n(0), n(0)]),
        // In a session without a terminal: hangs up nothing.
        ("vhangup", libc::SYS_vhangup, vec![]),
        ("nfsservctl", libc::SYS_nfsservctl, vec![n(0), n(0), n(0)]),
        // ADDR_NO_RANDOMIZE.
        (
            "personality_no_aslr",
            libc::SYS_personality,
            vec![n(0x0040000)],
        ),
        (
            "unshare_newuser",
            libc::SYS_unshare,
            vec![n(libc::CLONE_NEWUSER.into())],
        ),
        (
            "unshare_newnet",
            libc::SYS_unshare,
            vec![n(libc::CLONE_NEWNET.into())],
        ),
        (
            "clone_newuser",
            libc::SYS_clone,
            vec![
                n(i64::from(libc::CLONE_NEWUSER | libc::SIGCHLD)),
                n(0),
                n(0),
                n(0),
                n(0),
            ],
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        ("uselib", libc::SYS_uselib, vec![n(0)]),
        ("ustat", libc::SYS_ustat, vec![n(0), n(0)]),
        ("sysfs", libc::SYS_sysfs, vec![n(99)]),
        ("_sysctl", libc::SYS__sysctl, vec![n(0)]),
        ("iopl", libc::SYS_iopl, vec![n(99)]),
        ("ioperm", libc::SYS_ioperm, vec![n(0x10000), n(1), n(1)]),
        ("modify_ldt", libc::SYS_modify_ldt, vec![n(99), n(0), n(0)]),
    ]);
    p
}

/// Calls the filter allows, which must succeed inside a task.
fn allowed_probes() -> Vec<(&'static str, libc::c_long, Vec<Value>)> {
    vec![
        ("getpid", libc::SYS_getpid, vec![]),
        (
            "personality_query",
            libc::SYS_personality,
            vec![n(0xffff_ffff)],
        ),
        (
            "unshare_files",
            libc::SYS_unshare,
            vec![n(libc::CLONE_FILES.into())],
        ),
        (
            "clone_fork",
            libc::SYS_clone,
            vec![n(libc::SIGCHLD.into()), n(0), n(0), n(0), n(0)],
        ),
    ]
}

fn probe_arg(probes: &[(&str, libc::c_long, Vec<Value>)]) -> String {
    let list: Vec<Value> = probes
        .iter()
        .map(|(name, nr, args)| json!([name, nr, args]))
        .collect();
    Value::Array(list).to_string()
}

/// `name errno` lines into a map.
fn results(stdout: &str) -> Result<BTreeMap<String, i32>> {
    stdout
        .lines()
        .map(|l| {
            let (name, code) = l.split_once(' ').context(format!("bad line {l:?}"))?;
            Ok((
                name.to_owned(),
                code.parse().context(format!("bad line {l:?}"))?,
            ))
        })
        .collect()
}

fn host_view(alloc_id: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        rootfs: Some(Rootfs::Host),
        memory_mb: 128,
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

#[tokio::test]
async fn each_refused_call_fails_with_eperm_in_a_task_and_not_outside() -> Result<()> {
    let refused = refused_probes();
    // Every call the default profile refuses has a probe here.
    for (name, _) in DENIED_SYSCALLS {
        ensure!(
            refused.iter().any(|(p, _, _)| p == name),
            "no probe for refused syscall {name}"
        );
    }
    let mut all = refused.clone();
    all.extend(allowed_probes());
    all.push(("clone3", libc::SYS_clone3, vec![n(0), n(0)]));
    let arg = probe_arg(&all);

    let h = Harness::new()?;
    let inside = h
        .probe_and_remove(&host_view("sc-probe", &[PYTHON, "-c", PROBE_SCRIPT, &arg]))
        .await?;
    let inside = results(&inside)?;
    let outside = Command::new(PYTHON)
        .args(["-c", PROBE_SCRIPT, &arg])
        .output()
        .context("running python3 on the host")?;
    ensure!(outside.status.success(), "{outside:?}");
    let outside = results(&String::from_utf8_lossy(&outside.stdout))?;

    let mut wrong = Vec::new();
    for (name, _, _) in &refused {
        let (i, o) = (inside.get(*name), outside.get(*name));
        if i != Some(&libc::EPERM) || o.is_none() || o == Some(&libc::EPERM) {
            wrong.push(format!("{name}: inside {i:?}, outside {o:?}"));
        }
    }
    for (name, _, _) in allowed_probes() {
        if inside.get(name) != Some(&0) {
            wrong.push(format!("{name} (allowed): inside {:?}", inside.get(name)));
        }
    }
    // clone3 fails with ENOSYS, so that C libraries fall back to clone.
    if inside.get("clone3") != Some(&libc::ENOSYS) || outside.get("clone3") == Some(&libc::ENOSYS) {
        wrong.push(format!(
            "clone3: inside {:?} (want ENOSYS), outside {:?}",
            inside.get("clone3"),
            outside.get("clone3")
        ));
    }
    ensure!(
        wrong.is_empty(),
        "EPERM is {}:\n{}",
        libc::EPERM,
        wrong.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn a_task_is_in_seccomp_mode_2_and_cannot_make_a_user_namespace() -> Result<()> {
    let h = Harness::new()?;
    let script = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; \
                  unshare -U true 2>&1; echo unshare=$?";
    let out = h
        .probe_and_remove(&host_view("sc-status", &["/bin/sh", "-c", script]))
        .await?;
    ensure!(out.contains("Seccomp:\t2\n"), "{out}");
    ensure!(out.contains("NoNewPrivs:\t1\n"), "{out}");
    ensure!(
        out.contains("Operation not permitted") && out.contains("unshare=1"),
        "unshare -U must fail with EPERM: {out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_busybox_shell_works_under_the_filter() -> Result<()> {
    let h = Harness::new()?;
    busybox_tree(
        &h.rootfs(),
        &["sh", "echo", "tr", "cat", "ls", "sleep", "wc", "grep"],
    )?;
    for dir in ["proc", "dev", "etc"] {
        std::fs::create_dir_all(h.rootfs().join(dir))?;
    }
    // Pipes, subshells, background jobs, command substitution, files.
    let script = "echo abc | tr a-c x-z; (echo sub) & wait; n=$(ls /bin | wc -l); \
                  echo files=$n > /tmp/f; cat /tmp/f; sleep 0; \
                  grep -c Seccomp:.2 /proc/self/status";
    let spec = TaskSpec {
        rootfs: Some(h.dir_rootfs()),
        ..drover_tests::runtime::task_spec("sc-busybox", &["/bin/sh", "-c", script])
    };
    let out = h.probe_and_remove(&spec).await?;
    ensure!(out == "xyz\nsub\nfiles=9\n1\n", "{out:?}");
    Ok(())
}

/// An OCI profile that allows everything but `mkdir`/`mkdirat`
/// (`EACCES`): personality flags the default refuses now pass.
const PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
}"#;

#[tokio::test]
async fn the_node_policy_gives_a_profile_file_or_allows_unconfined() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("seccomp.json");
    std::fs::write(&file, PROFILE)?;
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(
        &policy_file,
        format!("[seccomp]\nprofile = {:?}\n", file.display().to_string()),
    )?;
    let policy = NodePolicy::load(&policy_file)?;
    let h = Harness::builder().policy(policy).build()?;
    let script = "import ctypes, os\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  print('personality', libc.personality(0x0040000) >= 0)\n\
                  try:\n    os.mkdir('/tmp/d')\nexcept OSError as e:\n    print('mkdir', e.errno)\n";
    let out = h
        .probe_and_remove(&host_view("sc-profile", &[PYTHON, "-c", script]))
        .await?;
    ensure!(out == "personality True\nmkdir 13\n", "{out:?}");

    // Unconfined is refused by a policy that does not allow it, before
    // anything exists, naming the setting.
    let unconfined = |id: &str| TaskSpec {
        seccomp: Seccomp::Unconfined,
        ..host_view(id, &["/bin/grep", "^Seccomp:", "/proc/self/status"])
    };
    let err =
        h.rt.start(&unconfined("sc-refused"))
            .await
            .expect_err("unconfined without the policy");
    ensure!(matches!(err, RuntimeError::PolicyRefused { .. }), "{err:?}");
    ensure!(
        err.to_string().contains("seccomp.allow_unconfined"),
        "{err}"
    );
    ensure!(
        !h.root().join("sc-refused").exists(),
        "a task directory was made"
    );

    let allowing = NodePolicy {
        seccomp: SeccompPolicy {
            allow_unconfined: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Harness::builder().policy(allowing).build()?;
    let out = h.probe_and_remove(&unconfined("sc-unconfined")).await?;
    ensure!(out == "Seccomp:\t0\n", "{out:?}");
    Ok(())
}
