//! `deploy/cluster.sh up|status|down` end to end: a 3-member TLS etcd with
//! auth, the schedulers, 3 agent hosts in network namespaces and `drover
//! dns`; a job run with the CLI through the environment `up` prints, its
//! allocations and DNS records checked; then `down`, and nothing of the
//! cluster left: network namespaces, links, nftables tables, cgroups,
//! mounts, processes, the state directory.
//!
//! Root only. The cluster gets a name, a /24 and ports of its own, so it
//! cannot collide with another test or a cluster someone runs by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use drover_tests::{drover_bin, poll_until, skydns};

/// Scheduler replicas (one leads, the other stands by), as the script's
/// default.
const SCHEDULERS: &str = "2";
/// Agent hosts.
const AGENTS: usize = 3;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster.sh")
}

/// A base port where `n` consecutive ports are free on every address.
fn free_ports(n: u16, from: u16) -> u16 {
    let mut base = from;
    loop {
        let all_free = (0..n).all(|i| TcpListener::bind(("0.0.0.0", base + i)).is_ok());
        if all_free {
            return base;
        }
        base += n;
        assert!(base < 60_000, "no {n} consecutive free ports");
    }
}

/// One cluster of the script; `down` on drop if the test did not.
struct Cluster {
    env: Vec<(String, String)>,
    dir: PathBuf,
    name: String,
    net: String,
    down: bool,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let pid = std::process::id();
        let tmp = tempfile::Builder::new()
            .prefix("drover-clustersh-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().join("cluster");
        let name = format!("t{:04x}", pid % 0xffff);
        let net = format!("198.18.{}", 100 + pid % 150);
        let seed = u16::try_from(20_000 + (pid % 200) * 100).unwrap_or(20_000);
        let etcd = free_ports(6, seed);
        let sched = free_ports(4, etcd + 6);
        let dns = free_ports(1, sched + 4);
        let env = vec![
            ("CLUSTER_DIR".into(), dir.display().to_string()),
            ("CLUSTER_NAME".into(), name.clone()),
            ("CLUSTER_NET".into(), net.clone()),
            ("TASK_CIDR".into(), format!("10.{}.0.0/16", 100 + pid % 150)),
            ("SCHEDULERS".into(), SCHEDULERS.into()),
            ("AGENTS".into(), AGENTS.to_string()),
            ("ETCD_PORT".into(), etcd.to_string()),
            ("SCHED_PORT".into(), sched.to_string()),
            ("DNS_PORT".into(), dns.to_string()),
            ("DROVER".into(), drover_bin().display().to_string()),
        ];
        Cluster {
            env,
            dir,
            name,
            net,
            down: false,
            _tmp: tmp,
        }
    }

    fn run(&self, verb: &str) -> Output {
        let out = Command::new("bash")
            .arg(script())
            .arg(verb)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("running deploy/cluster.sh");
        eprintln!(
            "--- cluster.sh {verb}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn dns(&self) -> SocketAddr {
        let port = &self
            .env
            .iter()
            .find(|(k, _)| k == "DNS_PORT")
            .expect("DNS_PORT")
            .1;
        format!("{}.1:{port}", self.net)
            .parse()
            .expect("dns address")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("logs")) {
            for e in dir.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                out += &format!("=== {}\n{tail}\n", e.path().display());
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.down {
            eprintln!("{}", self.logs());
            self.run("down");
        }
    }
}

/// What the machine holds that a cluster could leave behind.
#[derive(Debug, Default)]
struct Snapshot {
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    nft: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    mounts: BTreeSet<String>,
}

fn lines(program: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn snapshot() -> Snapshot {
    let links = lines("ip", &["-o", "link", "show"])
        .iter()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect();
    // cgroup v2 at the top, or one directory per v1 hierarchy.
    let mut cgroups = BTreeSet::new();
    for top in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        cgroups.insert(top.path().display().to_string());
        for e in std::fs::read_dir(top.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() {
                cgroups.insert(e.path().display().to_string());
            }
        }
    }
    let netns = lines("ip", &["netns", "list"])
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    Snapshot {
        netns,
        links,
        nft: lines("nft", &["list", "tables"]),
        cgroups,
        mounts: lines("findmnt", &["-rn", "-o", "TARGET"]),
    }
}

/// Pids whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// The `export K=V` lines of `up`.
fn exports(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The CLI with exactly the environment `up` printed.
fn cli(env: &BTreeMap<String, String>, args: &[&str]) -> Output {
    Command::new(drover_bin())
        .args(args)
        .env_clear()
        .envs(env)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running drover")
}

const JOB: &str = r#"
name = "web"
kind = "service"

[[group]]
name = "web"
count = 3

[[group.task]]
name = "httpd"
command = ["/bin/sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/health && exec busybox httpd -f -p 8080 -h /tmp/www"]
resources = { cpu_millis = 50, memory_mb = 32 }

[[group.service]]
name = "web"
port = 8080

[[group.service.check]]
type = "http"
path = "/health"
interval_ms = 500
timeout_ms = 400
"#;

/// Running allocations of `web` as (id, node, ip).
fn running(env: &BTreeMap<String, String>) -> Option<Vec<(String, String, String)>> {
    let out = cli(env, &["alloc", "list", "--job", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let got: Vec<_> = v
        .as_array()?
        .iter()
        .filter(|a| a["status"] == "running" && a["desired"] == "run")
        .filter_map(|a| {
            Some((
                a["id"].as_str()?.to_owned(),
                a["node_id"].as_str()?.to_owned(),
                a["ip"].as_str()?.to_owned(),
            ))
        })
        .collect();
    (got.len() == 3).then_some(got)
}

fn check_status(c: &Cluster) {
    let out = c.run("status");
    assert!(out.status.success(), "status failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |name: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in status:\n{text}"))
            .to_owned()
    };
    let mut etcd_leaders = 0;
    for i in 0..3 {
        let r = row(&format!("etcd-{i}"));
        assert!(r.contains("healthy") && !r.contains("unhealthy"), "{r}");
        etcd_leaders += usize::from(r.contains("etcd leader"));
    }
    assert_eq!(etcd_leaders, 1, "one etcd member leads:\n{text}");
    let schedulers: usize = SCHEDULERS.parse().expect("a count");
    for i in 0..schedulers {
        let r = row(&format!("scheduler-{i}"));
        assert!(r.contains("serving"), "{r}");
    }
    for i in 0..AGENTS {
        let r = row(&format!("agent-{i}"));
        assert!(r.contains(&format!("{}-h{i} ready", c.name)), "{r}");
    }
    assert!(row("dns").contains("answering"), "{text}");
    for l in text.lines().skip(1) {
        let pid = l.split_whitespace().nth(1).unwrap_or("");
        if !l.starts_with("leading") {
            assert!(pid.parse::<u32>().is_ok(), "no pid in {l:?}");
        }
    }
    assert!(
        text.lines().any(|l| l.starts_with("leading scheduler: ")),
        "status names no leader:\n{text}"
    );
}

#[test]
fn cluster_sh_up_runs_a_job_and_down_leaves_nothing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "deploy/cluster.sh needs root"
    );
    let before = snapshot();
    let mut c = Cluster::new();
    let up = c.run("up");
    assert!(up.status.success(), "up failed:\n{}", c.logs());
    let pids: Vec<i32> = std::fs::read_dir(c.dir.join("pids"))
        .expect("pids dir")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    assert_eq!(
        pids.len(),
        3 + SCHEDULERS.parse::<usize>().unwrap_or(1) + AGENTS + 1
    );
    let env = exports(&String::from_utf8_lossy(&up.stdout));
    for k in [
        "DROVER_ADDR",
        "DROVER_TLS_CA",
        "DROVER_TLS_CERT",
        "DROVER_TLS_KEY",
    ] {
        assert!(env.contains_key(k), "up printed no {k}: {env:?}");
    }
    check_status(&c);

    let job = c._tmp.path().join("web.toml");
    std::fs::write(&job, JOB).expect("writing the job");
    let run = cli(&env, &["job", "run", &job.display().to_string()]);
    assert!(
        run.status.success(),
        "job run: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let allocs = poll_until("3 running web allocations", Duration::from_secs(90), || {
        running(&env)
    });
    let want: BTreeSet<String> = allocs.iter().map(|a| a.2.clone()).collect();
    let nodes: BTreeSet<&str> = allocs.iter().map(|a| a.1.as_str()).collect();
    assert!(
        nodes
            .iter()
            .all(|n| n.starts_with(&format!("{}-h", c.name))),
        "{allocs:?}"
    );
    poll_until(
        "DNS to answer the 3 allocations' addresses",
        Duration::from_secs(60),
        || {
            let answer = skydns::dig(c.dns(), &["web.service.drover.internal", "A"]);
            let got: BTreeSet<String> = skydns::a_records(&answer).into_iter().collect();
            (got == want).then_some(())
        },
    );

    let dir = c.dir.clone();
    let down = c.run("down");
    c.down = true;
    assert!(down.status.success(), "down failed");
    check_nothing_left(&c, &before, &pids, &dir);
}

fn check_nothing_left(c: &Cluster, before: &Snapshot, pids: &[i32], dir: &Path) {
    let after = snapshot();
    let ours = |s: &String| s.contains(&c.name) || s.contains(&dir.display().to_string());
    let new = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
        a.difference(b).cloned().collect()
    };
    // Other tests may run at the same time: what is new and not ours is
    // printed, what is ours fails the test.
    for (what, a, b) in [
        ("netns", &after.netns, &before.netns),
        ("links", &after.links, &before.links),
        ("nft tables", &after.nft, &before.nft),
        ("cgroups", &after.cgroups, &before.cgroups),
        ("mounts", &after.mounts, &before.mounts),
    ] {
        let added = new(a, b);
        let mine: Vec<&String> = added.iter().filter(|s| ours(s)).collect();
        assert!(mine.is_empty(), "down left {what}: {mine:?}");
        if !added.is_empty() {
            eprintln!("new {what} not of this cluster (another test?): {added:?}");
        }
    }
    let alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| drover_tests::procs::pid_exists(*p))
        .collect();
    assert!(alive.is_empty(), "down left processes {alive:?}");
    let naming = processes_naming(dir);
    assert!(
        naming.is_empty(),
        "processes naming {}: {naming:?}",
        dir.display()
    );
    assert!(!dir.exists(), "down left {}", dir.display());
    for i in 0..AGENTS {
        let netns_dir =
            drover_agent::net::wiring::netns_dir_for(&dir.join("agents").join(format!("h{i}")));
        let run = netns_dir.parent().expect("a run dir");
        assert!(!run.exists(), "down left agent {i}'s {}", run.display());
    }
    let route = lines("ip", &["route", "show"]);
    assert!(
        !route.iter().any(|r| r.contains(&format!("{}.", c.net))),
        "down left routes: {route:?}"
    );
}
