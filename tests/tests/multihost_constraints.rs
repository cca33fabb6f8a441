//! Constraints with real agents: a job constrained on `${meta.ssd} = true`
//! waits, explained, while no node has that metadata, and is placed once
//! a host started with `drover agent --meta ssd=true` joins (by the
//! scheduler's periodic reconcile). `drover node status` shows the node's
//! attributes and metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_tests::{poll_until, MultiHost};

/// Long enough for a restarted agent to register and a reconcile pass
/// (every 5 s) to place the job; a deadline, not an expectation.
const PLACED_TIMEOUT: Duration = Duration::from_secs(60);

const SSD_JOB: &str = r#"
name = "fast"

[[group]]
name = "db"

[[group.constraint]]
attribute = "${meta.ssd}"
value = "true"

[[group.task]]
name = "app"
command = ["sleep", "3600"]
resources = { cpu_millis = 50, memory_mb = 16 }
"#;

#[test]
fn a_job_on_ssd_waits_explained_and_runs_once_an_ssd_node_joins() {
    let mut mh = MultiHost::start(2);
    let ssd_node = mh.host(1).node_id.clone();
    let status = mh.cli_json(&["node", "status", &ssd_node]);
    assert_eq!(status["meta"], serde_json::json!({}), "{status}");
    assert!(
        status["attributes"]["arch"].is_string(),
        "attributes shown: {status}"
    );

    let file = mh.write_file("fast.toml", SSD_JOB);
    let plan = mh.cli_json(&["job".as_ref(), "plan".as_ref(), file.as_os_str()]);
    let failures = plan["failures"].as_array().unwrap();
    assert_eq!(
        failures[0].as_str().unwrap(),
        "group \"db\": 1 instance unplaceable: 2 nodes evaluated: 2 filtered by constraint ${meta.ssd} = true",
        "{plan}"
    );
    let run = mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    assert!(
        run.contains("2 filtered by constraint ${meta.ssd} = true"),
        "the submission says why nothing was placed: {run}"
    );
    let allocs = mh.cli_json(&["alloc", "list", "--job", "fast"]);
    assert_eq!(allocs.as_array().map(Vec::len), Some(0), "{allocs}");

    // Host 1 comes back as an SSD node.
    mh.stop_agent(1);
    mh.start_agent_with(1, &["--meta", "ssd=true", "--meta", "rack=r1"]);
    poll_until(
        &format!("node {ssd_node} to register with its metadata"),
        PLACED_TIMEOUT,
        || {
            let n = mh.nodes().remove(&ssd_node)?;
            (n["status"] == "ready" && n["meta"]["ssd"] == "true").then_some(())
        },
    );
    let text = mh.cli_ok(&["node", "status", &ssd_node]);
    assert!(
        text.contains("${meta.ssd}") && text.contains("= true"),
        "{text}"
    );
    assert!(text.contains("${meta.rack}"), "{text}");
    assert!(text.contains("${attr.arch}"), "{text}");

    let placed = mh.running_with_ips("fast", 1);
    assert_eq!(
        placed.keys().collect::<Vec<_>>(),
        [&ssd_node],
        "placed on the SSD node only"
    );
    mh.cli_ok(&["job", "stop", "fast"]);
}

#[test]
fn bad_meta_flags_are_refused_before_anything_starts() {
    let bin = drover_tests::drover_bin();
    for (flag, says) in [("ssd", "expected KEY=VALUE"), ("a b=1", "characters")] {
        let out = std::process::Command::new(&bin)
            .args(["agent", "--meta", flag, "--scheduler", "http://127.0.0.1:1"])
            .args(["--data-dir", "/nonexistent/drover-meta-test"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {err}");
        assert!(err.contains(says), "{flag}: {err}");
    }
}
