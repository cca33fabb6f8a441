//! End-to-end tests of the CLI's tools for people's habits: shell
//! completion scripts, `drover version` (client and server), and `-o json`
//! on the commands that used to print only text.
//!
//! Needs root and the binary (the version and store tests start `drover
//! dev`): `cargo build -p drover-cli && cargo test -p drover-tests --test
//! cli_tools_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::checks::{service, wait_running};
use drover_tests::{closed_loopback_addr, run_drover, DevCluster};
use serde_json::Value;

/// The workspace's release, which the CLI and the scheduler both report.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn stdout_of(args: &[&str]) -> String {
    let out = run_drover(args);
    assert!(
        out.status.success(),
        "drover {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn one_json(args: &[&str]) -> Value {
    let text = stdout_of(args);
    assert_eq!(text.lines().count(), 1, "not one line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Each shell's script is that shell's, names the subcommands and, for
/// bash, passes `bash -n`.
#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    let bash = stdout_of(&["completion", "bash"]);
    assert!(bash.contains("complete -F _drover"), "{bash}");
    for sub in ["job", "logs", "exec", "completion", "version"] {
        assert!(bash.contains(sub), "bash script lacks {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.bash");
    std::fs::write(&path, &bash).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let zsh = stdout_of(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef drover"), "{zsh}");
    let fish = stdout_of(&["completion", "fish"]);
    assert!(fish.contains("complete -c drover"), "{fish}");
    let refused = run_drover(&["completion", "tcsh"]);
    assert!(!refused.status.success());
}

/// `drover version`: the client's release, and the scheduler's from the
/// server (as text and as one JSON document); an unreachable server is
/// reported beside the client's version, not as a failure.
#[test]
fn version_prints_client_and_server_versions() {
    let c = DevCluster::start();
    let v = one_json(&["version", "-o", "json", "--addr", c.addr()]);
    assert_eq!(v["client"]["version"], VERSION, "{v}");
    assert_eq!(v["server"]["version"], VERSION, "{v}");
    assert_eq!(v["server"]["component"], "scheduler", "{v}");
    assert_eq!(v["server"]["api"], "v1", "{v}");
    let text = stdout_of(&["version", "--addr", c.addr()]);
    assert!(text.contains(&format!("Client: {VERSION}")), "{text}");
    assert!(
        text.contains(&format!("Server: {VERSION} (scheduler")),
        "{text}"
    );

    let closed = closed_loopback_addr();
    let out = run_drover(&["version", "-o", "json", "--addr", &closed]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client"]["version"], VERSION, "{v}");
    assert!(v["server"]["error"].is_string(), "{v}");
}

/// `-o json` on commands that printed only text: `tls init` (the files it
/// wrote), `store backup` (file and size), `job revert` and `deployment
/// fail` (one document each).
#[test]
fn json_output_of_tls_store_and_revert() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let v = one_json(&["tls", "init", "--dir", tls.to_str().unwrap(), "-o", "json"]);
    let files = v["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{v}");
    for f in files {
        assert!(std::path::Path::new(f.as_str().unwrap()).exists(), "{f}");
    }

    let c = DevCluster::start();
    let backup = dir.path().join("backup.db");
    let v = one_json(&[
        "store",
        "backup",
        "--endpoint",
        &format!("http://{}", c.store_addr()),
        backup.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(v["file"], backup.to_str().unwrap(), "{v}");
    assert_eq!(
        v["bytes"].as_u64(),
        Some(std::fs::metadata(&backup).unwrap().len()),
        "{v}"
    );

    let job = c.write_file("rev.toml", &service("rev", 1, "sleep 3600"));
    c.cli_ok(&["job", "run", job.to_str().unwrap()]);
    wait_running(&c, "rev", 1);
    let job2 = c.write_file("rev2.toml", &service("rev", 1, "sleep 3601"));
    c.cli_ok(&["job", "run", job2.to_str().unwrap()]);
    let v = c.cli_json(&["job", "revert", "rev", "1", "--detach"]);
    assert_eq!(v["job"], "rev", "{v}");
    assert_eq!(v["reverted_from_version"], 1, "{v}");
    assert!(v["version"].as_u64() > Some(2), "{v}");
}
