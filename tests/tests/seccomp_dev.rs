//! The seccomp filter through a real `drover dev`: a job's
//! `python3 -m http.server` answers on its allocation's IP under the
//! default filter, `drover exec` runs under the same filter as its task,
//! and `seccomp = "unconfined"` in a job file is refused by a node whose
//! policy does not allow it (naming the setting) and honoured by one that
//! does. Traffic goes only to the clusters' own allocations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Output;
use std::time::Duration;

use drover_tests::checks::{arr, batch_with, str_of, wait_running, WAIT};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

const PORT: u16 = 8000;

/// A service running python3's http.server on [`PORT`], with `extra`
/// keys in its task table.
fn http_service(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"

[[group.task]]
name = "app"
command = ["/usr/bin/python3", "-m", "http.server", "{PORT}", "--bind", "0.0.0.0", "--directory", "/usr"]
kill_timeout_ms = 200
resources = {{ cpu_millis = 100, memory_mb = 64 }}
{extra}
"#
    )
}

fn run_job(c: &DevCluster, file: &str, text: &str) {
    let path = c.write_file(file, text);
    c.cli_ok(&["job", "run", "--detach", path.to_str().unwrap()]);
}

/// The running allocation of `job`, once it reports its IP.
fn running_alloc(c: &DevCluster, job: &str) -> Value {
    wait_running(c, job, 1);
    poll_until(&format!("{job} with an IP"), WAIT, || {
        let s = c.cli_json(&["job", "status", job]);
        let a = arr(&s["allocations"]).first().cloned()?;
        (!str_of(&a, "ip").is_empty()).then_some(a)
    })
}

/// The first line of an HTTP/1.0 GET of `/` on `ip:PORT`, once the
/// server answers.
fn http_status_line(ip: Ipv4Addr) -> String {
    poll_until(&format!("http.server on {ip}:{PORT}"), WAIT, || {
        let addr = SocketAddr::from((ip, PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines().next().map(str::to_owned)
    })
}

fn exec(c: &DevCluster, alloc: &str, script: &str) -> Output {
    c.cli(&["exec", alloc, "--", "/bin/sh", "-c", script])
}

const STATUS_AND_USERNS: &str =
    "grep '^Seccomp:' /proc/self/status; unshare -U true 2>/dev/null; echo unshare=$?";

#[test]
fn http_server_and_exec_run_under_the_default_filter() {
    let c = DevCluster::start();
    let job = unique_name("schttp");
    run_job(&c, "http.toml", &http_service(&job, ""));
    let a = running_alloc(&c, &job);
    let ip: Ipv4Addr = str_of(&a, "ip").parse().unwrap();
    let line = http_status_line(ip);
    assert!(line.contains("200"), "{line}");

    let out = exec(&c, str_of(&a, "id"), STATUS_AND_USERNS);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout, "Seccomp:\t2\nunshare=1\n", "{out:?}");
    // The task itself too.
    let pid = arr(&a["tasks"])[0]["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
}

#[test]
fn unconfined_jobs_need_the_node_policy() {
    // Refused where the policy does not allow it: the allocation fails
    // before its task starts, naming the setting.
    let c = DevCluster::start();
    let job = unique_name("scref");
    let text = batch_with(
        &job,
        "echo started",
        "seccomp = \"unconfined\"\nresources = { cpu_millis = 50, memory_mb = 16 }",
    );
    run_job(&c, "refused.toml", &text);
    let a = poll_until(&format!("{job} to fail"), WAIT, || {
        let s = c.cli_json(&["job", "status", &job]);
        let a = arr(&s["allocations"]).first().cloned()?;
        (str_of(&a, "status") == "failed").then_some(a)
    });
    let message = str_of(&arr(&a["tasks"])[0], "message");
    assert!(message.contains("seccomp.allow_unconfined"), "{a}");
    assert!(!c.agent_dir().join("allocs").join(str_of(&a, "id")).exists());
    // A value other than default or unconfined is refused by the scheduler.
    let bad = c.write_file("bad.toml", &text.replace("\"unconfined\"", "\"off\""));
    let out = c.cli(&["job", "run", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seccomp \"off\""), "{err}");
    drop(c);

    // Honoured where it allows it, and exec goes unconfined too.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[seccomp]\nallow_unconfined = true\n").unwrap();
    let c = DevCluster::start_with(&["--policy", policy.to_str().unwrap()]);
    let job = unique_name("scunc");
    run_job(
        &c,
        "unconfined.toml",
        &http_service(&job, "seccomp = \"unconfined\""),
    );
    let a = running_alloc(&c, &job);
    let out = exec(&c, str_of(&a, "id"), "grep '^Seccomp:' /proc/self/status");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Seccomp:\t0\n",
        "{out:?}"
    );
}
