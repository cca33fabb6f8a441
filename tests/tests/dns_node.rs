//! The agent of a `drover dev` serves the service-discovery zone on its
//! bridge address, port 53, from the records the scheduler relays: a task
//! (host rootfs, Debian's busybox and glibc) resolves `web` by its short
//! name through the `search service.drover.internal` of the resolv.conf
//! the agent gave it, and the full name; the host asks the bridge address
//! with `dig`; a record deleted in the store leaves both. Records are
//! written with `etcdctl` into the dev's embedded store (registration by
//! the scheduler comes with the health checks). Traffic stays on the
//! cluster's own bridge and in the task's namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use drover_tests::checks::{service, wait_running, WAIT};
use drover_tests::{dig, poll_until, run_drover_with_env, unique_name, DevCluster};

const KEY: &str = "/skydns/internal/drover/service/web/a1";
const HOST: &str = "10.89.3.7";

/// Runs `cmd` inside the job's task (`drover exec`): its stdout, or
/// `None` when it failed.
fn exec(c: &DevCluster, job: &str, cmd: &[&str]) -> Option<String> {
    let mut args = vec!["exec", "-T", job, "--"];
    args.extend_from_slice(cmd);
    // `--addr` cannot follow the command: the address goes in the
    // environment.
    let out = run_drover_with_env(&args, &[("DROVER_ADDR", c.addr())]);
    if !out.status.success() {
        eprintln!(
            "drover exec {cmd:?}: {}; {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn tasks_resolve_services_by_short_name_from_the_node_dns() {
    let c = DevCluster::start();
    let bridge = c.bridge_ip();

    // The node's DNS answers on the bridge address from the start
    // (authoritative for the zone), even with no record yet.
    let soa = poll_until("the node DNS on the bridge", WAIT, || {
        let a = dig(SocketAddr::from((bridge, 53)), &["SOA", "drover.internal"]);
        a.contains("status: NOERROR").then_some(a)
    });
    assert!(soa.contains(" aa"), "no AA flag: {soa}");

    let job = unique_name("resolve");
    let file = c.write_file(&format!("{job}.toml"), &service(&job, 1, "sleep 3600"));
    c.cli_ok(&["job", "run", file.to_str().unwrap()]);
    wait_running(&c, &job, 1);

    // (c) The resolv.conf the task sees: the node's DNS, the service
    // search domain, one dot makes a name absolute.
    let resolv = exec(&c, &job, &["cat", "/etc/resolv.conf"]).expect("reading resolv.conf");
    let lines: Vec<&str> = resolv.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            format!("nameserver {bridge}").as_str(),
            "search service.drover.internal",
            "options ndots:1"
        ],
        "{resolv}"
    );
    // Nothing there yet.
    let none = exec(&c, &job, &["busybox", "nslookup", "web"]);
    assert!(
        none.as_deref().is_none_or(|o| !o.contains(HOST)),
        "{none:?}"
    );

    // A record in the store reaches the task through the scheduler's relay.
    c.etcdctl(&[
        "put",
        KEY,
        &format!(r#"{{"host":"{HOST}","port":8080,"ttl":5}}"#),
    ]);
    // The short name, through the search domain: busybox's resolver and
    // glibc's.
    let short = poll_until("web to resolve in the task", WAIT, || {
        exec(&c, &job, &["busybox", "nslookup", "web"]).filter(|o| o.contains(HOST))
    });
    assert!(short.contains("web.service.drover.internal"), "{short}");
    let getent = exec(&c, &job, &["getent", "hosts", "web"]).expect("getent hosts web");
    assert!(getent.starts_with(HOST), "{getent}");
    let full = exec(
        &c,
        &job,
        &["busybox", "nslookup", "web.service.drover.internal"],
    )
    .expect("the full name");
    assert!(full.contains(HOST), "{full}");

    // The host asks the bridge address as well.
    let host = dig(
        SocketAddr::from((bridge, 53)),
        &["A", "web.service.drover.internal"],
    );
    assert!(host.contains("status: NOERROR"), "{host}");
    assert!(host.contains(&format!("IN\tA\t{HOST}")), "{host}");

    // Deleted in the store: gone from the task's and the host's answers.
    c.etcdctl(&["del", KEY]);
    poll_until("web to leave the task's answers", WAIT, || {
        let o = exec(&c, &job, &["busybox", "nslookup", "web"]);
        o.is_none_or(|o| !o.contains(HOST)).then_some(())
    });
    assert!(exec(&c, &job, &["getent", "hosts", "web"]).is_none());
    let gone = dig(
        SocketAddr::from((bridge, 53)),
        &["A", "web.service.drover.internal"],
    );
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");
}
