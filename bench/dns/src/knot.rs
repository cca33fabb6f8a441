//! knot, the anchor: `knotd` as a child process serving the benchmark's
//! zone from a generated configuration and zone file in a temp dir, on a
//! loopback port. Killed by its pid and its files removed on drop.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_server::proto::rr::Name;
use tempfile::TempDir;

use crate::client::Client;
use crate::zone::ZONE;

/// Where Debian's `knot` package installs the server.
const KNOTD: &str = "/usr/sbin/knotd";

/// A running `knotd`.
pub struct Knot {
    child: Child,
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Knot {
    /// Starts knotd serving `zone_file` for [`ZONE`] with `udp_workers`
    /// UDP threads (0: knot's default, one per CPU), and waits until it
    /// answers.
    pub async fn start(zone_file: &str, udp_workers: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("drover-bench-knot-")
            .tempdir()?;
        let addr = free_port()?;
        std::fs::write(dir.path().join(format!("{ZONE}.zone")), zone_file)?;
        let d = dir.path().display();
        let workers = if udp_workers == 0 {
            String::new()
        } else {
            format!("    udp-workers: {udp_workers}\n")
        };
        let config = format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n{workers}\
             database:\n    storage: \"{d}/db\"\n\
             control:\n    listen: \"{d}/knot.sock\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    \
             zonefile-load: whole\n    journal-content: none\n\
             zone:\n  - domain: {ZONE}\n    file: \"{ZONE}.zone\"\n",
            ip = addr.ip(),
            port = addr.port(),
        );
        let conf = dir.path().join("knot.conf");
        std::fs::write(&conf, config)?;
        let child = Command::new(KNOTD)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("knotd.log"))?)
            .spawn()
            .with_context(|| format!("starting {KNOTD}: apt-get install knot (deploy/deps.sh)"))?;
        let mut knot = Self { child, addr, dir };
        let zone = Name::from_ascii(format!("{ZONE}."))?;
        let ready = Client::new(addr)
            .await?
            .wait_ready(&zone, Duration::from_secs(20))
            .await;
        if let Err(e) = ready {
            let exited = knot.child.try_wait()?;
            let log =
                std::fs::read_to_string(knot.dir.path().join("knotd.log")).unwrap_or_default();
            return Err(e.context(format!("knotd (exited: {exited:?}) log:\n{log}")));
        }
        Ok(knot)
    }

    /// The process id, for the report.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        // Child::kill signals this child's pid (SIGKILL); the temp dir
        // goes with `self.dir`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both UDP and TCP at the time of asking.
fn free_port() -> Result<SocketAddr> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let addr = udp.local_addr()?;
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    anyhow::bail!("no loopback port free for both UDP and TCP")
}
