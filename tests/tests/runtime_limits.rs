//! Root-only e2e tests of the runtime's limits and hardening: real cgroups
//! (v1 or v2, whichever the host has), real supervisors, real processes.
//! Build the binary first: `cargo build -p drover-cli`.
//!
//! Each test puts its cgroups under a parent of its own
//! (`drover-test-<pid>-<name>`) and its guard removes that parent, and kills
//! every process it started, even when the test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::cgroup::Version;
use drover_agent::runtime::{TaskSpec, TaskState, KEPT_CAPABILITIES, NOFILE_LIMIT};
use drover_tests::procs::pid_exists;
use drover_tests::runtime::{mount_count, Harness, CGROUP_ROOT};

/// The leak check counts the whole test process's fds and children, so it
/// runs alone: it takes this lock for writing, every other test for
/// reading. (Only this binary's tests share the process.)
static QUIESCENT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A harness whose cgroups go under `drover-test-<pid>-<name>`.
fn harness(name: &str) -> Result<Harness> {
    Harness::builder().cgroups(name).build()
}

/// [`drover_tests::runtime::task_spec`] with the alloc id as hostname, a
/// 200 ms kill timeout, half a CPU, 64 MiB and 64 pids.
fn task_spec(alloc_id: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        hostname: alloc_id.to_owned(),
        kill_timeout_ms: 200,
        cpu_millis: 500,
        memory_mb: 64,
        pids_max: 64,
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

/// Value of `key` in a `key value` file (`pids.events`, `memory.events`).
fn keyed(path: &Path, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .with_context(|| format!("no {key} in {}", path.display()))?
        .1
        .trim()
        .parse()
        .with_context(|| format!("{key} in {}", path.display()))
}

/// The cgroup directory of `path` for `controller` (v1) or the unified one.
fn controller_dir(h: &Harness, controller: &str, path: &Path) -> PathBuf {
    match h.cgroups().version() {
        Version::V1 => Path::new(CGROUP_ROOT).join(controller).join(path),
        Version::V2 => h.cgroups().procs_files(path)[0]
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default(),
    }
}

#[tokio::test]
async fn memory_hog_is_oom_killed_and_reported() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("oom")?;
    let mut spec = task_spec("hog", &["tail", "/dev/zero"]);
    spec.memory_mb = 32;
    h.start(&spec).await?;
    let state = h.wait_terminal("hog", Duration::from_secs(20)).await?;
    let TaskState::Exited {
        signal,
        oom_killed,
        message,
        ..
    } = &state
    else {
        bail!("expected exited, got {state:?}");
    };
    assert_eq!(*signal, Some(9), "{state:?}");
    assert!(*oom_killed, "{state:?}");
    assert_eq!(
        message, "killed by the OOM killer: memory limit 32 MiB",
        "{state:?}"
    );
    // Stop on the exited task waits for the supervisor to finish cleaning.
    assert_eq!(h.rt.stop("hog", "main").await?, state);
    assert!(!h.cgroup_exists(&h.cg_path("hog")), "cgroup left behind");
    Ok(())
}

#[tokio::test]
async fn a_task_under_its_memory_limit_is_not_reported_as_oom() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("nooom")?;
    let state = h.start(&task_spec("calm", &["sleep", "30"])).await?;
    ensure!(matches!(state, TaskState::Running { .. }), "{state:?}");
    let state = h.rt.stop("calm", "main").await?;
    assert!(
        matches!(
            state,
            TaskState::Exited {
                signal: Some(9),
                oom_killed: false,
                ..
            }
        ),
        "{state:?}"
    );
    Ok(())
}

#[tokio::test]
async fn pids_limit_stops_a_fork_bomb() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("pids")?;
    // The outer shell (PID 1) keeps one background job so that `wait`
    // holds it; the inner shell forks until the limit stops it, then gives
    // up. Its sleeps stay, re-parented to PID 1.
    let mut spec = task_spec(
        "bomb",
        &[
            "sh",
            "-c",
            "sleep 60 & sh -c 'for i in $(seq 100); do sleep 60 & done'; echo done; wait",
        ],
    );
    spec.pids_max = 32;
    let state = h.start(&spec).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    h.wait_stdout("bomb", "done", Duration::from_secs(20))
        .await?;
    let path = h.cg_path("bomb");
    let current = h.cgroups().pids_current(&path)?;
    let procs = h.cgroups().procs(&path)?;
    assert!(
        (20..=32).contains(&current),
        "pids.current {current} (limit 32)"
    );
    assert!(procs.len() <= 32, "{} processes in the cgroup", procs.len());
    assert!(
        procs.contains(&pid),
        "task {pid} not in its cgroup: {procs:?}"
    );
    let refused = keyed(
        &controller_dir(&h, "pids", &path).join("pids.events"),
        "max",
    )?;
    assert!(refused > 0, "no fork was refused");
    let stderr = h.log("bomb", "stderr.log")?;
    assert!(stderr.to_lowercase().contains("fork"), "stderr: {stderr}");

    // PID 1 ignores SIGTERM: SIGKILL after the grace period takes the whole
    // PID namespace with it.
    let state = h.rt.stop("bomb", "main").await?;
    assert!(
        matches!(
            state,
            TaskState::Exited {
                signal: Some(9),
                oom_killed: false,
                ..
            }
        ),
        "{state:?}"
    );
    let alive: Vec<i32> = procs.into_iter().filter(|p| pid_exists(*p)).collect();
    assert!(alive.is_empty(), "processes survived stop: {alive:?}");
    assert!(!h.cgroup_exists(&path), "cgroup left behind");
    Ok(())
}

#[tokio::test]
async fn limits_are_written_and_the_cgroup_goes_with_the_task() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("files")?;
    let dirs_before = h.cgroup_dirs().len();
    let state = h.start(&task_spec("lim", &["sleep", "30"])).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    let path = h.cg_path("lim");
    assert!(h.cgroups().procs(&path)?.contains(&pid));
    let read = |controller: &str, file: &str| {
        let p = controller_dir(&h, controller, &path).join(file);
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("{}", p.display()))
    };
    let bytes = (64u64 * 1024 * 1024).to_string();
    match h.cgroups().version() {
        Version::V1 => {
            assert_eq!(read("memory", "memory.limit_in_bytes")?, bytes);
            if controller_dir(&h, "memory", &path)
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                assert_eq!(read("memory", "memory.memsw.limit_in_bytes")?, bytes);
            }
            assert_eq!(read("cpu", "cpu.cfs_quota_us")?, "50000");
            assert_eq!(read("cpu", "cpu.cfs_period_us")?, "100000");
        }
        Version::V2 => {
            assert_eq!(read("memory", "memory.max")?, bytes);
            assert_eq!(read("cpu", "cpu.max")?, "50000 100000");
        }
    }
    assert_eq!(read("pids", "pids.max")?, "64");
    assert_eq!(
        h.cgroup_dirs().len(),
        dirs_before + 3 * h.cgroups().procs_files(&path).len()
    );

    h.rt.stop("lim", "main").await?;
    assert!(h.cgroup_dirs().is_empty(), "left: {:?}", h.cgroup_dirs());

    // A task that ends by itself: its supervisor removes the cgroup before
    // exiting, with no stop from the runtime.
    h.start(&task_spec("short", &["true"])).await?;
    h.wait_terminal("short", Duration::from_secs(10)).await?;
    let supervisor = h.supervisor_pid("short")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{supervisor}/stat"))
        .is_ok_and(|s| !s.contains(") Z"))
    {
        ensure!(
            Instant::now() < deadline,
            "supervisor {supervisor} did not exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.cgroup_dirs().is_empty(), "left: {:?}", h.cgroup_dirs());
    h.rt.remove("short", "main")?;
    Ok(())
}

#[tokio::test]
async fn setuid_binary_gains_nothing_and_capabilities_are_bounded() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("nnp")?;
    // A setuid-root copy of `id`, reachable by `nobody`.
    std::fs::set_permissions(h.tmp(), PermissionsExt::from_mode(0o755))?;
    let id = h.tmp().join("suid-id");
    std::fs::copy("/usr/bin/id", &id).context("copying /usr/bin/id")?;
    std::fs::set_permissions(&id, PermissionsExt::from_mode(0o4755))?;
    let id = id.to_string_lossy().into_owned();
    let drop_to_nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];

    // Outside, without no_new_privs, the setuid bit works: the check below
    // is meaningful.
    let outside = std::process::Command::new(drop_to_nobody[0])
        .args(&drop_to_nobody[1..])
        .arg(&id)
        .output()
        .context("running setpriv")?;
    let outside = String::from_utf8_lossy(&outside.stdout).into_owned();
    assert!(
        outside.contains("euid=0"),
        "setuid copy does not work: {outside}"
    );

    let script = format!(
        "grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status; \
         ulimit -n; ulimit -Hn; ulimit -c; {} {id}",
        drop_to_nobody.join(" ")
    );
    h.start(&task_spec("nnp", &["sh", "-c", &script])).await?;
    let state = h.wait_terminal("nnp", Duration::from_secs(10)).await?;
    ensure!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(0),
                ..
            }
        ),
        "{state:?}; stderr {:?}",
        h.log("nnp", "stderr.log")
    );
    let out = h.log("nnp", "stdout.log")?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 7, "stdout: {out}");
    let kept: u64 = KEPT_CAPABILITIES.iter().map(|(c, _)| 1u64 << c).sum();
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no {name} in {out}"))
    };
    assert_eq!(field("NoNewPrivs:")?, "1");
    assert_eq!(u64::from_str_radix(field("CapBnd:")?, 16)?, kept, "{out}");
    assert_eq!(u64::from_str_radix(field("CapEff:")?, 16)?, kept, "{out}");
    assert_eq!(lines[3], NOFILE_LIMIT.0.to_string(), "soft nofile");
    assert_eq!(lines[4], NOFILE_LIMIT.1.to_string(), "hard nofile");
    assert_eq!(lines[5], "0", "core size");
    assert!(
        lines[6].starts_with("uid=65534") && !lines[6].contains("euid"),
        "the setuid bit took effect: {}",
        lines[6]
    );
    Ok(())
}

/// Host-side resources the leak check counts.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    mounts: usize,
    fds: usize,
    children: usize,
    cgroup_dirs: usize,
}

fn footprint(h: &Harness) -> Result<Footprint> {
    let me = std::process::id().to_string();
    let mut children = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, ...
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        if rest.nth(1) == Some(me.as_str()) {
            children += 1;
        }
    }
    Ok(Footprint {
        mounts: mount_count()?,
        fds: std::fs::read_dir("/proc/self/fd")?.count(),
        children,
        cgroup_dirs: h.cgroup_dirs().len(),
    })
}

#[tokio::test]
async fn start_stop_cycles_leave_nothing_behind() -> Result<()> {
    let _alone = QUIESCENT.write().await;
    let h = harness("cycles")?;
    let mut spec = task_spec("cycle", &["true"]);
    spec.kill_timeout_ms = 20;
    // One warm-up cycle: the first start may open long-lived descriptors
    // (tokio's signal driver for child reaping).
    let once = async {
        h.start(&spec).await?;
        h.rt.stop("cycle", "main").await?;
        h.rt.remove("cycle", "main")?;
        anyhow::Ok(())
    };
    once.await?;
    // The warm-up supervisor's zombie is reaped asynchronously too: count
    // from when it is gone, not with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let now = footprint(&h)?;
        if now.children == 0 || Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let started = Instant::now();
    for i in 0..200 {
        h.start(&spec).await.with_context(|| format!("cycle {i}"))?;
        let state = h.rt.stop("cycle", "main").await?;
        ensure!(
            matches!(state, TaskState::Exited { .. }),
            "cycle {i}: {state:?}"
        );
        h.rt.remove("cycle", "main")?;
        h.forget_tracked();
    }
    let elapsed = started.elapsed();
    // The runtime's reaper tasks collect the last supervisors' zombies
    // asynchronously.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let after = footprint(&h)?;
        if after == before || Instant::now() >= deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(after, before, "200 cycles took {elapsed:?}");
    assert!(h.rt.list()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn cgroups_left_by_killed_supervisors_are_swept() -> Result<()> {
    let _shared = QUIESCENT.read().await;
    let h = harness("sweep")?;
    // What a SIGKILLed supervisor leaves: an empty task cgroup, long ago.
    let stale = h.cgroup_parent().join("gone").join("main");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for dir in h
        .cgroups()
        .procs_files(&stale)
        .iter()
        .filter_map(|f| f.parent())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        std::fs::File::open(dir)?.set_modified(long_ago)?;
    }
    // A young empty one may be a cgroup being set up: kept.
    let young = h.cgroup_parent().join("young").join("main");
    for dir in h
        .cgroups()
        .procs_files(&young)
        .iter()
        .filter_map(|f| f.parent())
    {
        std::fs::create_dir_all(dir)?;
    }
    let state = h.start(&task_spec("live", &["sleep", "30"])).await?;
    ensure!(matches!(state, TaskState::Running { .. }), "{state:?}");
    assert!(!h.cgroup_exists(&stale), "stale cgroup kept");
    assert!(
        !h.cgroup_exists(&h.cgroup_parent().join("gone")),
        "its alloc cgroup kept"
    );
    assert!(h.cgroup_exists(&young), "young cgroup removed");
    assert!(
        h.cgroup_exists(&h.cg_path("live")),
        "live task's cgroup removed"
    );
    h.rt.stop("live", "main").await?;
    Ok(())
}
