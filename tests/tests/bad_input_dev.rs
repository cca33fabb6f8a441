//! Bad input through `drover dev` and the CLI, as a user meets it (issue
//! #13, "Bad input"): a job file too large for the state store and one too
//! large for one request are refused naming the limit and the size; a
//! count no node can hold is planned as one line; `drover dev --algorithm
//! spread` starts and places. Nothing is stored for a refused job.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test bad_input_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::checks::{arr, assert_refusal, batch, edit, service, snapshot, wait_running};
use drover_tests::DevCluster;

/// A batch job `name` whose task has an environment variable of `bytes`.
fn padded(name: &str, bytes: usize) -> String {
    format!(
        "{}env = {{ PAD = \"{}\" }}\n",
        batch(name, "true"),
        "x".repeat(bytes)
    )
}

#[test]
fn job_files_too_large_are_refused_naming_the_limit_and_unplaceable_counts_are_one_line() {
    let c = DevCluster::start_with(&["--algorithm", "spread"]);
    let before = snapshot(&c);

    let fat = c.write_file("fat.toml", &padded("fat", 5 * 1024 * 1024));
    for verb in ["run", "plan"] {
        let out = c.cli(&["job", verb, fat.to_str().unwrap()]);
        assert_refusal(
            &format!("job {verb} of a 5 MiB job"),
            &out,
            &[
                "job \"fat\" is 5.0 MiB (5,2",
                "the largest job the state store accepts is 1.5 MiB (1,556,480 bytes)",
            ],
        );
    }

    let huge = c.write_file("huge.toml", &padded("huge", 17 * 1024 * 1024));
    let out = c.cli(&["job", "run", huge.to_str().unwrap()]);
    assert_refusal(
        "job run of a 17 MiB job",
        &out,
        &["job \"huge\" is 17.0 MiB encoded, over the 16.0 MiB the scheduler reads in one request"],
    );
    assert_eq!(snapshot(&c), before, "a refused job changed the cluster");

    // Every instance wants more memory than any node has: one line.
    let many = edit(
        &service("many", 10_000, "true"),
        "memory_mb = 16",
        "memory_mb = 1048576",
    );
    let file = c.write_file("many.toml", &many);
    let plan = c.cli_json(&["job", "plan", file.to_str().unwrap()]);
    let failures = arr(&plan["failures"]);
    assert_eq!(failures.len(), 1, "{plan}");
    let line = failures[0].as_str().unwrap();
    assert!(
        line.starts_with(
            "group \"main\": 10,000 instances unplaceable: 1 node evaluated: 1 short of memory"
        ),
        "{line}"
    );

    // And `--algorithm spread` places what fits.
    let ok = c.write_file("ok.toml", &service("ok", 2, "sleep 3600"));
    c.cli_ok(&["job", "run", ok.to_str().unwrap()]);
    wait_running(&c, "ok", 2);
}
