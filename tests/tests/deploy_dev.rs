//! Deployments end to end through `drover dev`: a rolling update of 6
//! instances with `max_parallel = 2` whose healthy count, sampled from
//! `drover job status -o json` the whole time, never drops below 4 (and
//! which `drover job run` follows on a terminal, redrawing its view); a
//! canary placed beside the old version and promoted; a deployment whose
//! new version never passes its check, failed at its progress deadline
//! and reverted to the last stable version, old allocations kept until
//! their replacements are healthy.
//!
//! Each instance serves busybox `httpd` on its own `127.0.0.1:8080`,
//! checked over http every 200 ms.
//!
//! Needs root, busybox (busybox-static) and the binary: `cargo build -p
//! drover-cli && cargo test -p drover-tests --test deploy_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_tests::checks::{arr, str_of};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// Bound on a deployment of a few instances with short healthy times.
const DEPLOY_WAIT: Duration = Duration::from_secs(90);

/// Job `name`: 6 instances serving `version` on port `port` (8080 passes
/// the check, another port fails it), with the update strategy `update`.
fn job(name: &str, version: &str, port: u16, update: &str) -> String {
    let script = format!(
        "mkdir -p /tmp/www && echo {version} > /tmp/www/index.html && \
         exec busybox httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    );
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
count = 6
update = {{ {update} }}

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", {script:?}]
env = {{ VERSION = "{version}" }}
kill_timeout_ms = 200
resources = {{ cpu_millis = 10, memory_mb = 16 }}

[[group.service]]
name = "{name}"
port = 8080
[[group.service.check]]
type = "http"
path = "/index.html"
interval_ms = 200
timeout_ms = 150
"#
    )
}

const ROLLING: &str = "max_parallel = 2, min_healthy_time_ms = 500, \
    healthy_deadline_ms = 20000, progress_deadline_ms = 40000";

/// Healthy instances of the job's service, from `job status -o json`.
fn healthy(status: &Value) -> u64 {
    arr(&status["services"])
        .first()
        .and_then(|s| s["healthy"].as_u64())
        .unwrap_or(0)
}

/// The job versions of the allocations desired to run, sorted.
fn live_versions(status: &Value) -> Vec<u64> {
    let mut v: Vec<u64> = arr(&status["allocations"])
        .iter()
        .filter(|a| str_of(a, "desired") == "run")
        .map(|a| a["job_version"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn deployment(c: &DevCluster, name: &str) -> Value {
    c.cli_json(&["deployment", "status", name])
}

/// Waits until the job's latest deployment has `status`.
fn wait_deployment(c: &DevCluster, name: &str, status: &str) -> Value {
    poll_until(
        &format!("deployment of {name} {status}"),
        DEPLOY_WAIT,
        || {
            let d = deployment(c, name);
            (d["status"] == status).then_some(d)
        },
    )
}

/// Runs `drover ARGS --addr <cluster>` on a pseudo-terminal (util-linux
/// `script`), as a person at a terminal would; its output as the terminal
/// showed it.
fn on_terminal(c: &DevCluster, args: &[&str]) -> std::process::Output {
    let mut line = vec![drover_tests::drover_bin().display().to_string()];
    line.extend(args.iter().map(|a| (*a).to_string()));
    line.extend(["--addr".to_string(), c.addr().to_string()]);
    let quoted: Vec<String> = line.iter().map(|a| format!("'{a}'")).collect();
    std::process::Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &quoted.join(" "),
            "/dev/null",
        ])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs `f` while a thread samples the job's healthy count; returns `f`'s
/// result and the lowest count seen.
fn sampling<T>(c: &DevCluster, name: &str, f: impl FnOnce() -> T) -> (T, u64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut low = u64::MAX;
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                low = low.min(healthy(&c.cli_json(&["job", "status", name])));
                samples += 1;
            }
            assert!(samples >= 3, "only {samples} samples taken");
            low
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        (out, sampler.join().unwrap())
    })
}

#[test]
fn rolling_canary_and_auto_revert() {
    let c = DevCluster::start();
    let name = unique_name("dep");
    let v1 = c.write_file("v1.toml", &job(&name, "one", 8080, ROLLING));
    c.cli_ok(&["job", "run", v1.to_str().unwrap()]);
    poll_until("6 healthy instances of v1", DEPLOY_WAIT, || {
        (healthy(&c.cli_json(&["job", "status", &name])) == 6).then_some(())
    });
    assert_eq!(wait_deployment(&c, &name, "successful")["version"], 1);

    // Rolling update: `job run`, on a terminal, follows the deployment to
    // its end in a view redrawn in place.
    let v2 = c.write_file("v2.toml", &job(&name, "two", 8080, ROLLING));
    let (out, low) = sampling(&c, &name, || {
        on_terminal(&c, &["job", "run", v2.to_str().unwrap()])
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "job run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("version 2: successful"), "{stdout}");
    // Redrawn: the cursor goes back up over the view (2 lines) and each
    // line is cleared before it is written again.
    assert!(
        stdout.contains("\x1b[2A") && stdout.contains("\x1b[2Kdeployment of"),
        "no live view on a terminal: {stdout:?}"
    );
    assert!(
        low >= 4,
        "healthy instances dropped to {low} during the rolling update"
    );
    let status = c.cli_json(&["job", "status", &name]);
    assert_eq!(live_versions(&status), [2; 6]);
    let text = c.cli_ok(&["job", "status", &name]);
    assert!(
        text.contains("Latest deployment") && text.contains("version 2: successful"),
        "job status shows the deployment:\n{text}"
    );

    // Canary: one v3 beside the six v2, until promoted.
    let canary = format!("{ROLLING}, canary = 1");
    let v3 = c.write_file("v3.toml", &job(&name, "three", 8080, &canary));
    c.cli_ok(&["job", "run", "--detach", v3.to_str().unwrap()]);
    poll_until(
        "the canary healthy, waiting for promotion",
        DEPLOY_WAIT,
        || {
            let d = deployment(&c, &name);
            str_of(&d, "description")
                .contains("waiting for promotion")
                .then_some(())
        },
    );
    let status = c.cli_json(&["job", "status", &name]);
    assert_eq!(live_versions(&status), [2, 2, 2, 2, 2, 2, 3], "{status}");
    let early = c.cli(&["deployment", "promote", &unique_name("nojob")]);
    assert!(!early.status.success());
    c.cli_ok(&["deployment", "promote", &name]);
    let d = wait_deployment(&c, &name, "successful");
    assert_eq!(d["version"], 3);
    assert_eq!(
        live_versions(&c.cli_json(&["job", "status", &name])),
        [3; 6]
    );

    fails_and_reverts(&c, &name);

    let history = c.cli_json(&["job", "history", &name]);
    let versions: Vec<(u64, bool)> = arr(&history)
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["stable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(5, true), (4, false), (3, true), (2, true), (1, true)]
    );
    assert!(str_of(&arr(&history)[1], "summary").contains("command changed"));
    c.cli_ok(&["job", "stop", &name]);
}

/// Version 4, whose check never passes: fails at its progress deadline
/// and goes back to v3 at once, without canaries, keeping the healthy v3
/// instances until their replacements are healthy.
fn fails_and_reverts(c: &DevCluster, name: &str) {
    let bad = format!(
        "{}, canary = 1, auto_promote = true, auto_revert = true",
        "max_parallel = 2, min_healthy_time_ms = 500, healthy_deadline_ms = 3000, progress_deadline_ms = 4000"
    );
    let v4 = c.write_file("v4.toml", &job(name, "four", 8081, &bad));
    let (out, low) = sampling(c, name, || c.cli(&["job", "run", v4.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a failed deployment must fail job run"
    );
    // Not on a terminal: plain lines, one block per change, no escapes.
    assert!(
        stdout.contains("version 4: running") && !stdout.contains('\x1b'),
        "{stdout:?}"
    );
    assert!(stderr.contains("reverted to version 3"), "{stderr}");
    assert!(
        low >= 5,
        "healthy instances dropped to {low} while the canary failed"
    );
    let d = wait_deployment(c, name, "successful");
    assert_eq!(
        (d["version"].as_u64(), d["revert"].as_bool()),
        (Some(5), Some(true))
    );
    let status = c.cli_json(&["job", "status", name]);
    assert_eq!(
        live_versions(&status),
        [3; 6],
        "the v3 instances stayed: {status}"
    );
    assert_eq!(healthy(&status), 6);
}
