//! `drover dns` against a real etcd (Debian's etcd-server 3.4) that is
//! killed and restarted: while etcd is down the server keeps answering
//! from what it last knew and says so in its log; once etcd is back it
//! picks up the changes made after. (The same against the embedded store
//! is in `dns/tests/server/watch.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_tests::checks::WAIT;
use drover_tests::etcd::RealEtcd;
use drover_tests::{dig, drover_bin, poll_until};

/// A `drover dns` child, killed by pid when dropped.
struct DnsServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl DnsServer {
    fn start(dir: &Path, etcd: &str) -> DnsServer {
        let addr_file = dir.join("dns.addr");
        let log = dir.join("dns.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(drover_bin())
            .args(["dns", "--etcd", etcd, "--listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .args(["--dns-zone-only", "--log", "info"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning drover dns");
        let mut server = DnsServer {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        server.addr = poll_until("drover dns to write its address", WAIT, || {
            std::fs::read_to_string(&addr_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(host: &str) -> String {
    format!(r#"{{"host":"{host}","port":8080,"priority":10,"weight":10,"ttl":5}}"#)
}

fn answers(dns: SocketAddr, name: &str, host: &str) -> bool {
    let a = dig(dns, &["A", name]);
    a.contains("status: NOERROR") && a.contains(host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_through_a_real_etcd_restart_and_then_follows_it() {
    let mut etcd = RealEtcd::start().await.expect("starting etcd");
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    client
        .put(
            "/skydns/internal/drover/service/web/a1",
            record("10.89.3.7"),
            None,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start(dir.path(), etcd.endpoint());
    let addr = dns.addr;
    tokio::task::spawn_blocking(move || {
        poll_until("web to be answered", WAIT, || {
            answers(addr, "web.service.drover.internal", "10.89.3.7").then_some(())
        })
    })
    .await
    .unwrap();

    etcd.kill().expect("killing etcd");
    // Down: the last known state is still answered, for as long as it
    // lasts (checked over 3 s), and the log says why.
    let still = tokio::task::spawn_blocking(move || {
        (0..6).all(|_| {
            std::thread::sleep(Duration::from_millis(500));
            answers(addr, "web.service.drover.internal", "10.89.3.7")
        })
    })
    .await
    .unwrap();
    assert!(still, "an answer was lost while etcd was down");
    let log = poll_until("the log to say etcd is unreachable", WAIT, || {
        let log = dns.log();
        log.lines()
            .find(|l| l.contains("etcd unreachable: keeping the last known state"))
            .map(str::to_owned)
    });
    assert!(log.contains("the DNS index"), "{log}");

    // Back: a change made after the restart is answered.
    etcd.restart().await.expect("restarting etcd");
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    client
        .put(
            "/skydns/internal/drover/service/api/b2",
            record("10.89.4.9"),
            None,
        )
        .await
        .unwrap();
    client
        .delete("/skydns/internal/drover/service/web/a1", None)
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        poll_until("api to be answered after the restart", WAIT, || {
            answers(addr, "api.service.drover.internal", "10.89.4.9").then_some(())
        });
        poll_until("web to leave the answers", WAIT, || {
            dig(addr, &["A", "web.service.drover.internal"])
                .contains("status: NXDOMAIN")
                .then_some(())
        });
    })
    .await
    .unwrap();
    drop(dns);
}
