//! End-to-end tests of `drover dev` driven through the real `drover` CLI
//! and gRPC (issue 2): a job runs in real namespaces, prints logs and stops;
//! plan changes nothing and run is idempotent; every kind of bad input is
//! refused with one clear message and leaves the cluster unchanged; the
//! standard health and reflection services answer.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test e2e_dev`. Each test has its own `drover dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_proto::v1::job_service_client::JobServiceClient;
use drover_tests::checks::{
    alloc_ids, arr, assert_refusal, edit, int_of, service, snapshot, str_of, task_pids,
    wait_running, WAIT,
};
use drover_tests::procs::{namespace, pid_alive};
use drover_tests::{
    closed_loopback_addr, poll_until, run_drover, run_drover_with_env, unique_name, DevCluster,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// A cluster already running one job, `job`, so that a refusal can be
/// seen to leave an existing job alone (bad files reuse its name).
struct Refusals {
    c: DevCluster,
    job: String,
}

impl Refusals {
    fn new() -> Refusals {
        let c = DevCluster::start();
        let job = unique_name("keep");
        let file = c.write_file("keep.toml", &service(&job, 1, "exec sleep 3600"));
        c.cli_json(&["job", "run", file.to_str().unwrap()]);
        wait_running(&c, &job, 1);
        Refusals { c, job }
    }

    /// A valid job file for the baseline job, to be broken by the caller.
    fn good(&self) -> String {
        service(&self.job, 1, "exec sleep 3600")
    }

    /// `job run` and `job plan` of `path` both fail with one message
    /// containing `expect`, and the cluster is unchanged.
    fn check_path(&self, what: &str, path: &Path, expect: &[&str]) {
        let before = snapshot(&self.c);
        let p = path.to_str().unwrap();
        let mut run_err = String::new();
        let commands: [&[&str]; 2] = [&["job", "run", p, "--wait", "5"], &["job", "plan", p]];
        for args in commands {
            let out = self.c.cli(args);
            let err = assert_refusal(&format!("{what} (job {})", args[1]), &out, expect);
            if args[1] == "run" {
                run_err = err;
            }
        }
        let after = snapshot(&self.c);
        assert_eq!(
            before, after,
            "{what}: the cluster changed; the CLI said: {run_err}"
        );
    }

    /// Writes `text` to a file and checks it like [`Refusals::check_path`].
    fn check(&self, what: &str, text: &str, expect: &[&str]) {
        let name = format!("{}.toml", what.replace([' ', '/'], "-"));
        let path = self.c.write_file(&name, text);
        self.check_path(what, &path, expect);
    }
}

/// The harness itself: a test that panics with tasks running still leaves
/// no process and no data directory behind.
#[test]
fn harness_cleans_up_after_a_panicking_test() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = DevCluster::start();
        let job = unique_name("orphan");
        let file = c.write_file("orphan.toml", &service(&job, 2, "exec sleep 3600"));
        c.cli_json(&["job", "run", file.to_str().unwrap()]);
        wait_running(&c, &job, 2);
        let mut pids = c.recorded_pids();
        pids.push(c.pid());
        // Orphan one task: its supervisor dies first, so only state.json
        // still leads to it.
        let dir = &c.task_dirs()[0];
        let sup: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sup),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        poll_until("the supervisor to die", WAIT, || {
            (!pid_alive(sup)).then_some(())
        });
        seen = Some((c.data_dir().to_path_buf(), pids));
        panic!("deliberate panic with tasks running");
    }));
    assert!(result.is_err());
    let (dir, pids) = seen.expect("the cluster started");
    assert!(pids.len() >= 5, "dev, 2 supervisors, 2 tasks: {pids:?}");
    for p in pids {
        assert!(!pid_alive(p), "pid {p} survived the cluster");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// The whole thin path: run a two-instance service, see its tasks in their
/// own PID, mount, UTS and IPC namespaces, read their output through
/// `drover logs`, stop the job and see every process gone.
#[test]
fn job_runs_in_namespaces_logs_and_stops() {
    let c = DevCluster::start();
    let job = unique_name("hello");
    let file = c.write_file(
        "hello.toml",
        &service(
            &job,
            2,
            "echo \"out from $DROVER_ALLOC_NAME\"; echo \"err from $DROVER_ALLOC_NAME\" >&2; exec sleep 3600",
        ),
    );
    let started = Instant::now();
    let got = c.cli_json(&["job", "run", file.to_str().unwrap()]);
    assert_eq!(str_of(&got, "name"), job);
    assert_eq!(str_of(&got, "kind"), "service");
    let allocs = arr(&got["allocations"]).clone();
    assert_eq!(allocs.len(), 2, "{got}");
    for a in &allocs {
        assert_eq!(str_of(a, "job"), job);
        assert_eq!(str_of(a, "group"), "main");
        assert_eq!(str_of(a, "desired"), "run");
        assert_ne!(
            str_of(a, "status"),
            "pending",
            "`job run` returned early: {a}"
        );
    }
    let names: BTreeSet<&str> = allocs.iter().map(|a| str_of(a, "name")).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            format!("{job}.main[0]").as_str(),
            format!("{job}.main[1]").as_str()
        ])
    );
    let got = wait_running(&c, &job, 2);
    let allocs = arr(&got["allocations"]).clone();
    let pids = task_pids(&got);
    eprintln!("job run took {:?}; task pids {pids:?}", started.elapsed());

    // The pids the CLI reports are the ones the supervisors recorded, and
    // each task lives in namespaces of its own.
    for a in &allocs {
        let id = str_of(a, "id");
        let pid = int_of(&arr(&a["tasks"])[0], "pid");
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(
                c.data_dir()
                    .join(format!("agent/allocs/{id}/app/state.json")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(state["state"], "running", "{state}");
        assert_eq!(state["pid"].as_i64(), Some(pid), "{state}");
        assert!(pid_alive(i32::try_from(pid).unwrap()));
    }
    for &pid in &pids {
        for kind in ["pid", "mnt", "uts", "ipc"] {
            let ours = namespace("self", kind).unwrap();
            let theirs = namespace(&pid.to_string(), kind).unwrap();
            assert_ne!(ours, theirs, "task {pid} shares our {kind} namespace");
        }
    }
    assert_ne!(
        namespace(&pids[0].to_string(), "pid").unwrap(),
        namespace(&pids[1].to_string(), "pid").unwrap(),
        "two allocations share a PID namespace"
    );

    // `alloc status` and `alloc list --job` agree with `job run`.
    let id0 = str_of(&allocs[0], "id").to_owned();
    let one = c.cli_json(&["alloc", "status", &id0]);
    assert_eq!(str_of(&one, "id"), id0);
    assert_eq!(str_of(&arr(&one["tasks"])[0], "name"), "app");
    let listed = c.cli_json(&["alloc", "list", "--job", &job]);
    assert_eq!(arr(&listed).len(), 2, "{listed}");

    // Logs: each allocation's own stdout, and its stderr on request.
    for a in &allocs {
        let id = str_of(a, "id");
        let name = str_of(a, "name");
        let out = poll_until(&format!("stdout of {name}"), WAIT, || {
            let s = c.cli_ok(&["logs", id]);
            s.contains(&format!("out from {name}")).then_some(s)
        });
        assert!(
            !out.contains("err from"),
            "stderr leaked into stdout: {out}"
        );
        poll_until(&format!("stderr of {name}"), WAIT, || {
            let s = c.cli_ok(&["logs", "--stderr", id]);
            s.contains(&format!("err from {name}")).then_some(())
        });
    }
    // A job name: every allocation's lines, each prefixed with its name.
    let out = c.cli_ok(&["logs", &job]);
    for a in &allocs {
        let name = str_of(a, "name");
        assert!(out.contains(&format!("{name} | out from {name}")), "{out}");
    }

    // While it runs, the node counts both allocations (50 millicores and
    // 16 MiB each, from `checks::service`).
    let nodes = c.cli_json(&["node", "list"]);
    let n = &arr(&nodes)[0];
    assert_eq!(int_of(n, "used_cpu_millis"), 100, "{n}");
    assert_eq!(int_of(n, "used_memory_mb"), 32, "{n}");
    assert_eq!(int_of(n, "allocations"), 2, "{n}");
    // The agent registered its attributes and the scheduler kept them.
    for key in [
        "hostname",
        "os",
        "arch",
        "kernel.version",
        "cpu.count",
        "memory.mb",
        "drover.version",
    ] {
        assert!(
            n["attributes"][key].as_str().is_some_and(|v| !v.is_empty()),
            "attribute {key}: {n}"
        );
    }

    // Stop: every task and supervisor disappears, the allocations complete.
    let recorded = c.recorded_pids();
    assert!(
        recorded.len() >= 4,
        "supervisor and task pids: {recorded:?}"
    );
    let started = Instant::now();
    c.cli_ok(&["job", "stop", &job]);
    poll_until("the job's processes to exit", WAIT, || {
        recorded.iter().all(|&p| !pid_alive(p)).then_some(())
    });
    let stopped = poll_until("the allocations to complete", WAIT, || {
        let s = c.cli_json(&["job", "status", &job]);
        arr(&s["allocations"])
            .iter()
            .all(|a| a["desired"] == "stop" && a["status"] == "complete")
            .then_some(s)
    });
    eprintln!("job stop took {:?}", started.elapsed());
    assert_eq!(alloc_ids(&stopped), alloc_ids(&got));
    for a in arr(&stopped["allocations"]) {
        let t = &arr(&a["tasks"])[0];
        assert_eq!(str_of(t, "state"), "exited", "{a}");
    }

    // Shapes of `job list` (found through DROVER_ADDR this time) and
    // `node list`.
    let out = run_drover_with_env(&["job", "list", "-o", "json"], &[("DROVER_ADDR", c.addr())]);
    assert!(out.status.success(), "{out:?}");
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = arr(&jobs);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = &jobs[0];
    assert_eq!(str_of(j, "name"), job);
    assert_eq!(str_of(j, "kind"), "service");
    assert_eq!(str_of(j, "status"), "stopped");
    assert_eq!(int_of(j, "desired"), 2);
    assert_eq!(int_of(j, "running"), 0);

    let nodes = c.cli_json(&["node", "list"]);
    let nodes = arr(&nodes);
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = &nodes[0];
    assert!(!str_of(n, "id").is_empty());
    assert!(!str_of(n, "hostname").is_empty());
    assert_eq!(str_of(n, "address"), "127.0.0.1");
    assert_eq!(str_of(n, "status"), "ready");
    assert_eq!(n["draining"], Value::Bool(false));
    assert!(
        int_of(n, "cpu_millis") > 0 && int_of(n, "memory_mb") > 0,
        "{n}"
    );
    // The job is stopped: nothing of the node is in use any more.
    for f in ["used_cpu_millis", "used_memory_mb", "allocations"] {
        assert_eq!(int_of(n, f), 0, "{f} after the stop: {n}");
    }
    assert!(!str_of(n, "agent_version").is_empty());
}

/// `job plan` shows what would happen and changes nothing; running the same
/// file twice keeps the same allocations and processes.
#[test]
fn plan_changes_nothing_and_run_is_idempotent() {
    let c = DevCluster::start();
    let job = unique_name("idem");
    let text = service(&job, 2, "exec sleep 3600");
    let file = c.write_file("idem.toml", &text);
    let file = file.to_str().unwrap();

    let empty = snapshot(&c);
    let plan = c.cli_json(&["job", "plan", file]);
    assert_eq!(plan["job_exists"], Value::Bool(false), "{plan}");
    assert_eq!(arr(&plan["place"]).len(), 2, "{plan}");
    assert!(arr(&plan["stop"]).is_empty(), "{plan}");
    assert!(arr(&plan["failures"]).is_empty(), "{plan}");
    assert_eq!(snapshot(&c), empty, "plan of a new job changed the cluster");
    assert!(empty.job_keys.is_empty() && empty.alloc_keys.is_empty());
    let out = c.cli(&["job", "status", &job]);
    assert_refusal("status of a planned job", &out, &[&job]);

    let first = c.cli_json(&["job", "run", file]);
    let ids = alloc_ids(&first);
    let pids: BTreeSet<i32> = task_pids(&wait_running(&c, &job, 2)).into_iter().collect();
    assert_eq!(ids.len(), 2);
    let running = snapshot(&c);

    let second = c.cli_json(&["job", "run", file]);
    assert_eq!(
        alloc_ids(&second),
        ids,
        "re-running the same file replaced allocations"
    );
    assert_eq!(
        task_pids(&second).into_iter().collect::<BTreeSet<_>>(),
        pids,
        "re-running the same file restarted tasks"
    );
    assert_eq!(second["version"], first["version"], "{second}");
    assert!(pids.iter().all(|&p| pid_alive(p)));
    assert_eq!(
        snapshot(&c),
        running,
        "re-running the same file wrote to the cluster"
    );

    // Plans against the running job: nothing to do, or what a scale-up
    // would place; neither touches the cluster.
    let plan = c.cli_json(&["job", "plan", file]);
    assert_eq!(plan["job_exists"], Value::Bool(true), "{plan}");
    assert!(arr(&plan["place"]).is_empty(), "{plan}");
    assert!(arr(&plan["stop"]).is_empty(), "{plan}");
    let bigger = c.write_file("idem3.toml", &edit(&text, "count = 2", "count = 3"));
    let before = snapshot(&c);
    let plan = c.cli_json(&["job", "plan", bigger.to_str().unwrap()]);
    assert_eq!(arr(&plan["place"]).len(), 1, "{plan}");
    assert_eq!(str_of(&arr(&plan["place"])[0], "group"), "main");
    assert!(arr(&plan["stop"]).is_empty(), "{plan}");
    assert_eq!(
        snapshot(&c),
        before,
        "plan of a scale-up changed the cluster"
    );
    assert!(pids.iter().all(|&p| pid_alive(p)));
}

#[test]
fn unreadable_job_files_are_refused() {
    let r = Refusals::new();
    let dir = r.c.data_dir();
    let missing = dir.join("no-such-job.toml");
    r.check_path(
        "missing file",
        &missing,
        &[
            "cannot read job file",
            missing.to_str().unwrap(),
            "No such file",
        ],
    );
    let subdir = dir.join("a-directory.toml");
    std::fs::create_dir(&subdir).unwrap();
    r.check_path(
        "directory",
        &subdir,
        &[
            "cannot read job file",
            subdir.to_str().unwrap(),
            "directory",
        ],
    );
    // Root reads chmod 000 files, so unreadability comes from a dangling link.
    let link = dir.join("dangling.toml");
    std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
    r.check_path(
        "dangling symlink",
        &link,
        &[
            "cannot read job file",
            link.to_str().unwrap(),
            "No such file",
        ],
    );
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let r = Refusals::new();
    let text = edit(&r.good(), "[[group]]\n", "[[group]\n");
    r.check(
        "syntax error",
        &text,
        &["syntax-error.toml", "line 4, column 9"],
    );
    let text = edit(&r.good(), "count = 1", "count = 1 +");
    r.check("bad value", &text, &["line 6, column"]);
}

#[test]
fn unknown_field_is_named() {
    let r = Refusals::new();
    let text = edit(&r.good(), "count = 1\n", "count = 1\ncuont = 3\n");
    r.check("unknown field", &text, &["unknown field `cuont`", "line 7"]);
    let text = edit(
        &r.good(),
        "kind = \"service\"\n",
        "kind = \"service\"\nimage = \"x\"\n",
    );
    r.check(
        "unknown top-level field",
        &text,
        &["unknown field `image`", "line 3, column 1"],
    );
}

#[test]
fn empty_command_is_refused() {
    let r = Refusals::new();
    let good = r.good();
    let cmd = good.lines().find(|l| l.starts_with("command")).unwrap();
    r.check(
        "empty command",
        &edit(&good, cmd, "command = []"),
        &[r#"group "main" task "app": command must not be empty"#],
    );
    r.check(
        "empty program",
        &edit(&good, cmd, r#"command = ["", "x"]"#),
        &[r#"group "main" task "app": command[0] (the program) must not be empty"#],
    );
    // `command` may be left out only when an OCI image supplies it.
    r.check(
        "missing command",
        &edit(&good, cmd, ""),
        &[r#"group "main" task "app": command must not be empty"#],
    );
}

#[test]
fn zero_count_service_is_refused() {
    let r = Refusals::new();
    let text = edit(&r.good(), "count = 1", "count = 0");
    r.check(
        "count 0",
        &text,
        &[r#"group "main": count must be > 0, got 0"#],
    );
}

#[test]
fn negative_and_absurd_values_are_refused() {
    let r = Refusals::new();
    let good = r.good();
    r.check(
        "huge count",
        &edit(&good, "count = 1", "count = 1000000"),
        &[r#"group "main": count must be <= 10000, got 1000000"#],
    );
    r.check(
        "negative count",
        &edit(&good, "count = 1", "count = -3"),
        &[r#"group "main": count must be > 0, got -3"#],
    );
    r.check(
        "negative memory",
        &edit(&good, "memory_mb = 16", "memory_mb = -1"),
        &[r#"group "main" task "app": resources.memory_mb must be > 0, got -1"#],
    );
    r.check(
        "absurd cpu",
        &edit(&good, "cpu_millis = 50", "cpu_millis = 99999999999"),
        &[r#"group "main" task "app": resources.cpu_millis must be <= "#],
    );
    r.check(
        "negative kill timeout",
        &edit(&good, "kill_timeout_ms = 200", "kill_timeout_ms = -5"),
        &[r#"group "main" task "app": kill_timeout_ms must be >= 0, got -5"#],
    );
    // Too big for an i64: TOML itself refuses it, with its position.
    r.check(
        "count past i64",
        &edit(&good, "count = 1", "count = 99999999999999999999"),
        &["line 6"],
    );
    // Every problem of one file is listed at once.
    let text = edit(
        &edit(&good, "count = 1", "count = 0"),
        "memory_mb = 16",
        "memory_mb = 0",
    );
    r.check(
        "two problems",
        &text,
        &[
            r#"group "main": count must be > 0, got 0"#,
            r#"group "main" task "app": resources.memory_mb must be > 0, got 0"#,
        ],
    );
}

#[test]
fn duplicate_group_names_are_refused() {
    let r = Refusals::new();
    let good = r.good();
    let group = &good[good.find("[[group]]").unwrap()..];
    let text = format!("{good}\n{group}");
    r.check(
        "duplicate group",
        &text,
        &[r#"group "main": duplicate group name"#],
    );
}

#[test]
fn duplicate_task_names_are_refused() {
    let r = Refusals::new();
    let good = r.good();
    let task = &good[good.find("[[group.task]]").unwrap()..];
    let text = format!("{good}\n{task}");
    r.check(
        "duplicate task",
        &text,
        &[r#"group "main" task "app": duplicate task name"#],
    );
}

#[test]
fn names_that_are_not_dns_labels_are_refused() {
    let r = Refusals::new();
    let good = r.good();
    r.check(
        "job name",
        &edit(
            &good,
            &format!("name = \"{}\"", r.job),
            "name = \"Hello_World\"",
        ),
        &[r#"name "Hello_World" contains"#, "DNS"],
    );
    r.check(
        "group name",
        &edit(&good, "name = \"main\"", "name = \"main.web\""),
        &[r#"group "main.web": name "main.web" contains '.'"#],
    );
    r.check(
        "task name",
        &edit(&good, "name = \"app\"", "name = \"-app\""),
        &[r#"task "-app": name "-app" must start and end"#],
    );
    let long = "a".repeat(64);
    r.check(
        "long job name",
        &edit(
            &good,
            &format!("name = \"{}\"", r.job),
            &format!("name = \"{long}\""),
        ),
        &["64 characters, at most 63"],
    );
    r.check(
        "empty job name",
        &edit(&good, &format!("name = \"{}\"", r.job), "name = \"\""),
        &["name must not be empty"],
    );
}

#[test]
fn unknown_kind_is_refused() {
    let r = Refusals::new();
    let text = edit(&r.good(), "kind = \"service\"", "kind = \"daemon\"");
    r.check(
        "unknown kind",
        &text,
        &[r#"kind "daemon" is not one of "service", "batch", "system""#],
    );
}

/// A scheduler that is not running: the CLI says where it tried, quickly.
#[test]
fn unreachable_scheduler_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("job.toml");
    std::fs::write(&file, service("nowhere", 1, "true")).unwrap();
    let addr = closed_loopback_addr();
    let file = file.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &["job", "run", file, "--addr", &addr],
        &["job", "list", "--addr", &addr],
        &["node", "list", "-o", "json", "--addr", &addr],
        &["job", "stop", "nowhere", "--addr", &addr],
    ];
    for args in cases {
        let started = Instant::now();
        let out = run_drover(args);
        assert_refusal(
            &args.join(" "),
            &out,
            &[
                &format!("http://{addr}"),
                "cannot reach the Drover scheduler",
            ],
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    // The same through DROVER_ADDR, as host:port and as a URL.
    for value in [addr.clone(), format!("http://{addr}")] {
        let out = run_drover_with_env(&["job", "list"], &[("DROVER_ADDR", &value)]);
        assert_refusal(
            &format!("DROVER_ADDR={value} job list"),
            &out,
            &[&format!("http://{addr}"), "DROVER_ADDR"],
        );
    }
}

async fn connect(c: &DevCluster) -> Channel {
    Endpoint::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The scheduler validates whatever client sends a job: a direct gRPC
/// submission with many problems gets INVALID_ARGUMENT listing each by path,
/// and the cluster is unchanged.
#[tokio::test]
async fn grpc_submit_of_invalid_job_lists_every_problem() {
    let c = DevCluster::start();
    let mut jobs = JobServiceClient::new(connect(&c).await);
    let before = snapshot(&c);
    let task = |name: &str, command: &[&str], memory_mb: i64| pb::Task {
        name: name.into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        resources: Some(pb::Resources {
            cpu_millis: 100,
            memory_mb,
        }),
        kill_timeout_ms: 200,
        rootfs: None,
        ..Default::default()
    };
    let job = pb::Job {
        name: "Bad_Job".into(),
        kind: "daemon".into(),
        groups: vec![
            pb::Group {
                name: "main".into(),
                count: 0,
                tasks: vec![
                    task("app", &["/bin/true"], 0),
                    task("app", &[], 32),
                    task("", &["/bin/true"], 32),
                ],
                ..Default::default()
            },
            pb::Group {
                name: "main".into(),
                count: 1,
                tasks: vec![],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let expected = [
        r#"name "Bad_Job" contains 'B'"#,
        r#"kind "daemon" is not one of"#,
        r#"group "main": count must be > 0, got 0"#,
        r#"group "main" task "app": resources.memory_mb must be > 0, got 0"#,
        r#"group "main" task "app": duplicate task name"#,
        r#"group "main" task "app": command must not be empty"#,
        r#"group "main" task #3: name must not be empty"#,
        r#"group "main": duplicate group name"#,
        r#"group "main": a group needs at least one [[group.task]]"#,
    ];
    let submit = jobs
        .submit(pb::SubmitRequest {
            job: Some(job.clone()),
        })
        .await
        .unwrap_err();
    let plan = jobs
        .plan(pb::PlanRequest { job: Some(job) })
        .await
        .unwrap_err();
    for (what, status) in [("submit", &submit), ("plan", &plan)] {
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let msg = status.message();
        for e in expected {
            assert!(msg.contains(e), "{what}: {e:?} not in:\n{msg}");
        }
        assert!(
            msg.contains(&format!("{} problems", expected.len())),
            "{what}: {msg}"
        );
    }
    let none = jobs
        .submit(pb::SubmitRequest { job: None })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument, "{none:?}");
    let listed = jobs
        .list(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "{listed:?}");
    assert_eq!(
        snapshot(&c),
        before,
        "a refused submission changed the cluster"
    );
}

/// Generic gRPC tooling works: the standard health service reports the job
/// service SERVING, and server reflection lists Drover's services.
#[tokio::test]
async fn grpc_health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let c = DevCluster::start();
    let channel = connect(&c).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["drover.v1.JobService", ""] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "drover.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let names = reflected_services(channel.clone()).await;
    for s in [
        "drover.v1.JobService",
        "drover.v1.NodeService",
        "drover.v1.AllocService",
        "drover.v1.AgentService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(s), "{s} not in {names:?}");
    }
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "drover.v1.JobService".into(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    let file = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(fds)) = file.message_response else {
        panic!("not a file descriptor: {file:?}");
    };
    assert!(!fds.file_descriptor_proto.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_serves_health_and_reflection_too() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let c = DevCluster::start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.store_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let resp = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "etcdserverpb.KV".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
    let names = reflected_services(channel).await;
    for s in [
        "etcdserverpb.KV",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(s), "{s} not in {names:?}");
    }
}

/// The services a gRPC server lists through reflection v1.
async fn reflected_services(channel: tonic::transport::Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let listed = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}
