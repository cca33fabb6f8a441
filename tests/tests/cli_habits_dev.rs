//! End-to-end tests against `drover dev` of what people expect from a
//! cluster tool's CLI and daemons: a log file without terminal escapes and
//! JSON log lines for shippers; `drover logs JOB` interleaving every
//! allocation with its name; gRPC reflection in its v1alpha form, as
//! Python's `grpcio-reflection` (from PyPI) speaks it.
//!
//! Needs root, the binary and (for the reflection test) python3-venv and
//! PyPI: `cargo build -p drover-cli && cargo test -p drover-tests --test
//! cli_habits_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use drover_tests::checks::{service, wait_running, WAIT};
use drover_tests::dev::DEV_LOG;
use drover_tests::{drover_bin, poll_until, DevCluster};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn dev_log(c: &DevCluster) -> Vec<u8> {
    std::fs::read(c.data_dir().join(DEV_LOG)).expect("reading the dev log")
}

/// The dev log is a file: `drover dev` writes it without a single terminal
/// escape (it used to colour every level and field name), in plain text.
#[test]
fn dev_log_to_a_file_has_no_colour_escapes() {
    let c = DevCluster::start();
    let log = dev_log(&c);
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("scheduler gRPC API listening"),
        "the dev log lacks the scheduler's start line:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(" INFO ")),
        "no plain INFO level in the dev log:\n{text}"
    );
    let escapes = log.iter().filter(|b| **b == 0x1b).count();
    assert_eq!(escapes, 0, "{escapes} ESC bytes in the dev log:\n{text:?}");
}

/// `--log-format json`: every line the daemon writes is one JSON object
/// with `timestamp`, `level`, `target` and `fields` (the message among
/// them), and the structured fields stay fields.
#[test]
fn dev_log_format_json_writes_one_object_per_line() {
    let c = DevCluster::start_with(&["--log-format", "json"]);
    let log = dev_log(&c);
    let text = String::from_utf8(log).expect("the JSON log is UTF-8");
    let mut lines = 0;
    let mut listening = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        assert!(v["fields"].is_object(), "no fields object in {line}");
        assert!(
            matches!(
                v["level"].as_str(),
                Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
            ),
            "{line}"
        );
        if v["fields"]["message"] == "scheduler gRPC API listening" {
            listening = Some(v.clone());
        }
        lines += 1;
    }
    assert!(lines > 3, "only {lines} log lines:\n{text}");
    let listening = listening.unwrap_or_else(|| panic!("no start line in:\n{text}"));
    assert_eq!(listening["level"], "INFO");
    assert!(
        listening["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("drover_scheduler")),
        "{listening}"
    );
    assert_eq!(
        listening["fields"]["addr"].as_str(),
        Some(c.addr()),
        "the address is a field of its own: {listening}"
    );
}

/// Checks that `out` holds exactly one line `NAME | hello from NAME` per
/// name of `names`, prefixes padded alike, and nothing else.
fn assert_interleaved(out: &str, names: &[String]) {
    let width = names.iter().map(String::len).max().unwrap();
    let mut seen = Vec::new();
    for line in out.lines() {
        let (prefix, rest) = line
            .split_once(" | ")
            .unwrap_or_else(|| panic!("line without a prefix: {line:?} in\n{out}"));
        assert_eq!(prefix.len(), width, "prefix not padded: {line:?}");
        let name = prefix.trim_end();
        assert_eq!(rest, format!("hello from {name}"), "{line:?}");
        seen.push(name.to_string());
    }
    seen.sort();
    assert_eq!(seen, names, "output:\n{out}");
}

/// `drover logs JOB` of a two-instance job prints both instances' lines,
/// each with its allocation's name; `-f` does too and keeps following;
/// `--alloc NAME` picks one, unprefixed.
#[test]
fn logs_of_a_job_interleave_every_allocation_with_its_name() {
    let c = DevCluster::start();
    let job = c.write_file(
        "hello.toml",
        &service("hello", 2, "echo hello from $DROVER_ALLOC_NAME; sleep 3600"),
    );
    c.cli_ok(&["job", "run", job.to_str().unwrap()]);
    let status = wait_running(&c, "hello", 2);
    let mut names: Vec<String> = status["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["hello.main[0]", "hello.main[1]"]);

    let out = poll_until("both instances' lines", WAIT, || {
        let out = c.cli_ok(&["logs", "hello"]);
        (out.lines().count() >= 2).then_some(out)
    });
    assert_interleaved(&out, &names);

    let one = c.cli_ok(&["logs", "hello", "--alloc", "hello.main[1]"]);
    assert_eq!(one, "hello from hello.main[1]\n");
    let refused = c.cli(&["logs", "hello", "--alloc", "hello.main[7]"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no allocation") && err.contains("hello.main[0]"),
        "{err}"
    );

    // -f: both lines arrive, and the command is still running after them.
    let mut follow = Command::new(drover_bin())
        .args(["logs", "hello", "-f", "--addr", c.addr()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning drover logs -f");
    let pid = Pid::from_raw(i32::try_from(follow.id()).unwrap());
    struct KillOnDrop(Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGKILL);
        }
    }
    let guard = KillOnDrop(pid);
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut got = String::new();
    while got.lines().count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("`logs -f` printed only:\n{got}"));
        got.push_str(&line);
        got.push('\n');
    }
    assert_interleaved(&got, &names);
    assert!(
        follow.try_wait().unwrap().is_none(),
        "`logs -f` ended instead of following"
    );
    drop(guard);
    let _ = follow.wait();
}

/// Installs grpcio-reflection from PyPI in a fresh venv under a temporary
/// directory (removed on drop, also when the test fails); returns the
/// directory and the venv's python.
fn python_with_grpcio_reflection() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("drover-pyrefl-")
        .tempdir()
        .unwrap();
    let venv = dir.path().join("venv");
    // Debian's python, which python3-venv (deploy/deps.sh) completes.
    let base = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = Command::new(base)
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("running python3 -m venv");
    assert!(
        out.status.success(),
        "python3 -m venv failed (is python3-venv installed? deploy/deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = venv.join("bin").join("python3");
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio-reflection",
        ])
        .output()
        .expect("running pip");
    assert!(
        out.status.success(),
        "pip install grpcio-reflection failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, python)
}

fn reflect_and_call(python: &std::path::Path, addr: &str, service: &str, method: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/reflection_list.py");
    let out = Command::new(python)
        .arg(&script)
        .args([addr, service, method])
        .output()
        .expect("running the reflection script");
    assert!(
        out.status.success(),
        "grpcio-reflection against {addr} ({service}/{method}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Python's grpcio-reflection (v1alpha) lists the services of both gRPC
/// servers of `drover dev` (the scheduler's API and the embedded store) and
/// calls a method whose request and response types it built from the
/// descriptors the server sent: `JobService/List` returns the running job.
#[test]
fn python_grpcio_reflection_lists_services_and_calls_list() {
    let (_venv, python) = python_with_grpcio_reflection();
    let c = DevCluster::start();
    let job = c.write_file("refl.toml", &service("refl", 1, "sleep 3600"));
    c.cli_ok(&["job", "run", job.to_str().unwrap()]);
    wait_running(&c, "refl", 1);

    let got = reflect_and_call(&python, c.addr(), "drover.v1.JobService", "List");
    let services: Vec<&str> = got["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in [
        "drover.v1.JobService",
        "drover.v1.AllocService",
        "drover.v1.NodeService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&s), "{s} not listed: {services:?}");
    }
    let jobs = got["response"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in the List answer: {got}"));
    assert!(
        jobs.iter().any(|j| j["name"] == "refl"),
        "the running job is not in the List answer: {got}"
    );

    let store = reflect_and_call(
        &python,
        c.store_addr(),
        "etcdserverpb.Maintenance",
        "Status",
    );
    let services = store["services"].as_array().unwrap();
    assert!(
        services.iter().any(|s| s == "etcdserverpb.KV"),
        "{services:?}"
    );
    assert!(store["response"]["header"].is_object(), "{store}");
}
