//! Health checks end to end through `drover dev`: the agent runs tcp,
//! http and exec checks of a service from inside the allocation, reports
//! them on its stream, the scheduler stores them in the allocation record,
//! and `drover alloc status` shows them.
//!
//! The task serves HTTP with busybox `httpd` on the allocation's own
//! `127.0.0.1:8080`. Each kind of check is seen passing and failing; a tcp
//! check of a port the *host* listens on (on the host's `127.0.0.1`) fails,
//! because the check runs in the allocation's network namespace; an exec
//! check follows a file the test creates and removes with `drover exec`,
//! before and after the agent is killed and restarted.
//!
//! Needs root, busybox (busybox-static) and the binary: `cargo build -p
//! drover-cli && cargo test -p drover-tests --test checks_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;

use drover_tests::checks::{arr, str_of, wait_running, WAIT};
use drover_tests::procs::cmdline;
use drover_tests::{poll_until, run_drover_with_env, unique_name, DevCluster};
use serde_json::Value;

/// A service job whose one task serves `/tmp/www` on its `127.0.0.1:8080`,
/// with the `[[group.service]]` tables `services`.
fn job(name: &str, services: &str) -> String {
    let script = "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && \
                  exec busybox httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 32 }}

{services}"#
    )
}

/// One `[[group.service.check]]` table: every 500 ms, timing out after
/// 400 ms (generous: an exec check starts a helper process, on a machine
/// that may be busy), passing after one success and going critical after
/// two failures.
fn check(kind_and_args: &str) -> String {
    check_every(kind_and_args, 500, 400)
}

/// [`check`] with its interval and timeout.
fn check_every(kind_and_args: &str, interval_ms: u32, timeout_ms: u32) -> String {
    format!(
        "[[group.service.check]]\n{kind_and_args}\ninterval_ms = {interval_ms}\n\
         timeout_ms = {timeout_ms}\nsuccess_before_passing = 1\nfailures_before_critical = 2\n"
    )
}

/// The argument of the slow exec check's `sleep`, unusual enough to find
/// its processes on the host.
const SLOW: &str = "47.123";

/// How many `sleep SLOW` processes run on the host.
fn sleeping() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| cmdline(*pid) == ["sleep", SLOW])
        .count()
}

/// `alloc status -o json` of `id`.
fn alloc_status(c: &DevCluster, id: &str) -> Value {
    c.cli_json(&["alloc", "status", id])
}

/// The check `service`/`index` in an `alloc status`.
fn check_of<'a>(alloc: &'a Value, service: &str, index: u64) -> Option<&'a Value> {
    alloc["checks"]
        .as_array()?
        .iter()
        .find(|c| c["service"] == service && c["index"].as_u64() == Some(index))
}

/// Polls until check `service`/`index` of `id` has `status`; returns it.
fn wait_check(c: &DevCluster, id: &str, service: &str, index: u64, status: &str) -> Value {
    poll_until(
        &format!("check {service}#{index} of {id} to be {status}"),
        WAIT,
        || {
            let a = alloc_status(c, id);
            let found = check_of(&a, service, index)?;
            (found["status"] == status).then(|| found.clone())
        },
    )
}

/// `drover exec <id> -- <command>` (the address through `DROVER_ADDR`:
/// everything after `--` is the command's), which must succeed.
fn exec(c: &DevCluster, id: &str, command: &[&str]) {
    let mut args = vec!["exec", id, "--"];
    args.extend_from_slice(command);
    let out = run_drover_with_env(&args, &[("DROVER_ADDR", c.addr())]);
    assert!(
        out.status.success(),
        "drover exec {command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Submits `text` and returns the id of its one running allocation.
fn run_one(c: &DevCluster, name: &str, text: &str) -> String {
    let file = c.write_file(&format!("{name}.toml"), text);
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(c, name, 1);
    str_of(&arr(&status["allocations"])[0], "id").to_owned()
}

#[test]
fn tcp_http_and_exec_checks_pass_and_fail_inside_the_allocation() {
    let c = DevCluster::start();
    // The host listens on its own 127.0.0.1:<port>; the task does not.
    let host_only = TcpListener::bind("127.0.0.1:0").expect("binding a host loopback port");
    let host_port = host_only.local_addr().unwrap().port();
    assert_ne!(host_port, 8080);
    let name = unique_name("chk");
    let services = format!(
        "[[group.service]]\nname = \"web\"\nport = 8080\n{}{}{}\
         [[group.service]]\nname = \"bad\"\nport = 8081\n{}{}{}\
         [[group.service]]\nname = \"hostport\"\nport = {host_port}\n{}\
         [[group.service]]\nname = \"slow\"\nport = 8080\n{}",
        check("type = \"tcp\""),
        check("type = \"http\"\npath = \"/index.html\""),
        check("type = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"cat /tmp/www/index.html\"]"),
        // Nothing listens on 8081 inside.
        check("type = \"tcp\""),
        check("type = \"http\"\npath = \"/missing\"\nport = 8080"),
        check("type = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo sick; exit 1\"]"),
        check("type = \"tcp\""),
        check_every(
            &format!("type = \"exec\"\ncommand = [\"sleep\", \"{SLOW}\"]"),
            200,
            150,
        ),
    );
    let id = run_one(&c, &name, &job(&name, &services));

    // The host's listener is not the allocation's: never reached.
    let host = wait_check(&c, &id, "hostport", 0, "critical");
    assert!(str_of(&host, "output").contains("refused"), "{host}");
    host_only.set_nonblocking(true).unwrap();
    assert!(
        host_only.accept().is_err(),
        "a check connected to the host's 127.0.0.1:{host_port}"
    );

    let tcp = wait_check(&c, &id, "web", 0, "passing");
    assert_eq!(tcp["type"], "tcp");
    assert!(tcp["last_unix_ms"].as_i64() > Some(0), "{tcp}");
    let http = wait_check(&c, &id, "web", 1, "passing");
    assert_eq!(http["type"], "http");
    assert!(
        str_of(&http, "output").starts_with("HTTP/1.") && str_of(&http, "output").contains(" 200"),
        "{http}"
    );
    let exec = wait_check(&c, &id, "web", 2, "passing");
    assert_eq!(str_of(&exec, "output"), "hello", "{exec}");

    let tcp = wait_check(&c, &id, "bad", 0, "critical");
    assert!(str_of(&tcp, "output").contains("127.0.0.1:8081"), "{tcp}");
    let http = wait_check(&c, &id, "bad", 1, "critical");
    assert!(str_of(&http, "output").contains(" 404"), "{http}");
    let exec = wait_check(&c, &id, "bad", 2, "critical");
    assert_eq!(str_of(&exec, "output"), "sick", "{exec}");

    // An exec check past its timeout fails, and its command is killed:
    // one starts every 200 ms, so unkilled ones would pile up.
    let slow = wait_check(&c, &id, "slow", 0, "critical");
    assert_eq!(str_of(&slow, "output"), "timed out after 150 ms", "{slow}");
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(sleeping());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!((1..=3).contains(&most), "{most} `sleep {SLOW}` at once");

    // People see the same in `alloc status`.
    let table = c.cli_ok(&["alloc", "status", &id, "-o", "table"]);
    assert!(table.contains("Checks"), "{table}");
    let row = |service: &str, index: &str, kind: &str, status: &str| {
        table.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() >= 4 && cells[..4] == [service, index, kind, status]
        })
    };
    assert!(row("web", "1", "http", "passing"), "{table}");
    assert!(row("bad", "2", "exec", "critical"), "{table}");
    assert!(table.contains("sick"), "{table}");
}

#[test]
fn a_check_follows_the_task_and_runs_again_after_an_agent_restart() {
    let mut c = DevCluster::start();
    let name = unique_name("flip");
    let services = format!(
        "[[group.service]]\nname = \"web\"\nport = 8080\n{}",
        check("type = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"test -f /tmp/up && echo up\"]"),
    );
    let id = run_one(&c, &name, &job(&name, &services));
    // Never passed, so it goes critical from pending.
    let first = wait_check(&c, &id, "web", 0, "critical");
    assert_eq!(str_of(&first, "output"), "exit code 1", "{first}");

    exec(&c, &id, &["touch", "/tmp/up"]);
    let up = wait_check(&c, &id, "web", 0, "passing");
    assert_eq!(str_of(&up, "output"), "up");
    exec(&c, &id, &["rm", "/tmp/up"]);
    wait_check(&c, &id, "web", 0, "critical");

    // The agent is killed and comes back: it re-adopts the allocation and
    // runs its checks again (from pending).
    c.kill9_and_restart();
    exec(&c, &id, &["touch", "/tmp/up"]);
    wait_check(&c, &id, "web", 0, "passing");
    exec(&c, &id, &["rm", "/tmp/up"]);
    wait_check(&c, &id, "web", 0, "critical");

    // Stopped: its checks stop, and the record shows them no verdict.
    c.cli_ok(&["job", "stop", &name]);
    poll_until(
        "the stopped allocation's checks to be pending",
        WAIT,
        || {
            let a = alloc_status(&c, &id);
            (check_of(&a, "web", 0)?["status"] == "pending").then_some(())
        },
    );
}
