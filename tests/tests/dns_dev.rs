//! `drover dev` serves the service-discovery zone on the host
//! (`--dns-listen`, its address in `<data dir>/dns.addr`), answering from
//! the embedded store's `/skydns/` records as they change: a record put
//! with `etcdctl` is answered, a deleted one is gone. Queried with
//! Debian's `dig`, on loopback only. (Here the records are written by
//! hand, without a lease, as an operator or CoreDNS user could; the
//! scheduler leaves such keys alone. Its own registrations are tested in
//! `discovery_dev.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_tests::checks::WAIT;
use drover_tests::{dig, poll_until, DevCluster};

#[test]
fn dev_answers_the_zone_from_the_store_as_it_changes() {
    let c = DevCluster::start();
    let dns = c.dns_addr();
    assert!(dns.ip().is_loopback(), "{dns}");

    // The apex, authoritatively.
    let soa = dig(dns, &["SOA", "drover.internal"]);
    assert!(soa.contains("status: NOERROR"), "{soa}");
    assert!(soa.contains(" aa"), "no AA flag: {soa}");
    assert!(soa.contains("ns.drover.internal."), "{soa}");

    // No record yet: NXDOMAIN with the SOA.
    let none = dig(dns, &["A", "web.service.drover.internal"]);
    assert!(none.contains("status: NXDOMAIN"), "{none}");
    assert!(none.contains("AUTHORITY: 1"), "{none}");

    // A record in the SkyDNS layout, written to the store: answered.
    let key = "/skydns/internal/drover/service/web/a1";
    c.etcdctl(&[
        "put",
        key,
        r#"{"host":"10.89.3.7","port":8080,"priority":10,"weight":10,"ttl":5}"#,
    ]);
    let answer = poll_until("web to be answered", WAIT, || {
        let a = dig(dns, &["A", "web.service.drover.internal"]);
        a.contains("10.89.3.7").then_some(a)
    });
    assert!(answer.contains("status: NOERROR"), "{answer}");
    let srv = dig(dns, &["SRV", "_web._tcp.service.drover.internal"]);
    assert!(
        srv.contains("8080 a1.web.service.drover.internal."),
        "{srv}"
    );

    // Deleted from the store: gone from the answers.
    c.etcdctl(&["del", key]);
    poll_until("web to leave the answers", WAIT, || {
        let a = dig(dns, &["A", "web.service.drover.internal"]);
        a.contains("status: NXDOMAIN").then_some(())
    });
}

#[test]
fn dev_without_a_readable_resolv_conf_answers_its_zone_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dns.toml");
    std::fs::write(&config, "resolv_conf = \"/nonexistent/resolv.conf\"\n").unwrap();
    let c = DevCluster::start_with(&["--dns-config", config.to_str().unwrap()]);
    let dns = c.dns_addr();
    let soa = dig(dns, &["SOA", "drover.internal"]);
    assert!(soa.contains("status: NOERROR"), "{soa}");
    // Nothing to forward to: refused at once, never sent anywhere.
    let outside = dig(dns, &["A", "example.org"]);
    assert!(outside.contains("status: REFUSED"), "{outside}");
    let log = c.log_tail(200);
    assert!(log.contains("DNS answers only its zone"), "{log}");
}
