//! Unit tests that need neither root nor a supervisor binary. The root-only
//! end-to-end tests live in `tests/tests/runtime.rs`.

use super::spec::resolve_command;
use super::*;
use std::collections::BTreeMap;

fn spec(command: &[&str]) -> TaskSpec {
    TaskSpec {
        alloc_id: "a1".to_owned(),
        task: "web".to_owned(),
        hostname: "web-1".to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        kill_timeout_ms: 100,
        cpu_millis: 0,
        memory_mb: 0,
        pids_max: 0,
        rootfs: None,
        network: None,
        logs: Default::default(),
        ..Default::default()
    }
}

#[test]
fn state_json_shape() {
    let running = TaskState::Running {
        pid: 42,
        started_unix_ms: 7,
    };
    let json = serde_json::to_value(&running).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({"state": "running", "pid": 42, "started_unix_ms": 7})
    );
    let failed: TaskState =
        serde_json::from_str(r#"{"state":"failed","message":"x"}"#).expect("parse");
    assert_eq!(
        failed,
        TaskState::Failed {
            message: "x".to_owned()
        }
    );
    let exited: TaskState = serde_json::from_str(
        r#"{"state":"exited","pid":3,"exit_code":null,"signal":9,"finished_unix_ms":1,"message":"m"}"#,
    )
    .expect("parse");
    assert!(exited.is_terminal());
}

#[test]
fn names_are_single_components() {
    for bad in ["", ".", "..", "a/b", "../x", "a\0b", "sp ace"] {
        assert!(validate_name("task name", bad).is_err(), "{bad:?}");
    }
    for good in ["a", "web-1", "alloc_0.3", "7f3e"] {
        assert!(validate_name("task name", good).is_ok(), "{good:?}");
    }
}

#[test]
fn command_resolution() {
    assert!(matches!(
        resolve_command(&spec(&[])),
        Err(RuntimeError::EmptyCommand { .. })
    ));
    assert!(resolve_command(&spec(&["sh", "-c", "true"])).is_ok());
    assert!(resolve_command(&spec(&["/bin/sh"])).is_ok());
    let err = resolve_command(&spec(&["no-such-cmd-xyz"])).expect_err("missing");
    assert!(err.to_string().contains("no-such-cmd-xyz"), "{err}");
    let err = resolve_command(&spec(&["/nonexistent/bin/x"])).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/bin/x"), "{err}");
    assert!(resolve_command(&spec(&["./relative"])).is_err());
    let mut s = spec(&["sh"]);
    s.env.insert("PATH".to_owned(), "/nonexistent".to_owned());
    assert!(resolve_command(&s).is_err());
}

#[test]
fn list_state_and_remove_without_supervisor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(tmp.path().join("allocs"), PathBuf::from("/nonexistent"));
    assert!(rt.list().expect("list").is_empty());
    assert!(matches!(
        rt.state("a1", "web"),
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(rt.task_dir("..", "web").is_err());

    let dir = TaskDir::new(rt.task_dir("a1", "web").expect("dir"));
    fs::create_dir_all(&dir.dir).expect("mkdir");
    write_json(&dir.spec(), &spec(&["sh"])).expect("spec");
    assert_eq!(
        rt.list().expect("list"),
        vec![("a1".to_owned(), "web".to_owned())]
    );

    // Running according to the file, but no supervisor and no such task:
    // settled as exited with the status lost, and written back.
    write_json(
        &dir.state(),
        &TaskState::Running {
            pid: i32::MAX,
            started_unix_ms: 1,
        },
    )
    .expect("state");
    let state = rt.state("a1", "web").expect("state");
    assert!(
        matches!(&state, TaskState::Exited { exit_code: None, message, .. } if message.contains("supervisor died")),
        "{state:?}"
    );
    assert_eq!(dir.read_state().expect("read"), Some(state));

    rt.remove("a1", "web").expect("remove");
    assert!(!tmp.path().join("allocs/a1").exists());
}

#[test]
fn no_state_and_dead_supervisor_is_failed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(tmp.path().to_owned(), PathBuf::from("/nonexistent"));
    let dir = TaskDir::new(rt.task_dir("a1", "web").expect("dir"));
    fs::create_dir_all(&dir.dir).expect("mkdir");
    // Our own pid is alive but is not a supervisor of this task.
    fs::write(dir.supervisor_pid(), std::process::id().to_string()).expect("pid");
    let state = rt.state("a1", "web").expect("state");
    assert!(matches!(state, TaskState::Failed { .. }), "{state:?}");
}

#[tokio::test]
async fn start_with_missing_supervisor_binary_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(tmp.path().to_owned(), tmp.path().join("no-drover"));
    let err = rt.start(&spec(&["sh"])).await.expect_err("no binary");
    assert!(matches!(err, RuntimeError::SpawnSupervisor { .. }), "{err}");
    assert!(!tmp.path().join("a1").exists());
}

#[test]
fn spec_validation_names_the_field() {
    assert!(spec(&["sh"]).validate().is_ok());
    let mut s = spec(&["sh"]);
    s.hostname = "h".repeat(65);
    let err = s.validate().expect_err("long hostname");
    assert!(err.to_string().contains("hostname"), "{err}");
    let mut s = spec(&["sh"]);
    s.env.insert("A=B".to_owned(), "x".to_owned());
    assert!(s
        .validate()
        .expect_err("bad key")
        .to_string()
        .contains("A=B"));
    let mut s = spec(&["sh", "a\0b"]);
    assert!(s.validate().is_err());
    s.command = vec!["sh".to_owned()];
    s.task = "a/b".to_owned();
    assert!(matches!(
        s.validate(),
        Err(RuntimeError::InvalidName { .. })
    ));
}

#[test]
fn old_records_get_defaults_for_new_fields() {
    let old = r#"{"alloc_id":"a","task":"t","hostname":"h","command":["true"],"env":{},
        "kill_timeout_ms":1,"cpu_millis":0,"memory_mb":0}"#;
    let spec: TaskSpec = serde_json::from_str(old).expect("parse");
    assert_eq!(spec.pids_max, DEFAULT_PIDS_MAX);
    let exited: TaskState = serde_json::from_str(
        r#"{"state":"exited","pid":3,"exit_code":null,"signal":9,"finished_unix_ms":1,"message":"m"}"#,
    )
    .expect("parse");
    assert!(matches!(
        exited,
        TaskState::Exited {
            oom_killed: false,
            ..
        }
    ));
}

#[test]
fn oom_kills_are_reported_only_for_a_sigkilled_task() {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;
    let killed = WaitStatus::Signaled(Pid::from_raw(5), Signal::SIGKILL, false);
    let state = supervisor::exit_record(5, killed, 1, 32);
    assert!(
        matches!(&state, TaskState::Exited { oom_killed: true, signal: Some(9), message, .. }
            if message == "killed by the OOM killer: memory limit 32 MiB"),
        "{state:?}"
    );
    let state = supervisor::exit_record(5, killed, 0, 32);
    assert!(
        matches!(&state, TaskState::Exited { oom_killed: false, message, .. }
            if message == "killed by signal 9 (SIGKILL)"),
        "{state:?}"
    );
    // A child was OOM-killed, the task itself exited: said, not flagged.
    let state = supervisor::exit_record(5, WaitStatus::Exited(Pid::from_raw(5), 1), 2, 32);
    assert!(
        matches!(&state, TaskState::Exited { oom_killed: false, exit_code: Some(1), message, .. }
            if message.contains("OOM killer killed 2") && message.contains("32 MiB")),
        "{state:?}"
    );
}

#[test]
fn rootfs_json_shape_and_default() {
    let dir = Rootfs::Dir {
        path: "/srv/rootfs/x".into(),
    };
    assert_eq!(
        serde_json::to_value(&dir).expect("serialize"),
        serde_json::json!({"type": "dir", "path": "/srv/rootfs/x"})
    );
    assert_eq!(
        serde_json::to_value(Rootfs::Host).expect("serialize"),
        serde_json::json!({"type": "host"})
    );
    assert!(serde_json::from_str::<Rootfs>(r#"{"type":"dir","path":"/x","extra":1}"#).is_err());
    assert!(serde_json::from_str::<Rootfs>(r#"{"type":"oci"}"#).is_err());
    // A spec without the field (written before it existed) has no rootfs,
    // and one without a rootfs is written without the field.
    let s = spec(&["/bin/sh"]);
    let mut json = serde_json::to_value(&s).expect("serialize");
    assert!(json.get("rootfs").is_none());
    json["rootfs"] = serde_json::json!({"type": "host"});
    let parsed: TaskSpec = serde_json::from_value(json).expect("parse");
    assert_eq!(parsed.rootfs, Some(Rootfs::Host));
}

#[test]
fn rootfs_dir_validation_names_the_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, "").expect("write");
    for (path, expect) in [
        (tmp.path().join("missing"), "does not exist"),
        (file, "is not a directory"),
        ("relative/dir".into(), "absolute"),
        (tmp.path().join("a,b"), "must not contain"),
    ] {
        let mut s = spec(&["/bin/sh"]);
        s.rootfs = Some(Rootfs::Dir { path: path.clone() });
        let err = s.validate().expect_err("invalid rootfs").to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(expect),
            "{err}"
        );
    }
}

#[test]
fn spec_problems_keep_their_text_and_their_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad_dir = tmp.path().join("a,b");
    let mut rootfs = spec(&["/bin/sh"]);
    rootfs.rootfs = Some(Rootfs::Dir {
        path: bad_dir.clone(),
    });
    let mut volume = spec(&["/bin/sh"]);
    volume.rootfs = Some(Rootfs::Host);
    volume.volumes = vec![Volume::Tmpfs {
        target: "/proc/x".into(),
        size_mb: 0,
    }];
    let mut user = spec(&["/bin/sh"]);
    user.user = Some("a b".to_owned());
    for (s, text) in [
        (
            rootfs,
            format!(
                "alloc a1 task web: rootfs directory {} must not contain ',', ':', '\\' or NUL",
                bad_dir.display()
            ),
        ),
        (
            volume,
            "alloc a1 task web: volume target /proc/x is at or under /proc, which the runtime \
             provides"
                .to_owned(),
        ),
        (
            user,
            "alloc a1 task web: user \"a b\": \"a b\" is neither a number nor a user/group name \
             ([A-Za-z0-9_.-], 1-32)"
                .to_owned(),
        ),
    ] {
        let err = s.validate().expect_err(&text);
        assert_eq!(err.to_string(), text);
        let source = std::error::Error::source(&err).expect("the problem is the source");
        assert!(source.is::<SpecProblem>(), "{source:?}");
    }
}

#[test]
fn command_resolution_inside_a_rootfs_dir() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("opt/tool")).expect("mkdir");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    let exe = root.join("opt/tool/run");
    std::fs::write(&exe, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(root.join("bin/data"), "").expect("write");
    // Absolute links resolve inside the root, not on the host.
    symlink("/opt/tool/run", root.join("bin/tool")).expect("symlink");
    symlink("/bin/sh", root.join("bin/hostsh")).expect("symlink");
    symlink("../../../../../opt/tool/run", root.join("bin/up")).expect("symlink");

    let mut s = spec(&["tool"]);
    s.rootfs = Some(Rootfs::Dir {
        path: root.to_owned(),
    });
    assert_eq!(resolve_command(&s).expect("tool"), Path::new("/bin/tool"));
    s.command = vec!["/bin/up".to_owned()];
    assert_eq!(resolve_command(&s).expect("up"), Path::new("/bin/up"));
    for missing in ["/bin/hostsh", "/bin/data", "sh", "/bin/sh"] {
        s.command = vec![missing.to_owned()];
        let err = resolve_command(&s).expect_err(missing).to_string();
        assert!(
            err.contains(missing) && err.contains(&root.display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn a_spec_written_before_user_namespaces_and_volumes_still_parses() {
    let old = r#"{"alloc_id":"a","task":"t","hostname":"h","command":["true"],"env":{},
        "kill_timeout_ms":1,"cpu_millis":0,"memory_mb":0,"pids_max":5,
        "rootfs":{"type":"dir","path":"/srv/root"}}"#;
    let spec: TaskSpec = serde_json::from_str(old).expect("old spec.json");
    assert_eq!(
        spec.user_namespace, None,
        "tasks started without one keep none"
    );
    assert_eq!((spec.user.as_ref(), spec.run_as), (None, None));
    assert!(spec.volumes.is_empty() && spec.workdir.is_none());
    // And the new fields round-trip.
    let new = TaskSpec {
        user: Some("app".into()),
        workdir: Some("/app".into()),
        volumes: vec![Volume::Tmpfs {
            target: "/scratch".into(),
            size_mb: 0,
        }],
        user_namespace: Some(IdMap {
            host_base: 100_000,
            size: 10,
        }),
        run_as: Some(RunAs { uid: 1, gid: 2 }),
        ..spec
    };
    let json = serde_json::to_string(&new).expect("serialize");
    assert_eq!(serde_json::from_str::<TaskSpec>(&json).expect("parse"), new);
}
