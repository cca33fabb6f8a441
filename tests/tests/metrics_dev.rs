//! Prometheus metrics of a real `drover dev` (scheduler, agent, DNS and
//! embedded store on one endpoint, its address in `<data dir>/metrics.addr`):
//! the values follow what happens (a job's allocations running, then
//! stopped; a `dig` query counted; store requests and fsyncs growing;
//! each allocation's memory and CPU read from its cgroup; restarts and an
//! OOM kill counted), and Debian's `promtool check metrics` passes on the
//! live output with a job running.
//!
//! Needs root, `dig`, `promtool` (deploy/deps.sh) and the binary:
//! `cargo build -p drover-cli && cargo test -p drover-tests --test metrics_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::checks::{alloc_ids, service, wait_running, WAIT};
use drover_tests::metrics::{http_get, promtool_check, scrape, sum, value};
use drover_tests::{dig, poll_until, unique_name, DevCluster};

/// Polls the endpoint until `check` holds on a scrape; returns that scrape.
fn scrape_until(c: &DevCluster, what: &str, check: impl Fn(&str) -> bool) -> String {
    let addr = c.metrics_addr();
    poll_until(what, WAIT, || {
        let text = scrape(addr);
        check(&text).then_some(text)
    })
}

/// The `drover_*` metric names the example dashboard's queries use.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("drover_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `drover_job` is a label (the allocation's job).
                if name != "drover_job" {
                    names.insert(name);
                }
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    names
}

fn gauge(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

#[test]
fn dev_metrics_follow_a_job_and_pass_promtool() {
    let c = DevCluster::start();
    let addr = c.metrics_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    let (head, _) = http_get(addr, "/metrics");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let (missing, _) = http_get(addr, "/other");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    let before = scrape(addr);
    let store_before = sum(&before, "drover_store_requests_total", &[]);
    let txn_before = sum(
        &before,
        "drover_store_requests_total",
        &[("method", "KV/Txn")],
    );
    let nx = [("type", "SRV"), ("rcode", "NXDOMAIN")];
    let nx_before = sum(&before, "drover_dns_queries_total", &nx);
    assert_eq!(gauge(&before, "drover_scheduler_leader", &[]), 1.0);

    // A service job of two instances.
    let job = unique_name("metrics");
    let file = c.write_file(&format!("{job}.toml"), &service(&job, 2, "exec sleep 3600"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 2);
    let ids = alloc_ids(&status);

    let running = [("status", "running")];
    let text = scrape_until(&c, "both allocations running in the metrics", |t| {
        value(t, "drover_scheduler_allocations", &running) == Some(2.0)
            && value(t, "drover_agent_allocations", &running) == Some(2.0)
    });
    assert_eq!(
        gauge(&text, "drover_agent_tasks", &[("state", "running")]),
        2.0
    );
    assert_eq!(
        gauge(
            &text,
            "drover_scheduler_allocations",
            &[("status", "failed")]
        ),
        0.0
    );
    let jobs = [("kind", "service"), ("status", "running")];
    assert_eq!(gauge(&text, "drover_scheduler_jobs", &jobs), 1.0);
    assert_eq!(gauge(&text, "drover_scheduler_connected_agents", &[]), 1.0);
    assert_eq!(
        gauge(&text, "drover_scheduler_pending_placements", &[]),
        0.0
    );
    let placed = gauge(
        &text,
        "drover_scheduler_placements_total",
        &[("result", "placed")],
    );
    assert!(placed >= 2.0, "{placed}");
    assert!(
        gauge(
            &text,
            "drover_scheduler_placement_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(gauge(&text, "drover_agent_task_start_duration_seconds_count", &[]) >= 2.0);

    // Each allocation's cgroup: memory charged, CPU time used.
    for id in &ids {
        let labels = [
            ("alloc_id", id.as_str()),
            ("drover_job", job.as_str()),
            ("group", "main"),
        ];
        let mem = gauge(&text, "drover_agent_allocation_memory_bytes", &labels);
        assert!(mem > 0.0, "{id}: memory {mem}");
        let cpu = gauge(&text, "drover_agent_allocation_cpu_seconds_total", &labels);
        assert!(cpu > 0.0, "{id}: cpu {cpu}");
    }

    // Store: the submission's transactions were counted, the log synced
    // and sized.
    assert!(sum(&text, "drover_store_requests_total", &[]) > store_before);
    let txn = sum(
        &text,
        "drover_store_requests_total",
        &[("method", "KV/Txn")],
    );
    assert!(txn > txn_before, "KV/Txn {txn_before} -> {txn}");
    assert!(gauge(&text, "drover_store_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(gauge(&text, "drover_store_log_bytes", &[("file", "wal")]) > 0.0);
    assert!(
        gauge(
            &text,
            "drover_store_client_request_duration_seconds_count",
            &[("op", "txn")]
        ) >= 1.0
    );

    // DNS: three queries made with dig are counted.
    let dns = c.dns_addr();
    for _ in 0..3 {
        let out = dig(dns, &["SRV", "_nothere._tcp.service.drover.internal"]);
        assert!(out.contains("status: NXDOMAIN"), "{out}");
    }
    let text = scrape(addr);
    let nx_after = sum(&text, "drover_dns_queries_total", &nx);
    assert!(
        nx_after >= nx_before + 3.0,
        "SRV NXDOMAIN {nx_before} -> {nx_after}"
    );
    assert_eq!(
        gauge(&text, "drover_dns_watch_connected", &[("server", "dns")]),
        1.0
    );
    assert!(gauge(&text, "drover_dns_index_revision", &[("server", "dns")]) > 0.0);

    // Every series the example Grafana dashboard queries is served.
    for name in dashboard_metrics() {
        let served = text.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        });
        assert!(
            served,
            "deploy/grafana-dashboard.json queries {name}, not served:\n{text}"
        );
    }

    // promtool on the live output, a job running.
    let (ok, printed) = promtool_check(&text);
    let shown = [
        "drover_scheduler_allocations",
        "drover_agent_tasks",
        "drover_dns_queries",
    ];
    for l in text
        .lines()
        .filter(|l| shown.iter().any(|s| l.starts_with(s)))
    {
        eprintln!("{l}");
    }
    let lines = text.lines().count();
    eprintln!("promtool check metrics on {lines} lines: passed={ok}, printed {printed:?}");
    assert!(ok, "promtool check metrics failed:\n{printed}");
    assert!(printed.trim().is_empty(), "promtool complained:\n{printed}");

    // Stopped: nothing runs, and the allocations' usage series are gone.
    c.cli_ok(&["job", "stop", &job]);
    let text = scrape_until(&c, "no allocation running in the metrics", |t| {
        value(t, "drover_scheduler_allocations", &running) == Some(0.0)
            && value(t, "drover_agent_allocations", &running) == Some(0.0)
    });
    assert_eq!(
        gauge(&text, "drover_agent_tasks", &[("state", "running")]),
        0.0
    );
    for id in &ids {
        let labels = [("alloc_id", id.as_str())];
        assert_eq!(
            value(&text, "drover_agent_allocation_memory_bytes", &labels),
            None
        );
    }
}

/// A group of one instance whose failure is final (no replacement
/// allocation to count twice).
const NO_RESCHEDULE: &str = "count = 1\nreschedule = { unlimited = false, attempts = 0 }\n";

#[test]
fn dev_metrics_count_restarts_and_oom_kills() {
    let c = DevCluster::start();
    let addr = c.metrics_addr();
    let before = scrape(addr);
    let restarts_before = gauge(&before, "drover_agent_task_restarts_total", &[]);
    let ooms_before = gauge(&before, "drover_agent_oom_kills_total", &[]);

    // Exits at once: restarted three times (the service default), then
    // failed.
    let flaky = unique_name("flaky");
    let spec = service(&flaky, 1, "exit 3").replace("count = 1\n", NO_RESCHEDULE);
    let file = c.write_file(&format!("{flaky}.toml"), &spec);
    c.cli(&["job", "run", "--detach", file.to_str().unwrap()]);
    // Grows past its 16 MiB: the OOM killer ends it; no restart.
    let hog = unique_name("hog");
    let spec = service(&hog, 1, "exec tail /dev/zero").replace(
        "count = 1\n",
        &format!("{NO_RESCHEDULE}restart = {{ attempts = 0 }}\n"),
    );
    let file = c.write_file(&format!("{hog}.toml"), &spec);
    c.cli(&["job", "run", "--detach", file.to_str().unwrap()]);

    let text = scrape_until(&c, "both jobs' allocations failed", |t| {
        value(t, "drover_scheduler_allocations", &[("status", "failed")]) == Some(2.0)
    });
    let restarts = gauge(&text, "drover_agent_task_restarts_total", &[]);
    assert_eq!(
        restarts - restarts_before,
        3.0,
        "restarts {restarts_before} -> {restarts}"
    );
    let text = scrape_until(&c, "the OOM kill counted", |t| {
        value(t, "drover_agent_oom_kills_total", &[]) >= Some(ooms_before + 1.0)
    });
    assert_eq!(
        gauge(&text, "drover_agent_oom_kills_total", &[]) - ooms_before,
        1.0
    );
}
