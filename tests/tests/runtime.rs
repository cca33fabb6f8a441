//! Root-only e2e tests of the container runtime: real supervisors (the
//! `drover` binary), real namespaces, real processes. Build the binary
//! first: `cargo build -p drover-cli`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::runtime::{Runtime, RuntimeError, TaskSpec, TaskState};
use drover_tests::drover_bin;
use drover_tests::procs::{namespace, pid_exists};
use drover_tests::runtime::{mount_count, Harness};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// [`drover_tests::runtime::task_spec`] with 0.1 CPU and 64 MiB.
fn task_spec(alloc_id: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        cpu_millis: 100,
        memory_mb: 64,
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

#[tokio::test]
async fn running_task_has_its_own_namespaces() -> Result<()> {
    let h = Harness::new()?;
    let spec = task_spec("ns", &["sleep", "30"]);
    let state = h.start(&spec).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    assert_eq!(h.rt.state("ns", "main")?, state);
    for kind in ["pid", "mnt", "uts", "ipc"] {
        let theirs = namespace(&pid.to_string(), kind)?;
        let ours = namespace("self", kind)?;
        assert_ne!(theirs, ours, "{kind} namespace is shared with the host");
    }
    assert_eq!(h.rt.list()?, vec![("ns".to_owned(), "main".to_owned())]);
    let err = h.rt.remove("ns", "main").expect_err("remove while running");
    assert!(matches!(err, RuntimeError::StillRunning { .. }), "{err}");
    let err = h.start(&spec).await.expect_err("second start");
    assert!(matches!(err, RuntimeError::StillRunning { .. }), "{err}");

    h.rt.stop("ns", "main").await?;
    assert!(!pid_exists(pid), "task pid {pid} survived stop");
    h.rt.remove("ns", "main")?;
    assert!(h.rt.list()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn task_sees_its_own_pid_1_hostname_and_proc_and_host_mounts_stay() -> Result<()> {
    let h = Harness::new()?;
    let mounts_before = mount_count()?;
    let spec = task_spec(
        "probe",
        &["sh", "-c", "echo $$; hostname; ls /proc | grep -c ^[0-9]"],
    );
    h.start(&spec).await?;
    let state = h.wait_terminal("probe", Duration::from_secs(10)).await?;
    assert!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(0),
                signal: None,
                ..
            }
        ),
        "{state:?}"
    );
    let out = h.log("probe", "stdout.log")?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {out:?}");
    assert_eq!(lines[0], "1", "the task is not PID 1 of its namespace");
    assert_eq!(lines[1], "probe-host");
    let count: usize = lines[2].parse().context("process count")?;
    assert!(
        (1..=5).contains(&count),
        "task sees {count} processes in /proc"
    );
    assert_eq!(h.log("probe", "stderr.log")?, "");
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");
    Ok(())
}

#[tokio::test]
async fn env_is_exactly_the_spec_plus_path() -> Result<()> {
    let h = Harness::new()?;
    let mut spec = task_spec("env", &["sh", "-c", "echo \"$GREETING\"; env | sort"]);
    spec.env
        .insert("GREETING".to_owned(), "hello world".to_owned());
    h.start(&spec).await?;
    h.wait_terminal("env", Duration::from_secs(10)).await?;
    let out = h.log("env", "stdout.log")?;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hello world"));
    let vars: Vec<&str> = lines
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(k))
        .collect();
    assert_eq!(vars, ["GREETING", "PATH"], "stdout: {out}");
    Ok(())
}

#[tokio::test]
async fn the_task_inherits_no_descriptor_beyond_0_1_2() -> Result<()> {
    let h = Harness::new()?;
    // A descriptor without close-on-exec in the process that starts the
    // supervisor, as an agent started by a careless parent would have.
    let leaked = std::fs::File::open("/dev/null")?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    nix::fcntl::fcntl(
        &leaked,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    // `ls` lists its own directory descriptor (3) too, hence the filter:
    // every descriptor the task holds at exec, and no other, is printed.
    let script = "for f in /proc/self/fd/*; do n=${f##*/}; \
                  [ -e \"$f\" ] && echo $n; done";
    h.start(&task_spec("fds", &["sh", "-c", script])).await?;
    h.wait_terminal("fds", Duration::from_secs(10)).await?;
    let out = h.log("fds", "stdout.log")?;
    let fds: Vec<&str> = out.lines().collect();
    assert!(
        !fds.contains(&raw.to_string().as_str()),
        "fd {raw} leaked into the task: {fds:?}"
    );
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "the task holds more than its standard descriptors: {fds:?}"
    );
    drop(leaked);
    Ok(())
}

#[tokio::test]
async fn exit_code_is_propagated() -> Result<()> {
    let h = Harness::new()?;
    h.start(&task_spec("exit7", &["sh", "-c", "echo oops >&2; exit 7"]))
        .await?;
    let state = h.wait_terminal("exit7", Duration::from_secs(10)).await?;
    assert!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(7),
                signal: None,
                ..
            }
        ),
        "{state:?}"
    );
    assert_eq!(h.log("exit7", "stderr.log")?, "oops\n");
    // Stop on an exited task returns the same record.
    assert_eq!(h.rt.stop("exit7", "main").await?, state);
    Ok(())
}

#[tokio::test]
async fn stop_escalates_to_sigkill_and_leaves_no_process() -> Result<()> {
    let h = Harness::new()?;
    let state = h.start(&task_spec("stop", &["sleep", "3600"])).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    let supervisor: i32 = h.log("stop", "supervisor.pid")?.trim().parse()?;
    let started = Instant::now();
    let state = h.rt.stop("stop", "main").await?;
    // PID 1 without a SIGTERM handler ignores SIGTERM: SIGKILL after 300 ms.
    assert!(
        matches!(state, TaskState::Exited { exit_code: None, signal: Some(9), pid: p, .. } if p == pid),
        "{state:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!pid_exists(pid), "task pid {pid} still exists");
    let stat = std::fs::read_to_string(format!("/proc/{supervisor}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "supervisor {supervisor} still running: {stat}"
    );
    assert_eq!(
        h.rt.stop("stop", "main").await?,
        state,
        "stop is idempotent"
    );
    Ok(())
}

#[tokio::test]
async fn stop_is_graceful_when_the_task_handles_sigterm() -> Result<()> {
    let h = Harness::new()?;
    let mut spec = task_spec(
        "graceful",
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    spec.kill_timeout_ms = 5_000;
    let state = h.start(&spec).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    // Under its CPU quota the shell may not have set its trap yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.log("graceful", "stdout.log")? != "ready\n" {
        ensure!(Instant::now() < deadline, "the task never set its trap");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = h.rt.stop("graceful", "main").await?;
    assert!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(3),
                signal: None,
                ..
            }
        ),
        "{state:?}"
    );
    assert!(!pid_exists(pid));
    Ok(())
}

#[tokio::test]
async fn nonexistent_command_is_refused_and_leaves_nothing() -> Result<()> {
    let h = Harness::new()?;
    for command in [
        "drover-no-such-command",
        "/nonexistent/drover-no-such-command",
    ] {
        let err = h
            .start(&task_spec("missing", &[command]))
            .await
            .expect_err("start of a missing command");
        assert!(
            matches!(err, RuntimeError::CommandNotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(command), "{err}");
        assert!(!h.root().join("missing").exists(), "task dir left behind");
    }
    assert!(h.tracked().is_empty());
    let err = h
        .start(&task_spec("..", &["true"]))
        .await
        .expect_err("bad id");
    assert!(matches!(err, RuntimeError::InvalidName { .. }), "{err}");
    Ok(())
}

#[test]
fn supervisor_survives_the_runtime_and_is_readopted() -> Result<()> {
    let h = Harness::new()?;
    let spec = task_spec("adopt", &["sleep", "30"]);
    // A whole tokio runtime (with the task reaping the supervisor) and the
    // Runtime go away, as when the agent dies.
    let first = tokio::runtime::Runtime::new()?;
    let state = first.block_on(async {
        let rt = Runtime::new(h.root(), drover_bin());
        let state = rt.start(&spec).await;
        h.track("adopt", "main");
        state
    })?;
    drop(first);
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    let supervisor: i32 = h.log("adopt", "supervisor.pid")?.trim().parse()?;
    std::thread::sleep(Duration::from_millis(200));
    assert!(pid_exists(supervisor), "supervisor died with the runtime");
    assert!(pid_exists(pid), "task died with the runtime");

    let second = tokio::runtime::Runtime::new()?;
    second.block_on(async {
        let rt = Runtime::new(h.root(), drover_bin());
        assert_eq!(rt.list()?, vec![("adopt".to_owned(), "main".to_owned())]);
        assert_eq!(rt.state("adopt", "main")?, state);
        let stopped = rt.stop("adopt", "main").await?;
        assert!(matches!(stopped, TaskState::Exited { .. }), "{stopped:?}");
        rt.remove("adopt", "main")?;
        anyhow::Ok(())
    })?;
    assert!(!pid_exists(pid));
    Ok(())
}

#[tokio::test]
async fn dead_supervisor_is_reported() -> Result<()> {
    let h = Harness::new()?;
    let state = h
        .start(&task_spec(
            "orphan",
            &["sh", "-c", "sleep 31 & exec sleep 30"],
        ))
        .await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    let supervisor: i32 = h.log("orphan", "supervisor.pid")?.trim().parse()?;
    // `sleep 31` is a child of the task, in its cgroup too.
    let cg = h.cg_path("orphan");
    kill(Pid::from_raw(supervisor), Signal::SIGKILL)?;
    // Nothing supervises the task any more: the first look kills what is
    // in its cgroup (reported running meanwhile), and once nothing is left
    // it is settled as exited, status lost, without a stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        let state = h.rt.state("orphan", "main")?;
        if !matches!(state, TaskState::Running { .. }) || Instant::now() >= deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(&state, TaskState::Exited { exit_code: None, message, .. } if message.contains("supervisor died")),
        "{state:?}"
    );
    assert!(
        h.cgroups().procs(&cg)?.is_empty(),
        "processes left in the task's cgroup"
    );
    // Settled on disk: stop and remove find it ended.
    let state = h.rt.stop("orphan", "main").await?;
    assert!(
        matches!(&state, TaskState::Exited { message, .. } if message.contains("supervisor died")),
        "{state:?}"
    );
    h.rt.remove("orphan", "main")?;
    assert!(!h.any_cgroup_left(), "the task's cgroup is left");
    // Without its supervisor the task's zombie is reaped by the host's init,
    // not by us: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_exists(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pid_exists(pid), "task pid {pid} still exists");
    Ok(())
}

#[tokio::test]
async fn exec_failure_in_the_supervisor_is_recorded_as_failed() -> Result<()> {
    let h = Harness::new()?;
    // Passes validation (an executable file) but exec fails: bad interpreter.
    let script = h.tmp().join("broken.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\n")?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let command = script.to_string_lossy().into_owned();
    let state = h.start(&task_spec("broken", &[&command])).await?;
    assert!(
        matches!(&state, TaskState::Failed { message } if message.contains(&command)),
        "{state:?}"
    );
    let supervisor: i32 = h.log("broken", "supervisor.pid")?.trim().parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_exists(supervisor) && Instant::now() < deadline {
        // The Runtime's reaper task collects it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !pid_exists(supervisor),
        "supervisor {supervisor} left behind"
    );
    assert_eq!(h.rt.stop("broken", "main").await?, state);
    h.rt.remove("broken", "main")?;
    Ok(())
}

#[test]
fn supervisor_records_a_missing_command_and_exits_non_zero() -> Result<()> {
    let h = Harness::new()?;
    // Bypass the Runtime's validation: the supervisor must cope on its own.
    let dir = h.root().join("direct").join("main");
    std::fs::create_dir_all(&dir)?;
    let spec = task_spec("direct", &["drover-no-such-command", "arg"]);
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec)?)?;
    let status = std::process::Command::new(drover_bin())
        .arg("__supervise")
        .arg(&dir)
        .status()
        .context("running the supervisor")?;
    assert_eq!(status.code(), Some(127));
    let state: TaskState = serde_json::from_slice(&std::fs::read(dir.join("state.json"))?)?;
    assert!(
        matches!(&state, TaskState::Failed { message } if message.contains("drover-no-such-command")),
        "{state:?}"
    );
    assert_eq!(h.rt.state("direct", "main")?, state);
    Ok(())
}

/// The agent learns of a task's exit from the supervisor's `state.json`
/// rename as it happens ([`StateWatch`]), not at its next poll: after the
/// wake, the state on disk is already the exit.
#[tokio::test]
async fn state_watch_wakes_on_task_exit() -> Result<()> {
    use drover_agent::runtime::StateWatch;
    let h = Harness::new()?;
    let spec = task_spec("watched", &["sleep", "30"]);
    let state = h.start(&spec).await?;
    let TaskState::Running { pid, .. } = state else {
        bail!("expected running, got {state:?}");
    };
    let mut watch = StateWatch::new();
    ensure!(watch.is_active(), "inotify unavailable");
    watch.sync([h.dir("watched")]);
    ensure!(watch.len() == 1, "task directory not watched");
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    tokio::time::timeout(Duration::from_secs(30), watch.changed())
        .await
        .context("no state.json change within 30 s of the task's death")?;
    let state = h.rt.state("watched", "main")?;
    ensure!(
        matches!(
            state,
            TaskState::Exited {
                signal: Some(9),
                ..
            }
        ),
        "woken before the exit was recorded: {state:?}"
    );
    h.rt.remove("watched", "main")?;
    Ok(())
}
