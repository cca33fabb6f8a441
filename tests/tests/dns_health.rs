//! Health decides DNS, end to end on `drover dev`: an instance is answered
//! only while every check of its service passes; a check that starts
//! failing takes it out of the answers within `interval x failures + 1 s`
//! and it comes back when the check passes again; an allocation whose
//! check never passes is never registered. Asked with `dig` at the
//! host-side DNS of `drover dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use drover_tests::checks::WAIT;
use drover_tests::{dig, poll_until, DevCluster};

const INTERVAL_MS: u64 = 500;
const FAILURES: u64 = 2;

fn web_job() -> String {
    format!(
        r#"
name = "web"
[[group]]
name = "main"
count = 2
[[group.task]]
name = "httpd"
command = ["/bin/sh", "-c", '''
mkdir -p /tmp/www
echo "from $DROVER_ALLOC_ID" > /tmp/www/index.html
echo ok > /tmp/www/health
exec busybox httpd -f -p 8080 -h /tmp/www
''']
resources = {{ cpu_millis = 50, memory_mb = 32 }}
[[group.service]]
name = "web"
port = 8080
[[group.service.check]]
type = "http"
path = "/health"
interval_ms = {INTERVAL_MS}
timeout_ms = 400
success_before_passing = 1
failures_before_critical = {FAILURES}
"#
    )
}

/// A service whose tcp check probes a port nothing listens on.
const NEVER_JOB: &str = r#"
name = "never"
[[group]]
name = "main"
[[group.task]]
name = "sleep"
command = ["/bin/sh", "-c", "exec sleep 3600"]
resources = { cpu_millis = 50, memory_mb = 16 }
[[group.service]]
name = "never"
port = 9
[[group.service.check]]
type = "tcp"
interval_ms = 200
timeout_ms = 100
failures_before_critical = 1
"#;

fn answers(c: &DevCluster, name: &str) -> BTreeSet<Ipv4Addr> {
    dig(c.dns_addr(), &["+short", "A", name])
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// (alloc id, ip) of the running allocations of `job`, once there are `n`.
fn running(c: &DevCluster, job: &str, n: usize) -> Vec<(String, Ipv4Addr)> {
    poll_until(&format!("{n} running allocations of {job}"), WAIT, || {
        let list = c.cli_json(&["alloc", "list", "--job", job]);
        let got: Vec<(String, Ipv4Addr)> = list
            .as_array()?
            .iter()
            .filter(|a| a["status"] == "running" && a["desired"] == "run")
            .filter_map(|a| {
                Some((
                    a["id"].as_str()?.to_string(),
                    a["ip"].as_str()?.parse().ok()?,
                ))
            })
            .collect();
        (got.len() == n).then_some(got)
    })
}

/// The status of `alloc`'s first check, as `alloc status -o json` shows it.
fn check_status(c: &DevCluster, alloc: &str) -> String {
    let a = c.cli_json(&["alloc", "status", alloc]);
    a["checks"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_failing_check_takes_an_instance_out_of_dns_and_a_passing_one_brings_it_back() {
    let c = DevCluster::start();
    let file = c.write_file("web.toml", &web_job());
    c.cli_ok(&["job".as_ref(), "run".as_ref(), file.as_os_str()]);
    let web = running(&c, "web", 2);
    let all: BTreeSet<Ipv4Addr> = web.iter().map(|(_, ip)| *ip).collect();
    poll_until("both instances in DNS", WAIT, || {
        (answers(&c, "web.service.drover.internal") == all).then_some(())
    });
    let status = c.cli_json(&["job", "status", "web"]);
    assert_eq!(status["services"][0]["healthy"], 2, "{status}");

    // Break one instance's health endpoint.
    let (sick, sick_ip) = web[0].clone();
    c.cli_ok(&["exec", &sick, "--", "rm", "/tmp/www/health"]);
    let rest: BTreeSet<Ipv4Addr> = all.iter().copied().filter(|ip| *ip != sick_ip).collect();
    // The issue's bound, as the deadline of the wait; the time it takes is
    // a figure of bench/dns (prop-dev), not asserted here.
    let bound = Duration::from_millis(INTERVAL_MS * FAILURES) + Duration::from_secs(1);
    poll_until(
        "the failing instance to leave DNS within interval x failures + 1 s",
        bound,
        || (answers(&c, "web.service.drover.internal") == rest).then_some(()),
    );
    assert_eq!(check_status(&c, &sick), "critical");
    let status = c.cli_json(&["job", "status", "web"]);
    assert_eq!(status["services"][0]["healthy"], 1, "{status}");

    // Mend it: back in the answers.
    c.cli_ok(&["exec", &sick, "--", "sh", "-c", "echo ok > /tmp/www/health"]);
    poll_until("the mended instance to come back", WAIT, || {
        (answers(&c, "web.service.drover.internal") == all).then_some(())
    });
    assert_eq!(check_status(&c, &sick), "passing");
    c.cli_ok(&["job", "stop", "web"]);
    poll_until("web to leave DNS once stopped", WAIT, || {
        dig(c.dns_addr(), &["A", "web.service.drover.internal"])
            .contains("status: NXDOMAIN")
            .then_some(())
    });
}

#[test]
fn an_allocation_whose_check_never_passes_is_never_registered() {
    let c = DevCluster::start();
    let file = c.write_file("never.toml", NEVER_JOB);
    c.cli_ok(&["job".as_ref(), "run".as_ref(), file.as_os_str()]);
    let (alloc, _) = running(&c, "never", 1).remove(0);
    poll_until("the check to be critical", WAIT, || {
        (check_status(&c, &alloc) == "critical").then_some(())
    });
    // Over many more intervals, never in the store nor in DNS.
    for _ in 0..10 {
        assert!(
            c.store_keys("/skydns/")
                .iter()
                .all(|(k, _)| !k.contains("/never/")),
            "a record of a service whose check never passed: {:?}",
            c.store_keys("/skydns/")
        );
        let a = dig(c.dns_addr(), &["A", "never.service.drover.internal"]);
        assert!(a.contains("status: NXDOMAIN"), "{a}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = c.cli_ok(&["alloc", "status", &alloc]);
    assert!(out.contains("critical"), "{out}");
    c.cli_ok(&["job", "stop", "never"]);
}
