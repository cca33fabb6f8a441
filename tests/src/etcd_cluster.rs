//! [`EtcdCluster`]: a real etcd cluster of several members (Debian's
//! `etcd-server`), for the fault tests: members are stopped, killed and
//! started again by index, and the leader is found with `etcdctl`.
//!
//! Members run on loopback, either of this machine (ports chosen by the
//! kernel) or of a network namespace the caller made (fixed ports, which
//! nothing else in that namespace uses), each with a data directory under
//! the given root. Every member is ended by pid when the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drover_agent::net::Netns;

use crate::etcd::ETCD_BIN;
use crate::netns_exec::{in_netns, run_in};

/// How long the cluster may take to elect a leader and serve.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `etcdctl` may run.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);

/// One member.
#[derive(Debug)]
struct Member {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster. See the module documentation.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial: String,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("probe address")?.port())
}

impl EtcdCluster {
    /// Starts `n` members with their data under `root`, inside `netns`
    /// when given, and waits until every one answers and one leads.
    pub fn start(n: usize, root: &Path, netns: Option<&Netns>) -> Result<Self> {
        let mut members = Vec::new();
        for i in 0..n {
            let (c, p) = match netns {
                Some(_) => (2379 + 2 * i, 2380 + 2 * i),
                None => (usize::from(free_port()?), usize::from(free_port()?)),
            };
            let dir = root.join(format!("etcd-m{i}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            members.push(Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{c}"),
                peer: format!("http://127.0.0.1:{p}"),
                data: dir.join("data"),
                log: dir.join("etcd.log"),
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster { members, initial };
        for i in 0..n {
            cluster.spawn(i, netns)?;
        }
        cluster.wait_leader(netns, START_DEADLINE)?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, netns: Option<&Netns>) -> Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let log2 = log.try_clone().context("duplicating a log handle")?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(ns) = netns {
            in_netns(&mut cmd, ns);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {ETCD_BIN} member {}", m.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Every client URL, comma separated (the `--etcd` of Drover).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether member `i` runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.members[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs member `i` (by pid) and reaps it; its data stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs member `i` (SIGKILL after 10 s) and reaps it; its data stays.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data and ports (it must be stopped).
    pub fn restart(&mut self, i: usize, netns: Option<&Netns>) -> Result<()> {
        if self.running(i) {
            bail!("etcd member {} is running", self.members[i].name);
        }
        self.spawn(i, netns)
    }

    /// `etcdctl endpoint status` of member `i`: whether it leads, `None`
    /// when it does not answer.
    fn is_leader(&self, i: usize, netns: Option<&Netns>) -> Option<bool> {
        let args = [
            "--endpoints",
            self.members[i].client.as_str(),
            "--command-timeout=2s",
            "endpoint",
            "status",
        ];
        let out = match netns {
            Some(ns) => run_in(ns, Path::new("etcdctl"), &args, CTL_TIMEOUT),
            None => Command::new("etcdctl")
                .args(args)
                .env("ETCDCTL_API", "3")
                .output()
                .ok()?,
        };
        if !out.status.success() {
            return None;
        }
        // ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, ...
        let text = String::from_utf8_lossy(&out.stdout);
        let field = text.split(',').nth(4)?.trim().to_owned();
        Some(field == "true")
    }

    /// The index of the leading member, among those that run and answer.
    pub fn leader(&mut self, netns: Option<&Netns>) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.running(i) && self.is_leader(i, netns) == Some(true))
    }

    /// Waits until a running member leads.
    pub fn wait_leader(&mut self, netns: Option<&Netns>, deadline: Duration) -> Result<usize> {
        let end = Instant::now() + deadline;
        loop {
            for i in 0..self.members.len() {
                if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(Child::try_wait)
                {
                    let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    bail!(
                        "etcd member {} exited with {status}: {}",
                        self.members[i].name,
                        tail.join("\n")
                    );
                }
            }
            if let Some(l) = self.leader(netns) {
                return Ok(l);
            }
            if Instant::now() > end {
                bail!("no etcd member leads after {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
