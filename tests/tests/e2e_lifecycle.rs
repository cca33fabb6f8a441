//! Allocation lifecycle through the real `drover dev`: batch completion and
//! failure, start failures surfaced by `job run`, restart policy, and an
//! agent killed with SIGKILL that re-adopts its tasks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::checks::{
    alloc_ids, arr, batch, batch_with, edit, str_of, task_pids, wait_running, WAIT,
};
use drover_tests::runtime::busybox_tree;
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

fn job_status(c: &DevCluster, name: &str) -> Value {
    c.cli_json(&["job", "status", name])
}

#[test]
fn batch_jobs_complete_or_fail_once_without_replacement() {
    let c = DevCluster::start();
    let ok = unique_name("ok");
    let file = c.write_file("ok.toml", &batch(&ok, "echo done"));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    poll_until("the batch job to complete", WAIT, || {
        (str_of(&job_status(&c, &ok), "status") == "complete").then_some(())
    });

    let bad = unique_name("bad");
    // Rescheduling off: a batch job is otherwise replaced once after 5 s
    // by default (reschedule_dev covers that).
    let text = edit(
        &batch(&bad, "exit 3"),
        "name = \"main\"\n",
        "name = \"main\"\nreschedule = { attempts = 0 }\n",
    );
    let file = c.write_file("bad.toml", &text);
    // `job run` of a batch job waits for its outcome and fails when the
    // allocation fails, naming it.
    let out = c.cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "job run of a failing batch job succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{bad}.main[0] failed")), "{err}");
    // The job's status follows its allocation's in a later write.
    let job = poll_until("the failing batch job to fail", WAIT, || {
        let j = job_status(&c, &bad);
        (j["status"] == "failed").then_some(j)
    });
    let failed = alloc_ids(&job);
    assert_eq!(failed.len(), 1, "{job}");
    assert_eq!(job["allocations"][0]["tasks"][0]["exit_code"], 3, "{job}");
    // Not replaced, not restarted, over a while: a replacement would be
    // placed at once (the reconciler runs on every status change), and a
    // restart within the restart delay.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let job = job_status(&c, &bad);
        assert_eq!(
            alloc_ids(&job),
            failed,
            "a failed batch allocation was replaced: {job}"
        );
        let a = &job["allocations"][0];
        assert_eq!(str_of(a, "status"), "failed", "{job}");
        assert_eq!(a["tasks"][0]["restarts"], 0, "{job}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn job_run_fails_and_names_the_command_that_cannot_start() {
    let c = DevCluster::start();
    let name = unique_name("nf");
    let text = format!(
        r#"name = "{name}"
[[group]]
name = "main"
[[group.task]]
name = "app"
command = ["/nonexistent/prog"]
"#
    );
    let file = c.write_file("nf.toml", &text);
    let out = c.cli(&["job", "run", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "job run succeeded with a missing command"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/prog"), "{err}");
    assert!(err.contains(&format!("{name}.main[0] failed")), "{err}");
}

#[test]
fn restart_policy_restarts_then_fails_the_allocation() {
    let c = DevCluster::start();
    let name = unique_name("flap");
    let text = format!(
        r#"name = "{name}"
[[group]]
name = "main"
restart = {{ attempts = 2, delay_ms = 50 }}
[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "echo run; exit 1"]
kill_timeout_ms = 200
"#
    );
    let file = c.write_file("flap.toml", &text);
    let _ = c.cli(&["job", "run", "--detach", file.to_str().unwrap()]);
    let job = poll_until("the allocation to fail after its restarts", WAIT, || {
        let j = job_status(&c, &name);
        let a = arr(&j["allocations"]).first()?.clone();
        (str_of(&a, "status") == "failed").then_some(j)
    });
    let task = &job["allocations"][0]["tasks"][0];
    assert_eq!(task["restarts"], 2, "{job}");
    let alloc = str_of(&job["allocations"][0], "id").to_string();
    let logs = c.cli_ok(&["logs", &alloc]);
    assert_eq!(
        logs.matches("run").count(),
        3,
        "three runs logged: {logs:?}"
    );
}

#[test]
fn agent_killed_with_sigkill_re_adopts_tasks_and_reports_exits() {
    // The task's /tmp is its own and the host view shows none of the
    // host's data: the node policy adds the directory where the test
    // releases the task (read-only, which is enough to see the flag).
    let flag_dir = tempfile::Builder::new()
        .prefix("drover-e2e-flag-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let policy = flag_dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[host_root]\nadd = [{:?}]\n",
            flag_dir.path().display().to_string()
        ),
    )
    .unwrap();
    let mut c = DevCluster::start_with(&["--policy", policy.to_str().unwrap()]);
    let keep = unique_name("keep");
    let file = c.write_file(
        "keep.toml",
        &drover_tests::checks::service(&keep, 1, "echo up; sleep 3600"),
    );
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let before = task_pids(&wait_running(&c, &keep, 1));

    // A task that ends while the agent is down.
    let short = unique_name("short");
    let flag = flag_dir.path().join("release");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
        flag.display()
    );
    let file = c.write_file("short.toml", &batch_with(&short, &script, ""));
    c.cli_ok(&["job", "run", "--detach", file.to_str().unwrap()]);
    let short_alloc = str_of(&wait_running(&c, &short, 1)["allocations"][0], "id").to_string();
    let short_state = c
        .data_dir()
        .join("agent/allocs")
        .join(&short_alloc)
        .join("app/state.json");

    // Kill the whole dev process (agent, scheduler, store) and let the
    // short task finish while nothing watches it.
    let dev = c.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    poll_until("drover dev to die", WAIT, || {
        (!std::path::Path::new(&format!("/proc/{dev}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{dev}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true))
        .then_some(())
    });
    std::fs::write(&flag, b"").unwrap();
    // Its supervisor records the exit with no agent running.
    poll_until("the supervisor to record the exit", WAIT, || {
        let s = std::fs::read_to_string(&short_state).ok()?;
        s.contains("\"exited\"").then_some(())
    });
    c.kill9_and_restart();

    // The task that exited while the agent was down is reported with its
    // code: only the new agent can know it, so from here on what the
    // scheduler shows comes from the new agent's look at its tasks.
    // The job's own status follows its allocation's in a later write.
    poll_until("the exit during downtime to be reported", WAIT, || {
        let j = job_status(&c, &short);
        let t = j["allocations"][0]["tasks"][0].clone();
        (t["exit_code"] == 7 && j["status"] == "failed").then_some(j)
    });
    // The long task was re-adopted, not restarted: same pid, still alive,
    // no restart counted.
    let keep_job = wait_running(&c, &keep, 1);
    let after = task_pids(&keep_job);
    assert_eq!(before, after, "the running task was restarted");
    assert!(std::path::Path::new(&format!("/proc/{}", after[0])).exists());
    assert_eq!(
        keep_job["allocations"][0]["tasks"][0]["restarts"], 0,
        "{keep_job}"
    );
    // The log from before the crash is still there.
    let alloc = str_of(&wait_running(&c, &keep, 1)["allocations"][0], "id").to_string();
    assert!(c.cli_ok(&["logs", &alloc]).contains("up"));
}

#[test]
fn job_files_choose_the_root_filesystem() {
    let c = DevCluster::start();
    // A tiny busybox rootfs with a marker.
    let root = c.data_dir().join("rootfs");
    busybox_tree(&root, &["sh", "cat", "touch", "sleep"]).unwrap();
    std::fs::write(root.join("marker"), "in the rootfs\n").unwrap();

    let job = |name: &str, rootfs: &str, script: &str| batch_with(name, script, rootfs);
    let run = |name: &str, text: String| {
        let file = c.write_file(&format!("{name}.toml"), &text);
        let out = c.cli(&["job", "run", file.to_str().unwrap()]);
        let j = poll_until("the job to finish", WAIT, || {
            let j = job_status(&c, name);
            matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
        });
        (out, j)
    };

    // Default: the host, read-only, with a private writable /tmp.
    let host = unique_name("host");
    let (_, j) = run(
        &host,
        job(
            &host,
            "",
            "touch /tmp/ok && ! touch /usr/drover-must-fail 2>/dev/null && test -e /etc/debian_version",
        ),
    );
    assert_eq!(str_of(&j, "status"), "complete", "{j}");
    assert!(!std::path::Path::new("/usr/drover-must-fail").exists());

    // A rootfs directory, behind an overlay: its files, not the host's.
    let dir = unique_name("dir");
    let rootfs = format!(
        "rootfs = {{ type = \"dir\", path = {:?} }}",
        root.display().to_string()
    );
    let (_, j) = run(
        &dir,
        job(
            &dir,
            &rootfs,
            "cat /marker && ! test -e /etc/debian_version && touch /new",
        ),
    );
    assert_eq!(str_of(&j, "status"), "complete", "{j}");
    assert!(
        !root.join("new").exists(),
        "the rootfs directory was written to"
    );

    // A rootfs that does not exist: refused, and `job run` names it.
    let missing = unique_name("missing");
    let (out, j) = run(
        &missing,
        job(
            &missing,
            "rootfs = { type = \"dir\", path = \"/nonexistent/rootfs\" }",
            "true",
        ),
    );
    assert_eq!(str_of(&j, "status"), "failed", "{j}");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rootfs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stores `bytes` as a blob of the OCI layout at `layout`; returns the
/// digest and size.
fn blob(layout: &std::path::Path, bytes: &[u8]) -> (String, usize) {
    let tmp = layout.join("blobs/sha256/incoming");
    std::fs::write(&tmp, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap().to_string();
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

#[test]
fn a_job_runs_an_oci_image_with_its_default_command() {
    let c = DevCluster::start();
    // One gzip layer: busybox, sh, and a file only the image has.
    let tree = c.data_dir().join("layer");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(tool)).unwrap();
    }
    std::fs::write(tree.join("etc/from-image"), "made in the image\n").unwrap();
    let tgz = c.data_dir().join("layer.tar.gz");
    let status = std::process::Command::new("tar")
        .args([
            "-czf",
            tgz.to_str().unwrap(),
            "-C",
            tree.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let layout = c.data_dir().join("image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let (layer, layer_size) = blob(&layout, &std::fs::read(&tgz).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/sh", "-c", "cat /etc/from-image; echo GREETING=$GREETING"],
                    "Env": ["GREETING=from-config"] },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    let (config, config_size) = blob(&layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size }],
    });
    let (manifest, manifest_size) = blob(&layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();

    // No command in the job: the image's config supplies it.
    let name = unique_name("oci");
    let text = format!(
        r#"name = "{name}"
kind = "batch"
[[group]]
name = "main"
[[group.task]]
name = "app"
kill_timeout_ms = 200
rootfs = {{ type = "oci", path = {:?} }}
"#,
        layout.display().to_string()
    );
    let file = c.write_file("oci.toml", &text);
    let out = c.cli(&["job", "run", file.to_str().unwrap()]);
    let j = poll_until("the image's command to finish", WAIT, || {
        let j = job_status(&c, &name);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    assert_eq!(
        str_of(&j, "status"),
        "complete",
        "{j}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alloc = str_of(&j["allocations"][0], "id").to_string();
    let logs = c.cli_ok(&["logs", &alloc]);
    assert!(logs.contains("made in the image"), "{logs}");
    assert!(logs.contains("GREETING=from-config"), "{logs}");
}
