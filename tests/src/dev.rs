//! [`DevCluster`]: a real `drover dev` process (embedded store, scheduler
//! and one agent) in a private temporary data directory, with both listeners
//! on loopback port 0, and helpers to drive it with the real `drover` CLI.
//!
//! Dropping the cluster, also while a test panics, stops the dev process,
//! SIGKILLs by pid every supervisor and task it started, waits until they are
//! gone and removes the data directory. A failing test prints the tail of
//! the dev process's log and the CLI commands it ran.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::drover_bin;
use crate::procs::{cmdline, pid_alive, start_ticks, start_unix_ms, with_descendants};
use crate::skydns::with_client;
use crate::util::{
    describe, json_of, pid_of, poll_until, run_drover, succeeded, CLEARED_ENV, POLL,
};

/// How long `drover dev` may take to write its address and register its node.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the dev process gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long killed supervisors and tasks may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Name of the dev process's stderr log inside the data directory.
pub const DEV_LOG: &str = "dev.stderr.log";

/// A running `drover dev` with its own data directory and ports.
pub struct DevCluster {
    child: Child,
    /// Start time of the dev process: any pid found later that started
    /// earlier is a reused pid, not ours.
    start_ticks: u64,
    tmp: Option<TempDir>,
    data_dir: PathBuf,
    addr: String,
    store_addr: String,
    /// The CLI commands run so far and how they ended, for failure reports.
    history: Mutex<Vec<String>>,
    /// The node bridge of this cluster's agent: unique per cluster.
    bridge: String,
    /// The agent's task subnet: unique per cluster, unrouted on this host.
    subnet: String,
    /// Flags given to every `drover dev` start of this cluster.
    args: Vec<String>,
}

impl DevCluster {
    /// Starts `drover dev` and waits until its scheduler has written its
    /// address and its agent's node is `ready`.
    ///
    /// # Panics
    ///
    /// When the binary is missing, the process exits early or does not get
    /// ready in time; the dev log's tail is printed.
    pub fn start() -> DevCluster {
        DevCluster::start_with(&[])
    }

    /// Like [`DevCluster::start`], with extra `drover dev` flags. Unless
    /// they name them, the agent gets a bridge (`--bridge`) and a subnet
    /// (`--subnet`) of its own, unique per cluster and not routed on this
    /// host yet, so clusters run side by side; Drop removes the bridge, the
    /// namespaces and the firewall table, also when the test fails.
    ///
    /// # Panics
    ///
    /// As [`DevCluster::start`].
    pub fn start_with(extra: &[&str]) -> DevCluster {
        let tmp = tempfile::Builder::new()
            .prefix("drover-e2e-")
            .tempdir()
            .expect("creating a temporary data dir");
        DevCluster::start_on(tmp, extra)
    }

    /// Starts `drover dev` on the data directory `tmp` (removed on drop).
    pub(crate) fn start_on(tmp: TempDir, extra: &[&str]) -> DevCluster {
        let data_dir = tmp.path().to_path_buf();
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let given = |flag: &str| {
            extra
                .iter()
                .position(|a| *a == flag)
                .and_then(|i| extra.get(i + 1))
                .map(|v| v.to_string())
        };
        let (bridge, subnet) = match (given("--bridge"), given("--subnet")) {
            (Some(b), Some(s)) => (b, s),
            (b, s) => {
                let (ub, us) = unique_net();
                if b.is_none() {
                    args.extend(["--bridge".to_string(), ub.clone()]);
                }
                if s.is_none() {
                    args.extend(["--subnet".to_string(), us.clone()]);
                }
                (b.unwrap_or(ub), s.unwrap_or(us))
            }
        };
        let child = spawn_dev(&data_dir, &args);
        let start_ticks = start_ticks(pid_of(&child)).unwrap_or(0);
        // From here on, Drop cleans up whatever happens.
        forwarding_hold();
        let mut cluster = DevCluster {
            child,
            start_ticks,
            tmp: Some(tmp),
            data_dir,
            addr: String::new(),
            store_addr: String::new(),
            history: Mutex::new(Vec::new()),
            bridge,
            subnet,
            args,
        };
        cluster.wait_ready(0);
        // The agent sets its network up once the scheduler has answered:
        // wait until the bridge holds its address.
        let bridge_ip = cluster.bridge_ip();
        poll_until("the agent's bridge address", START_TIMEOUT, || {
            TcpListener::bind((bridge_ip, 0)).ok().map(drop)
        });
        cluster
    }

    /// The agent's node bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The agent's task subnet, e.g. `10.213.4.0/24`.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The bridge's address: the subnet's first host address, the tasks'
    /// gateway and DNS server.
    pub fn bridge_ip(&self) -> std::net::Ipv4Addr {
        let net: drover_agent::net::Ipv4Net = self.subnet.parse().expect("a valid subnet");
        net.first_host().expect("a subnet with hosts")
    }

    /// The agent's data directory (`<data dir>/agent`).
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// Where the agent keeps its allocations' named network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        drover_agent::net::wiring::netns_dir_for(&self.agent_dir())
    }

    /// The agent's `drover dev` flags for `--cgroup-parent`, as `drover
    /// agent --cleanup` on the same data needs them.
    pub fn cgroup_parent(&self) -> String {
        cgroup_parent(&self.data_dir)
    }

    /// Stops `drover dev` (SIGTERM, then SIGKILL): the tasks keep running,
    /// as they do when an agent stops.
    pub fn stop(&mut self) {
        self.stop_dev();
    }

    /// Kills `drover dev` with SIGKILL (agent, scheduler and store at
    /// once, as a crash would) and starts it again on the same data
    /// directory, waiting until the new agent has registered. Tasks are not
    /// touched: their supervisors outlive the agent.
    ///
    /// The node record survives the crash and reads `ready` before the new
    /// agent exists (a node is marked down only after its grace period), so
    /// readiness alone proves nothing: this waits for a registration newer
    /// than the one before the kill (`last_seen_unix_ms` moves only when an
    /// agent registers). What the new agent does after registering (adopt,
    /// report, start) is for the caller to wait for.
    ///
    /// # Panics
    ///
    /// When the new process does not register in time.
    pub fn kill9_and_restart(&mut self) {
        let before = self.node_registered_ms();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in ["scheduler.addr", "store.addr", "http.addr"] {
            let _ = std::fs::remove_file(self.data_dir.join(f));
        }
        // `start_ticks` keeps the first process's start time, so cleanup
        // still covers tasks started before the restart.
        self.child = spawn_dev(&self.data_dir, &self.args);
        self.wait_ready(before);
    }

    /// When the dev agent's node last registered (`last_seen_unix_ms`), 0
    /// when no node is recorded yet.
    fn node_registered_ms(&self) -> i64 {
        self.ready_node_registered_ms().unwrap_or(0)
    }

    /// The registration time of the dev agent's node, if it reads `ready`.
    fn ready_node_registered_ms(&self) -> Option<i64> {
        let out = self.cli(&["node", "list", "-o", "json"]);
        let nodes: Value = serde_json::from_slice(&out.stdout).ok()?;
        nodes
            .as_array()?
            .iter()
            .filter(|n| n["status"].as_str() == Some("ready"))
            .filter_map(|n| n["last_seen_unix_ms"].as_i64())
            .max()
    }

    /// Waits for the addresses and for a `ready` node registered after
    /// `registered_after` (ms since the epoch).
    fn wait_ready(&mut self, registered_after: i64) {
        let deadline = Instant::now() + START_TIMEOUT;
        let read_addr = |name: &str| -> Option<String> {
            let s = std::fs::read_to_string(self.data_dir.join(name)).ok()?;
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("`drover dev` exited before it was ready: {status}");
            }
            if let (Some(a), Some(s)) = (read_addr("scheduler.addr"), read_addr("store.addr")) {
                self.addr = a;
                self.store_addr = s;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`drover dev` wrote no scheduler.addr in {START_TIMEOUT:?}"
            );
            std::thread::sleep(POLL);
        }
        poll_until(
            "the dev agent's node to register and be ready",
            START_TIMEOUT,
            || {
                self.ready_node_registered_ms()
                    .filter(|t| *t > registered_after)
                    .map(drop)
            },
        );
    }

    /// The DNS address of `drover dev` on the host (`<data dir>/dns.addr`).
    ///
    /// # Panics
    ///
    /// When the file is missing or malformed.
    pub fn dns_addr(&self) -> std::net::SocketAddr {
        let path = self.data_dir.join("dns.addr");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
    }

    /// The scheduler's gRPC address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The scheduler's address as a URL for tonic endpoints.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The embedded etcd API's address, `127.0.0.1:<port>`.
    pub fn store_addr(&self) -> &str {
        &self.store_addr
    }

    /// The dev process's data directory (a private temporary directory).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Host pid of the `drover dev` process.
    pub fn pid(&self) -> i32 {
        pid_of(&self.child)
    }

    /// Writes `contents` to `name` inside the data directory, for job files.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.data_dir.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Runs `etcdctl ARGS` (Debian's etcd-client, API v3) against this
    /// cluster's embedded store.
    ///
    /// # Panics
    ///
    /// When etcdctl cannot run or fails; its stderr is in the message.
    pub fn etcdctl(&self, args: &[&str]) {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.store_addr))
            .args(args)
            .output()
            .expect("running etcdctl (etcd-client)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `drover ARGS --addr <this cluster>` and returns how it ended;
    /// with a `--` in ARGS (`exec ID -- CMD`), `--addr` goes before it.
    pub fn cli<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut all: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
        all.splice(at..at, [OsStr::new("--addr"), OsStr::new(&self.addr)]);
        let out = run_drover(&all);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push(format!("{} -> {}", describe(&all), out.status));
        out
    }

    /// Like [`DevCluster::cli`], but the command must succeed; returns stdout.
    ///
    /// # Panics
    ///
    /// When the command fails; its stdout and stderr are in the message.
    pub fn cli_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        succeeded(args, &self.cli(args))
    }

    /// Runs `drover ARGS -o json` (which must succeed) and parses stdout.
    ///
    /// # Panics
    ///
    /// When the command fails or does not print one JSON value.
    pub fn cli_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        json_of(args, |all| self.cli_ok(all))
    }

    /// The task directories `agent/allocs/<alloc_id>/<task>` present now.
    pub fn task_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let Ok(allocs) = std::fs::read_dir(self.data_dir.join("agent").join("allocs")) else {
            return dirs;
        };
        for alloc in allocs.flatten() {
            if let Ok(tasks) = std::fs::read_dir(alloc.path()) {
                dirs.extend(tasks.flatten().map(|t| t.path()).filter(|p| p.is_dir()));
            }
        }
        dirs.sort();
        dirs
    }

    /// Every pid recorded under the task directories: each
    /// `supervisor.pid` and the `pid` of each `state.json`, alive or not.
    pub fn recorded_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.task_dirs() {
            if let Some(pid) = std::fs::read_to_string(dir.join("supervisor.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                pids.push(pid);
            }
            if let Some(pid) = std::fs::read_to_string(dir.join("state.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["pid"].as_i64())
                .and_then(|p| i32::try_from(p).ok())
            {
                pids.push(pid);
            }
        }
        pids.retain(|p| *p > 0);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The keys under `prefix` in the embedded store with their
    /// `mod_revision`, sorted: a snapshot that any write under `prefix`
    /// changes. Works from sync code and from inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// When the store cannot be read.
    pub fn store_keys(&self, prefix: &str) -> Vec<(String, i64)> {
        let prefix = prefix.to_owned();
        with_client(&self.store_addr, async move |client| {
            let resp = client
                .get(
                    prefix.as_bytes(),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .map_err(|e| format!("range {prefix}: {e}"))?;
            let mut keys: Vec<(String, i64)> = resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.mod_revision(),
                    )
                })
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    /// The value of `key` in the embedded store, if set.
    ///
    /// # Panics
    ///
    /// When the store cannot be read.
    pub fn store_get(&self, key: &str) -> Option<Vec<u8>> {
        let key = key.to_owned();
        with_client(&self.store_addr, async move |client| {
            let resp = client
                .get(key.as_bytes(), None)
                .await
                .map_err(|e| format!("get {key}: {e}"))?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Sets `key` to `value` in the embedded store, behind the cluster's
    /// back: for tests that stage a state the cluster reaches only by a
    /// race.
    ///
    /// # Panics
    ///
    /// When the store cannot be written.
    pub fn store_put(&self, key: &str, value: Vec<u8>) {
        let key = key.to_owned();
        with_client(&self.store_addr, async move |client| {
            client
                .put(key.as_bytes(), value, None)
                .await
                .map_err(|e| format!("put {key}: {e}"))?;
            Ok(())
        });
    }

    /// The last `lines` lines of the dev process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.data_dir.join(DEV_LOG)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether `pid` is a `drover __supervise` of a task directory inside
    /// this cluster's data directory.
    fn is_our_supervisor(&self, pid: i32) -> bool {
        cmdline(pid)
            .windows(2)
            .any(|w| w[0] == "__supervise" && Path::new(&w[1]).starts_with(&self.data_dir))
    }

    /// Supervisors and tasks this cluster started that are alive now: every
    /// `drover __supervise` of a directory inside the data directory (found
    /// through each `supervisor.pid` and a scan of `/proc`), each task that
    /// `state.json` says runs, and all their descendants. A recorded pid
    /// counts only if the process there is the one recorded (its command
    /// line, or its start time matching `started_unix_ms`): pids are reused,
    /// possibly by another test's processes, and those are left alone.
    fn our_processes(&self) -> Vec<i32> {
        let own = i32::try_from(std::process::id()).unwrap_or(0);
        let mut roots = Vec::new();
        for dir in self.task_dirs() {
            if let Some(pid) = std::fs::read_to_string(dir.join("supervisor.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if self.is_our_supervisor(pid) {
                    roots.push(pid);
                }
            }
            let state = std::fs::read_to_string(dir.join("state.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .unwrap_or(Value::Null);
            if state["state"] == "running" {
                if let (Some(pid), Some(started)) = (
                    state["pid"].as_i64().and_then(|p| i32::try_from(p).ok()),
                    state["started_unix_ms"].as_i64(),
                ) {
                    let same = start_unix_ms(pid).is_some_and(|t| (t - started).abs() < 3_000);
                    if same {
                        roots.push(pid);
                    }
                }
            }
        }
        if let Ok(proc_dir) = std::fs::read_dir("/proc") {
            roots.extend(
                proc_dir
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|&pid| self.is_our_supervisor(pid)),
            );
        }
        let mut pids = with_descendants(&roots);
        pids.retain(|&p| {
            p != own && pid_alive(p) && start_ticks(p).is_some_and(|t| t >= self.start_ticks)
        });
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaps the dev process.
    fn stop_dev(&mut self) {
        let pid = Pid::from_raw(self.pid());
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if let Ok(None) = self.child.try_wait() {
                eprintln!("drover dev (pid {pid}) ignored SIGTERM for {TERM_GRACE:?}; SIGKILL");
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }

    /// Kills every supervisor and task left; returns those that outlived
    /// [`KILL_WAIT`].
    fn kill_leftovers(&self) -> Vec<i32> {
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            // Look again each round: a supervisor may have been spawning.
            let left = self.our_processes();
            if left.is_empty() {
                return left;
            }
            if Instant::now() >= deadline {
                return left;
            }
            for &p in &left {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The host's `net.ipv4.ip_forward` as it was before the first cluster of
/// this process started, and how many clusters are alive: each agent turns
/// forwarding on in the (host) namespace `drover dev` runs in, so the last
/// cluster to go puts the old value back.
static FORWARDING: Mutex<(usize, Option<String>)> = Mutex::new((0, None));
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn forwarding_hold() {
    let mut f = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
    if f.0 == 0 {
        f.1 = std::fs::read_to_string(IP_FORWARD).ok();
    }
    f.0 += 1;
}

fn forwarding_release() {
    let mut f = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
    f.0 = f.0.saturating_sub(1);
    if f.0 == 0 {
        if let Some(old) = f.1.take() {
            if std::fs::read_to_string(IP_FORWARD).ok().as_deref() != Some(old.as_str()) {
                if let Err(e) = std::fs::write(IP_FORWARD, old.trim()) {
                    eprintln!("restoring {IP_FORWARD} to {}: {e}", old.trim());
                }
            }
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        self.stop_dev();
        let survivors = self.kill_leftovers();
        remove_cgroups(&self.data_dir);
        self.remove_network();
        if failing {
            eprintln!(
                "--- drover dev log ({}), last 60 lines:\n{}\n--- CLI commands run:\n{}\n---",
                self.data_dir.join(DEV_LOG).display(),
                self.log_tail(60),
                self.history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n")
            );
        }
        if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                eprintln!("removing {}: {e}", self.data_dir.display());
            }
        }
        forwarding_release();
        if !survivors.is_empty() {
            let msg = format!("processes of this cluster survived SIGKILL: {survivors:?}");
            if failing {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

impl DevCluster {
    /// Removes the agent's networking (namespaces, veths, bridge, routes,
    /// firewall table) with the agent's own cleanup, then deletes the bridge
    /// with `ip` should it still be there.
    fn remove_network(&self) {
        let agent_dir = self.agent_dir();
        let node_id = std::fs::read_to_string(agent_dir.join("node-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let cfg =
            drover_agent::net::wiring::NetConfig::for_agent(&agent_dir, &self.bridge, &node_id);
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            // A dev agent makes no routes; others' in this namespace stay.
            rt.block_on(drover_agent::net::wiring::cleanup_node(&cfg, false))
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = cleaned {
            eprintln!(
                "cleaning up the network of {}: {e}",
                self.data_dir.display()
            );
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}

/// A bridge name and a /24 for one cluster: `drv<pid>x<n>` and
/// `10.<200..249>.<n>.0/24`, skipping subnets that are routed on this host
/// and bridges that exist, so clusters of parallel tests (and of other test
/// processes) do not meet.
fn unique_net() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let second = 200 + (pid.wrapping_add(n / 256) % 50);
        let third = n % 256;
        let bridge = format!("drv{}x{n}", pid % 10_000_000);
        let octets = [10u8, second as u8, third as u8, 0];
        let hex = format!("{:08X}", u32::from_le_bytes(octets));
        let routed = std::fs::read_to_string("/proc/net/route")
            .map(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(hex.as_str()))
            })
            .unwrap_or(false);
        if !routed && !Path::new("/sys/class/net").join(&bridge).exists() {
            return (bridge, format!("10.{second}.{third}.0/24"));
        }
    }
}

/// The cgroup parent of the cluster living in `data_dir`: unique per
/// cluster, so Drop can remove exactly this cluster's cgroups.
fn cgroup_parent(data_dir: &Path) -> String {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "drover-e2e".into());
    format!("drover-test-{name}")
}

/// Removes a cluster's cgroup tree from every hierarchy, deepest first.
fn remove_cgroups(data_dir: &Path) {
    let parent = cgroup_parent(data_dir);
    for top in crate::procs::remove_cgroup_tree(&parent) {
        eprintln!("cgroup {} could not be removed", top.display());
    }
}

/// Spawns `drover dev` on `data_dir` with free loopback ports, appending its
/// output to the dev log.
fn spawn_dev(data_dir: &Path, args: &[String]) -> Child {
    // 0600 as every log of the node (it may show jobs' commands).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data_dir.join(DEV_LOG))
        .expect("opening the dev log file");
    let mut cmd = Command::new(drover_bin());
    for k in CLEARED_ENV {
        cmd.env_remove(k);
    }
    cmd.arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--cgroup-parent")
        .arg(cgroup_parent(data_dir))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("DROVER_LOG", "info")
        // Not NO_COLOR: the log is a file, and `drover dev` must see that
        // itself (tests/tests/cli_logs_dev.rs checks it writes no escapes).
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the dev log handle"))
        .stderr(log)
        .spawn()
        .expect("spawning `drover dev`")
}
