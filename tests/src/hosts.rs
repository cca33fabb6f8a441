//! [`MultiHost`]: several "hosts" on one machine, each a network namespace
//! running a real `drover agent`, wired to a test switch, with the store and
//! a real `drover scheduler` (mutual TLS) on a control host.
//!
//! ```text
//!            switch netns: bridge sw0
//!        ┌────────┬────────┬────────┐
//!   control netns  h0 netns  h1 netns  …      (one veth each, eth0 inside)
//!   198.18.0.1     .10       .11
//!   store (lo), scheduler    agent     agent
//! ```
//!
//! - Every namespace is a bind mount under the test's temporary directory;
//!   the machine's own network namespace gets no interface, address or
//!   route. Addresses come from 198.18.0.0/24 (set aside for network tests)
//!   and live only inside these namespaces, so traffic goes nowhere else:
//!   the switch has no uplink and no host has a default route.
//! - Interface names (`sw0`, `eth0`, the switch ports) are fixed: each lives
//!   in a namespace of this test alone, so two tests cannot collide. What is
//!   shared with the machine is made unique per run from the pid and a
//!   counter: the temporary directory, node ids and cgroup parents.
//! - The store is the embedded etcd-compatible server, run by this process
//!   but listening on the control namespace's loopback. The scheduler runs
//!   in the control namespace and serves mutual TLS on the switch address;
//!   the certificates come from `drover tls init`. Agents start inside their
//!   host's namespace (the child enters it with `setns` before `exec`), with
//!   their own data directory and cgroup parent. CLI commands run in the
//!   control namespace with the CLI certificate.
//! - Dropping a [`MultiHost`], also while a test panics, kills the agents
//!   and the scheduler by pid, then every supervisor and task they started
//!   (found by command line, by cgroup and as descendants), stops the
//!   store, unmounts whatever was mounted under the temporary directory
//!   (the namespaces, and anything agents mounted there), removes the
//!   cgroups and the directory, and fails the test if anything survived.
//!
//! A test drives it like a user would, with the real CLI:
//!
//! ```no_run
//! use drover_tests::MultiHost;
//!
//! let mut mh = MultiHost::start(3); // three hosts, every node ready
//! let nodes = mh.nodes(); // `drover node list -o json`, by node id
//! let job = mh.write_file("web.toml", "name = \"web\"\n# ...");
//! mh.cli_ok(&["job".as_ref(), "run".as_ref(), job.as_os_str()]);
//! println!("{}", mh.ip(0, &["route"])); // `ip route` inside host 0
//! mh.restart_agent(1); // SIGKILL, start again, wait until re-registered
//! # drop(nodes);
//! ```

mod cli;
mod etcd;
mod ha;
mod partition;
pub(crate) mod procs;
pub use ha::Answer;
mod teardown;
mod topology;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_agent::net::{Netns, NetnsDir};
use drover_store::embedded::{CancellationToken, EmbeddedEtcd};
use tempfile::TempDir;

use crate::procs::start_ticks;
use crate::{drover_bin, poll_until};
use procs::{in_netns, kill_child, pid_of, stop_child, CLEARED_ENV};

/// The switch network: the control host is `.1`, host `i` is `.(10 + i)`.
pub const SWITCH_NET: [u8; 3] = [198, 18, 0];
/// Prefix length of the switch network.
pub const SWITCH_PREFIX: u8 = 24;
/// How long the scheduler may take to write its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long agents may take to register.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one CLI or `ip` command may run.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the scheduler and agents get after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long killed supervisors and tasks may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many agent hosts.
    pub hosts: usize,
    /// `--cluster-cidr` of the scheduler.
    pub cluster_cidr: String,
    /// `--node-prefix` of the scheduler.
    pub node_prefix: u8,
    /// Extra flags for every agent.
    pub agent_args: Vec<String>,
    /// Extra flags for the scheduler.
    pub scheduler_args: Vec<String>,
    /// Members of a real etcd cluster to use instead of the embedded
    /// store (0: the embedded store). See [`MultiHost::etcd`].
    pub etcd_members: usize,
    /// How many scheduler replicas (one leads; see `hosts/ha.rs`).
    pub schedulers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hosts: 3,
            cluster_cidr: "10.89.0.0/16".into(),
            node_prefix: 24,
            agent_args: Vec::new(),
            scheduler_args: Vec::new(),
            etcd_members: 0,
            schedulers: 1,
        }
    }
}

/// One agent host.
#[derive(Debug)]
pub struct Host {
    /// Index in [`MultiHost::hosts`].
    pub index: usize,
    /// The node id its agent registers with (written to its data dir).
    pub node_id: String,
    /// Its address on the switch (the agent's `--address`).
    pub address: Ipv4Addr,
    /// Its agent's data directory.
    pub data_dir: PathBuf,
    /// Its agent's cgroup parent.
    pub cgroup_parent: String,
    netns: Option<Netns>,
    agent: Option<Child>,
    log: PathBuf,
}

impl Host {
    /// Its network namespace.
    ///
    /// # Panics
    ///
    /// Only after the harness was torn down.
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("host namespace is open")
    }

    /// Whether its agent process is running.
    pub fn agent_running(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A store, a scheduler and N agent hosts on a test switch. See the module
/// documentation.
pub struct MultiHost {
    tmp: Option<TempDir>,
    root: PathBuf,
    run_id: String,
    since: u64,
    opts: Options,
    rt: Option<tokio::runtime::Runtime>,
    store_stop: CancellationToken,
    netns_dir: NetnsDir,
    switch: Option<Netns>,
    control: Option<Netns>,
    hosts: Vec<Host>,
    scheduler: Option<Child>,
    scheduler_addr: String,
    /// Scheduler replicas past the first (`hosts/ha.rs`).
    replicas: Vec<ha::Replica>,
    store_url: String,
    etcd: Option<crate::etcd_cluster::EtcdCluster>,
    history: Mutex<Vec<String>>,
}

fn unique_run_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "{:x}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The control host's switch address.
pub fn control_ip() -> Ipv4Addr {
    let [a, b, c] = SWITCH_NET;
    Ipv4Addr::new(a, b, c, 1)
}

/// Host `i`'s switch address.
///
/// # Panics
///
/// When `i` is past 244 (the switch is a /24).
pub fn host_ip(i: usize) -> Ipv4Addr {
    let [a, b, c] = SWITCH_NET;
    let last = u8::try_from(10 + i)
        .ok()
        .filter(|l| *l < 255)
        .expect("at most 245 hosts on the switch");
    Ipv4Addr::new(a, b, c, last)
}

impl MultiHost {
    /// Starts `hosts` agents with default options and waits until every
    /// node is ready.
    ///
    /// # Panics
    ///
    /// When not root, or anything fails to start; the logs are printed.
    pub fn start(hosts: usize) -> MultiHost {
        MultiHost::start_with(Options {
            hosts,
            ..Options::default()
        })
    }

    /// Starts everything as `opts` says and waits until every node is ready.
    ///
    /// # Panics
    ///
    /// When not root, or anything fails to start; the logs are printed.
    pub fn start_with(opts: Options) -> MultiHost {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the multi-host tests need root (network namespaces, agents)"
        );
        let run_id = unique_run_id();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("drover-mh-{run_id}-"))
            .tempdir()
            .expect("creating the harness's temp dir");
        let root = tmp.path().to_path_buf();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building the harness's tokio runtime");
        // From here on, Drop cleans up whatever happens.
        let mut mh = MultiHost {
            netns_dir: NetnsDir::new(root.join("netns")),
            tmp: Some(tmp),
            root,
            since: start_ticks(i32::try_from(std::process::id()).unwrap_or(0)).unwrap_or(0),
            run_id,
            opts,
            rt: Some(rt),
            store_stop: CancellationToken::new(),
            switch: None,
            control: None,
            hosts: Vec::new(),
            scheduler: None,
            scheduler_addr: String::new(),
            replicas: Vec::new(),
            store_url: String::new(),
            etcd: None,
            history: Mutex::new(Vec::new()),
        };
        mh.build_network();
        mh.init_pki();
        mh.start_store();
        mh.start_scheduler();
        mh.start_replicas();
        for i in 0..mh.hosts.len() {
            mh.start_agent(i);
        }
        mh.wait_ready(mh.hosts.len());
        mh
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime is up until drop")
    }

    /// The control namespace (store and scheduler).
    ///
    /// # Panics
    ///
    /// Only after the harness was torn down.
    pub fn control(&self) -> &Netns {
        self.control.as_ref().expect("control namespace is open")
    }

    fn build_network(&mut self) {
        let switch = self
            .netns_dir
            .create("switch")
            .expect("creating the switch netns");
        let control = self
            .netns_dir
            .create("control")
            .expect("creating the control netns");
        self.switch = Some(switch);
        self.control = Some(control);
        for i in 0..self.opts.hosts {
            let netns = self
                .netns_dir
                .create(&format!("h{i}"))
                .unwrap_or_else(|e| panic!("creating host netns h{i}: {e}"));
            let data_dir = self.root.join("hosts").join(format!("h{i}"));
            std::fs::create_dir_all(&data_dir).expect("creating an agent data dir");
            let node_id = format!("mh-{}-h{i}", self.run_id);
            std::fs::write(data_dir.join("node-id"), format!("{node_id}\n"))
                .expect("writing the node id");
            self.hosts.push(Host {
                index: i,
                node_id,
                address: host_ip(i),
                data_dir,
                cgroup_parent: format!("drover-test-mh-{}-h{i}", self.run_id),
                netns: Some(netns),
                agent: None,
                log: self.root.join(format!("agent-h{i}.log")),
            });
        }
        let switch = self.switch.as_ref().expect("switch netns");
        let control = self.control.as_ref().expect("control netns");
        let hosts: Vec<(usize, &Netns)> = self.hosts.iter().map(|h| (h.index, h.netns())).collect();
        let built: anyhow::Result<()> = self.rt().block_on(async {
            let bridge = topology::make_switch(switch).await?;
            topology::plug(
                switch,
                bridge,
                "p-ctl",
                control,
                control_ip(),
                SWITCH_PREFIX,
            )
            .await?;
            for (i, netns) in hosts {
                topology::plug(
                    switch,
                    bridge,
                    &format!("p-h{i}"),
                    netns,
                    host_ip(i),
                    SWITCH_PREFIX,
                )
                .await?;
            }
            Ok(())
        });
        if let Err(e) = built {
            panic!("building the test network: {e:#}");
        }
    }

    fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    fn pki_file(&self, name: &str) -> String {
        self.pki().join(name).display().to_string()
    }

    fn init_pki(&self) {
        let pki = self.pki();
        let out = Command::new(drover_bin())
            .args(["tls", "init", "--dir"])
            .arg(&pki)
            .args(["--host", &control_ip().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("running drover tls init");
        assert!(
            out.status.success(),
            "drover tls init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_store(&mut self) {
        if self.opts.etcd_members > 0 {
            return self.start_etcd_cluster();
        }
        let etcd =
            EmbeddedEtcd::open(&self.root.join("store")).expect("opening the embedded store");
        // The socket is made inside the control namespace and stays there;
        // this process's runtime serves it.
        let listener = self
            .control()
            .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .expect("entering the control netns")
            .expect("binding the store's port in the control netns");
        let addr = listener.local_addr().expect("store address");
        listener
            .set_nonblocking(true)
            .expect("making the store listener non-blocking");
        let stop = self.store_stop.clone();
        {
            let rt = self.rt();
            let _guard = rt.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("registering the store listener");
            rt.spawn(etcd.serve(listener, stop));
        }
        self.store_url = format!("http://{addr}");
    }

    fn start_scheduler(&mut self) {
        let (child, addr) = self.spawn_scheduler("scheduler");
        self.scheduler = Some(child);
        self.scheduler_addr = addr;
    }

    /// Starts a scheduler logging to `<name>.log`; waits until it has
    /// written its address to `<name>.addr` and returns it.
    fn spawn_scheduler(&self, name: &str) -> (Child, String) {
        let addr_file = self.root.join(format!("{name}.addr"));
        let log = self.log_file(&format!("{name}.log"));
        let mut cmd = Command::new(drover_bin());
        for k in CLEARED_ENV {
            cmd.env_remove(k);
        }
        cmd.arg("scheduler")
            .args(["--etcd", &self.store_url])
            .args(["--listen", &format!("{}:0", control_ip())])
            .arg("--addr-file")
            .arg(&addr_file)
            .args(["--tls-cert", &self.pki_file("scheduler.pem")])
            .args(["--tls-key", &self.pki_file("scheduler-key.pem")])
            .args(["--tls-client-ca", &self.pki_file("ca.pem")])
            .args(["--cluster-cidr", &self.opts.cluster_cidr])
            .args(["--node-prefix", &self.opts.node_prefix.to_string()])
            .args(&self.opts.scheduler_args)
            .env("DROVER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a log handle"))
            .stderr(log);
        in_netns(&mut cmd, self.control());
        let mut child = cmd.spawn().expect("spawning drover scheduler");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.root.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                panic!(
                    "drover scheduler ({name}) exited at start: {status}; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if s.ends_with('\n') {
                    return (child, s.trim().to_string());
                }
            }
            if Instant::now() >= deadline {
                kill_child(&mut child);
                panic!("drover scheduler ({name}) wrote no address in {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(name))
            .unwrap_or_else(|e| panic!("opening log {name}: {e}"))
    }

    /// The temporary directory everything lives under (removed on drop).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The scheduler's URL as agents and the CLI dial it; with replicas,
    /// every replica's, comma separated.
    pub fn scheduler_url(&self) -> String {
        std::iter::once(self.scheduler_addr.as_str())
            .chain(self.replicas.iter().map(|r| r.addr.as_str()))
            .map(|a| format!("https://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    ///
    /// # Panics
    ///
    /// When there is no host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Starts host `i`'s agent (again).
    ///
    /// # Panics
    ///
    /// When it is running already or cannot be spawned.
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// Starts host `i`'s agent (again) with `extra` flags after the usual
    /// ones (e.g. `--meta ssd=true`).
    ///
    /// # Panics
    ///
    /// When it is running already or cannot be spawned.
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) {
        assert!(
            !self.hosts[i].agent_running(),
            "agent of host {i} is running already"
        );
        let url = self.scheduler_url();
        let host = &self.hosts[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host.log)
            .expect("opening an agent log");
        let mut cmd = Command::new(drover_bin());
        for k in CLEARED_ENV {
            cmd.env_remove(k);
        }
        cmd.arg("agent")
            .args(["--scheduler", &url])
            .arg("--data-dir")
            .arg(&host.data_dir)
            .args(["--address", &host.address.to_string()])
            .args(["--cgroup-parent", &host.cgroup_parent])
            .args(["--tls-ca", &self.pki_file("ca.pem")])
            .args(["--tls-cert", &self.pki_file("agent.pem")])
            .args(["--tls-key", &self.pki_file("agent-key.pem")])
            .args(&self.opts.agent_args)
            .args(extra)
            .env("DROVER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a log handle"))
            .stderr(log);
        in_netns(&mut cmd, host.netns());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the agent of host {i}: {e}"));
        self.hosts[i].agent = Some(child);
    }

    /// SIGKILLs host `i`'s agent, as a crash would. Its tasks keep running.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].agent.take() {
            kill_child(&mut c);
        }
    }

    /// `alloc list --job JOB`, once `n` of its allocations run (desired
    /// run, with an IP): node id -> (allocation id, IP).
    ///
    /// # Panics
    ///
    /// When there are not `n` within a minute.
    pub fn running_with_ips(
        &self,
        job: &str,
        n: usize,
    ) -> std::collections::BTreeMap<String, (String, Ipv4Addr)> {
        poll_until(
            &format!("{n} running allocations of {job} with an IP"),
            Duration::from_secs(60),
            || {
                let allocs = self.cli_json(&["alloc", "list", "--job", job]);
                let got: std::collections::BTreeMap<String, (String, Ipv4Addr)> = allocs
                    .as_array()?
                    .iter()
                    .filter(|a| a["status"] == "running" && a["desired"] == "run")
                    .filter_map(|a| {
                        let ip = a["ip"].as_str()?.parse().ok()?;
                        Some((
                            a["node_id"].as_str()?.to_string(),
                            (a["id"].as_str()?.to_string(), ip),
                        ))
                    })
                    .collect();
                (got.len() == n).then_some(got)
            },
        )
    }

    /// SIGKILLs host `i`'s agent and every supervisor and task it started,
    /// as the loss of the machine would; its network namespace and
    /// addresses stay (nothing answers there any more). The node's
    /// allocations are left for the scheduler to find lost.
    ///
    /// # Panics
    ///
    /// When a process of the host survives SIGKILL.
    pub fn kill_host(&mut self, i: usize) {
        self.kill_agent(i);
        let host = &self.hosts[i];
        let left = procs::kill_leftovers(
            &host.data_dir,
            std::slice::from_ref(&host.cgroup_parent),
            self.since,
            KILL_WAIT,
        );
        assert!(
            left.is_empty(),
            "processes of host {i} survived SIGKILL: {left:?}"
        );
    }

    /// Stops host `i`'s agent with SIGTERM (SIGKILL after a grace period).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].agent.take() {
            stop_child(&mut c, TERM_GRACE);
        }
    }

    /// SIGKILLs host `i`'s agent (as a crash would), starts it again and
    /// waits until it has registered anew: its node's `last_seen_unix_ms`,
    /// set at each registration, has moved and the node is ready.
    ///
    /// # Panics
    ///
    /// When the agent does not re-register in time.
    pub fn restart_agent(&mut self, i: usize) {
        let id = self.hosts[i].node_id.clone();
        let seen = |mh: &MultiHost| -> Option<(i64, String)> {
            let n = mh.nodes().remove(&id)?;
            Some((
                n["last_seen_unix_ms"].as_i64()?,
                n["status"].as_str()?.to_string(),
            ))
        };
        let before = seen(self).map(|(t, _)| t).unwrap_or(0);
        self.kill_agent(i);
        self.start_agent(i);
        poll_until(
            &format!("agent of host {i} ({id}) to register again"),
            READY_TIMEOUT,
            || seen(self).filter(|(t, s)| *t > before && s == "ready"),
        );
    }

    /// Pid of host `i`'s agent, if running.
    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        self.hosts[i].agent.as_ref().map(pid_of)
    }

    /// The last `lines` lines of host `i`'s agent log.
    pub fn agent_log(&self, i: usize, lines: usize) -> String {
        tail(&self.hosts[i].log, lines)
    }

    /// The file host `i`'s agent logs to (appended to across restarts).
    pub fn agent_log_path(&self, i: usize) -> &Path {
        &self.hosts[i].log
    }

    /// The store's URL (`http://127.0.0.1:<port>`), reachable only from
    /// inside the [`MultiHost::control`] namespace.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The last `lines` lines of the scheduler log.
    pub fn scheduler_log(&self, lines: usize) -> String {
        tail(&self.root.join("scheduler.log"), lines)
    }

    fn cgroup_parents(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.cgroup_parent.clone()).collect()
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
