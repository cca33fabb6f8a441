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

/// An argument of a probe: a number, or a string passed as a pointer.
#[derive(Debug, Clone, Copy)]
enum Arg {
    N(i64),
    S(&'static str),
}
use Arg::{N, S};

/// `(name, syscall number, arguments)`.
type Probe = (&'static str, libc::c_long, &'static [Arg]);

const BAD_PID: Arg = N(0x3fff_fff0);
const NEWUSER: i64 = libc::CLONE_NEWUSER as i64;

/// Arguments that make each refused call fail harmlessly (or do nothing)
/// for root outside a task: bad pointers, flags, descriptors or pids.
const REFUSED: &[Probe] = &[
    ("init_module", libc::SYS_init_module, &[N(0), N(0), N(0)]),
    ("finit_module", libc::SYS_finit_module, &[N(-1), N(0), N(0)]),
    (
        "delete_module",
        libc::SYS_delete_module,
        &[S("drover_no_such_module"), N(0)],
    ),
    (
        "kexec_load",
        libc::SYS_kexec_load,
        &[N(0), N(0), N(0), N(0x7fff_0000)],
    ),
    (
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        &[N(-1), N(-1), N(0), N(0), N(0x7fff_ffff)],
    ),
    ("bpf", libc::SYS_bpf, &[N(0xdead), N(0), N(0)]),
    (
        "add_key",
        libc::SYS_add_key,
        &[N(0), N(0), N(0), N(0), N(0)],
    ),
    (
        "request_key",
        libc::SYS_request_key,
        &[N(0), N(0), N(0), N(0)],
    ),
    (
        "keyctl",
        libc::SYS_keyctl,
        &[N(0xdead), N(0), N(0), N(0), N(0)],
    ),
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        &[N(0), N(0), N(-1), N(-1), N(0)],
    ),
    ("userfaultfd", libc::SYS_userfaultfd, &[N(0xffff)]),
    (
        "lookup_dcookie",
        libc::SYS_lookup_dcookie,
        &[N(0), N(0), N(0)],
    ),
    // SYSLOG_ACTION_SIZE_BUFFER: reads nothing.
    ("syslog", libc::SYS_syslog, &[N(10), N(0), N(0)]),
    (
        "fanotify_init",
        libc::SYS_fanotify_init,
        &[N(0xffff_ffff), N(0)],
    ),
    ("io_uring_setup", libc::SYS_io_uring_setup, &[N(0), N(0)]),
    (
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        &[N(-1), N(0), N(0), N(0), N(0), N(0)],
    ),
    (
        "io_uring_register",
        libc::SYS_io_uring_register,
        &[N(-1), N(0), N(0), N(0)],
    ),
    // PTRACE_ATTACH to a pid that does not exist.
    ("ptrace", libc::SYS_ptrace, &[N(16), BAD_PID, N(0), N(0)]),
    (
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        &[BAD_PID, N(0), N(0), N(0), N(0), N(0)],
    ),
    (
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        &[BAD_PID, N(0), N(0), N(0), N(0), N(0)],
    ),
    (
        "process_madvise",
        libc::SYS_process_madvise,
        &[N(-1), N(0), N(0), N(0), N(0)],
    ),
    (
        "kcmp",
        libc::SYS_kcmp,
        &[BAD_PID, BAD_PID, N(0), N(0), N(0)],
    ),
    ("pidfd_getfd", libc::SYS_pidfd_getfd, &[N(-1), N(0), N(0)]),
    (
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        &[N(-1), N(0), N(0)],
    ),
    (
        "name_to_handle_at",
        libc::SYS_name_to_handle_at,
        &[N(-1), N(0), N(0), N(0), N(0xffff)],
    ),
    ("mount", libc::SYS_mount, &[N(0), N(0), N(0), N(0), N(0)]),
    ("umount2", libc::SYS_umount2, &[N(0), N(0)]),
    ("pivot_root", libc::SYS_pivot_root, &[N(0), N(0)]),
    (
        "mount_setattr",
        libc::SYS_mount_setattr,
        &[N(-1), N(0), N(0), N(0), N(0)],
    ),
    (
        "move_mount",
        libc::SYS_move_mount,
        &[N(-1), N(0), N(-1), N(0), N(0)],
    ),
    ("open_tree", libc::SYS_open_tree, &[N(-1), N(0), N(0)]),
    ("fsopen", libc::SYS_fsopen, &[N(0), N(0)]),
    (
        "fsconfig",
        libc::SYS_fsconfig,
        &[N(-1), N(0), N(0), N(0), N(0)],
    ),
    ("fsmount", libc::SYS_fsmount, &[N(-1), N(0), N(0)]),
    ("fspick", libc::SYS_fspick, &[N(-1), N(0), N(0)]),
    ("setns", libc::SYS_setns, &[N(-1), N(0)]),
    // Both pointers NULL: sets nothing.
    ("settimeofday", libc::SYS_settimeofday, &[N(0), N(0)]),
    ("clock_settime", libc::SYS_clock_settime, &[N(0x7fff), N(0)]),
    ("clock_adjtime", libc::SYS_clock_adjtime, &[N(0x7fff), N(0)]),
    ("adjtimex", libc::SYS_adjtimex, &[N(0)]),
    ("swapon", libc::SYS_swapon, &[N(0), N(0)]),
    ("swapoff", libc::SYS_swapoff, &[N(0)]),
    ("quotactl", libc::SYS_quotactl, &[N(0), N(0), N(0), N(0)]),
    (
        "quotactl_fd",
        libc::SYS_quotactl_fd,
        &[N(-1), N(0), N(0), N(0)],
    ),
    ("acct", libc::SYS_acct, &[S("/nonexistent/drover-acct")]),
    // No magic numbers: refused before anything happens.
    ("reboot", libc::SYS_reboot, &[N(0), N(0), N(0), N(0)]),
    // In a session without a terminal: hangs up nothing.
    ("vhangup", libc::SYS_vhangup, &[]),
    ("nfsservctl", libc::SYS_nfsservctl, &[N(0), N(0), N(0)]),
    // ADDR_NO_RANDOMIZE.
    (
        "personality_no_aslr",
        libc::SYS_personality,
        &[N(0x0040000)],
    ),
    ("unshare_newuser", libc::SYS_unshare, &[N(NEWUSER)]),
    (
        "unshare_newnet",
        libc::SYS_unshare,
        &[N(libc::CLONE_NEWNET as i64)],
    ),
    (
        "clone_newuser",
        libc::SYS_clone,
        &[N(NEWUSER | libc::SIGCHLD as i64), N(0), N(0), N(0), N(0)],
    ),
];

/// The x86-only refused calls.
#[cfg(target_arch = "x86_64")]
const REFUSED_ARCH: &[Probe] = &[
    ("uselib", libc::SYS_uselib, &[N(0)]),
    ("ustat", libc::SYS_ustat, &[N(0), N(0)]),
    ("sysfs", libc::SYS_sysfs, &[N(99)]),
    ("_sysctl", libc::SYS__sysctl, &[N(0)]),
    ("iopl", libc::SYS_iopl, &[N(99)]),
    ("ioperm", libc::SYS_ioperm, &[N(0x10000), N(1), N(1)]),
    ("modify_ldt", libc::SYS_modify_ldt, &[N(99), N(0), N(0)]),
];
#[cfg(not(target_arch = "x86_64"))]
const REFUSED_ARCH: &[Probe] = &[];

/// Calls the filter allows, which must succeed inside a task.
const ALLOWED: &[Probe] = &[
    ("getpid", libc::SYS_getpid, &[]),
    (
        "personality_query",
        libc::SYS_personality,
        &[N(0xffff_ffff)],
    ),
    (
        "unshare_files",
        libc::SYS_unshare,
        &[N(libc::CLONE_FILES as i64)],
    ),
    (
        "clone_fork",
        libc::SYS_clone,
        &[N(libc::SIGCHLD as i64), N(0), N(0), N(0), N(0)],
    ),
];

fn refused_probes() -> Vec<Probe> {
    REFUSED.iter().chain(REFUSED_ARCH).copied().collect()
}

/// The probes as the script's JSON argument.
fn probe_arg(probes: &[Probe]) -> String {
    let list: Vec<Value> = probes
        .iter()
        .map(|(name, nr, args)| {
            let args: Vec<Value> = args
                .iter()
                .map(|a| match a {
                    N(v) => json!(v),
                    S(s) => json!(s),
                })
                .collect();
            json!([name, nr, args])
        })
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
    all.extend_from_slice(ALLOWED);
    all.push(("clone3", libc::SYS_clone3, &[N(0), N(0)]));
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
    for &(name, _, _) in ALLOWED {
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

/// Refused probes that only the filter refuses: in a task without one,
/// no capability check makes them fail with `EPERM` (they fail on their
/// arguments, or succeed: a task could make a user namespace).
const ONLY_THE_FILTER_REFUSES: [&str; 12] = [
    "unshare_newuser",
    "clone_newuser",
    "perf_event_open",
    "add_key",
    "request_key",
    "keyctl",
    "io_uring_setup",
    "ptrace",
    "kcmp",
    "pidfd_getfd",
    "setns",
    "personality_no_aslr",
];

#[tokio::test]
async fn without_the_filter_a_task_gets_past_what_only_the_filter_refuses() -> Result<()> {
    let arg = probe_arg(&refused_probes());
    let allowing = NodePolicy {
        seccomp: SeccompPolicy {
            allow_unconfined: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Harness::builder().policy(allowing).build()?;
    let spec = TaskSpec {
        seccomp: Seccomp::Unconfined,
        ..host_view("sc-unconfined-probe", &[PYTHON, "-c", PROBE_SCRIPT, &arg])
    };
    let got = results(&h.probe_and_remove(&spec).await?)?;
    let wrong: Vec<String> = ONLY_THE_FILTER_REFUSES
        .iter()
        .filter(|name| matches!(got.get(**name), None | Some(&libc::EPERM)))
        .map(|name| format!("{name}: {:?}", got.get(*name)))
        .collect();
    ensure!(
        wrong.is_empty(),
        "refused without a filter: {wrong:?} (all: {got:?})"
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
