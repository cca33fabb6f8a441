//! The propagation modes on real agents: `prop-dev` (a `drover dev`
//! cluster: the check passes on its agent, asked are the node DNS on the
//! bridge address and dev's DNS on the host) and `prop-hosts` (the
//! multi-host harness, two hosts in network namespaces with a scheduler
//! under mutual TLS: the check passes on one host, asked is the other
//! host's node DNS; and a record written straight into the harness's
//! store, asked from host 1).
//!
//! Both use the e2e harness of `drover-tests`, which runs the `drover`
//! binary at `$DROVER_BIN` and cleans everything up when dropped (also on
//! a panic). They need root, busybox and the binary.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use drover_tests::{poll_until, unique_name, DevCluster, MultiHost, DEV_LOG};
use serde_json::Value;

use crate::checked::{self, health_file, Instance, LogTail, Sample};
use crate::client::Client;
use crate::propagation::{self, Source};
use crate::{percentile, print_samples};

/// How long instances may take to run and serve.
const START: Duration = Duration::from_secs(60);

/// What the check modes are given.
#[derive(Debug, Clone, Copy)]
pub struct CheckArgs {
    /// Instances of the service, changing in parallel.
    pub instances: u32,
    /// The check's interval.
    pub interval_ms: u32,
    /// Changes of each direction in all.
    pub changes: u32,
    /// Pause between two questions of one poller.
    pub poll: Duration,
}

/// (alloc id, node id, address) of `job`'s running allocations, once
/// there are `n`, from `alloc list --job` as `list` gives it.
fn running(job: &str, n: u32, list: impl Fn() -> Value) -> Vec<(String, String, Ipv4Addr)> {
    poll_until(&format!("{n} running allocations of {job}"), START, || {
        let got: Vec<(String, String, Ipv4Addr)> = list()
            .as_array()?
            .iter()
            .filter(|a| a["status"] == "running" && a["desired"] == "run")
            .filter_map(|a| {
                Some((
                    a["id"].as_str()?.to_owned(),
                    a["node_id"].as_str()?.to_owned(),
                    a["ip"].as_str()?.parse().ok()?,
                ))
            })
            .collect();
        (got.len() == n as usize).then_some(got)
    })
}

/// [`health_file`] of `alloc`, once its task serves.
fn wait_health_file(alloc: &str) -> Result<std::path::PathBuf> {
    let mut last = anyhow!("never looked");
    let deadline = std::time::Instant::now() + START;
    while std::time::Instant::now() < deadline {
        match health_file(alloc) {
            Ok(p) => return Ok(p),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn tokio_rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

/// Mode "check passing, same node", on `drover dev`.
pub fn same_node(a: CheckArgs) -> Result<()> {
    let c = DevCluster::start();
    let name = unique_name("prop");
    let file = c.write_file(
        "prop.toml",
        &checked::job(&name, a.instances, a.interval_ms),
    );
    c.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    let allocs = running(&name, a.instances, || {
        c.cli_json(&["alloc", "list", "--job", &name])
    });
    let log = Arc::new(LogTail::new(&c.data_dir().join(DEV_LOG))?);
    let node_dns = SocketAddr::from((c.bridge_ip(), 53));
    let host_dns = c.dns_addr();
    println!(
        "\ndrover dev: {} instances of {}, node DNS {node_dns}, host DNS {host_dns}",
        allocs.len(),
        checked::SERVICE
    );
    let mut instances = Vec::new();
    for (id, _, ip) in allocs {
        instances.push(Instance {
            health: wait_health_file(&id)?,
            alloc_id: id,
            ip,
            log: log.clone(),
            servers: vec![
                (
                    "node DNS (bridge)".into(),
                    UdpSocket::bind("0.0.0.0:0")?,
                    node_dns,
                ),
                (
                    "dev's host DNS".into(),
                    UdpSocket::bind("127.0.0.1:0")?,
                    host_dns,
                ),
            ],
        });
    }
    let samples = tokio_rt()?.block_on(checked::run(instances, a.changes, a.poll))?;
    report(Source::CheckSameNode, &samples, a);
    Ok(())
}

/// The bridge address of the node whose subnet is `subnet` ("a.b.c.d/n"):
/// its first host address.
fn bridge_of(subnet: &str) -> Result<Ipv4Addr> {
    let net: Ipv4Addr = subnet
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("node subnet {subnet:?}"))?;
    Ok(Ipv4Addr::from(u32::from(net) + 1))
}

/// Modes "check passing, another host" and "etcd write, another host",
/// on the multi-host harness with two hosts.
pub fn other_host(a: CheckArgs) -> Result<()> {
    let mh = MultiHost::start(2);
    let nodes = mh.nodes();
    let mut index = BTreeMap::new();
    let mut bridges = Vec::new();
    for h in mh.hosts() {
        let subnet = nodes[&h.node_id]["subnet"].as_str().unwrap_or_default();
        bridges.push(bridge_of(subnet)?);
        index.insert(h.node_id.clone(), h.index);
    }
    let name = unique_name("prop");
    let file = mh.write_file(
        "prop.toml",
        &checked::job(&name, a.instances, a.interval_ms),
    );
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
    let allocs = running(&name, a.instances, || {
        mh.cli_json(&["alloc", "list", "--job", &name])
    });
    let logs = (0..2)
        .map(|i| LogTail::new(mh.agent_log_path(i)).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let mut instances = Vec::new();
    let mut on = [0, 0];
    for (id, node, ip) in allocs {
        let here = *index
            .get(&node)
            .with_context(|| format!("{id} on unknown node {node}"))?;
        let there = 1 - here;
        on[here] += 1;
        let socket = mh
            .host(there)
            .netns()
            .run(|| UdpSocket::bind("0.0.0.0:0"))
            .map_err(|e| anyhow!("entering host {there}'s netns: {e}"))??;
        instances.push(Instance {
            health: wait_health_file(&id)?,
            alloc_id: id,
            ip,
            log: logs[here].clone(),
            servers: vec![(
                "the other host's node DNS".into(),
                socket,
                SocketAddr::from((bridges[there], 53)),
            )],
        });
    }
    println!(
        "\nmulti-host harness: {} instances of {} (host 0: {}, host 1: {}), node DNS {:?}",
        a.instances,
        checked::SERVICE,
        on[0],
        on[1],
        bridges
    );
    let samples = tokio_rt()?.block_on(checked::run(instances, a.changes, a.poll))?;
    report(Source::CheckOtherHost, &samples, a);
    let s = etcd_to_host(&mh, 1, bridges[1], a.changes)?;
    println!(
        "\npropagation ({:?}, {} changes, asked: host 1's node DNS), ms:",
        Source::EtcdWriteOtherHost,
        a.changes
    );
    print_samples(&s);
    Ok(())
}

/// The etcd-write mode against host `i`'s node DNS at `bridge`: the
/// writes come from a thread inside the control namespace (where the
/// store listens, on its loopback), the questions from a socket made in
/// host `i`'s namespace.
fn etcd_to_host(
    mh: &MultiHost,
    i: usize,
    bridge: Ipv4Addr,
    changes: u32,
) -> Result<propagation::Samples> {
    let socket = mh
        .host(i)
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| anyhow!("entering host {i}'s netns: {e}"))??;
    let control = mh
        .control()
        .try_clone()
        .map_err(|e| anyhow!("the control netns: {e}"))?;
    let url = mh.store_url().to_owned();
    let server = SocketAddr::from((bridge, 53));
    std::thread::scope(|s| {
        s.spawn(move || {
            control
                .enter_current_thread()
                .map_err(|e| anyhow!("entering the control netns: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let etcd = etcd_client::Client::connect([url.as_str()], None)
                    .await
                    .with_context(|| format!("connecting to the harness's store at {url}"))?;
                let mut client = Client::from_std(socket, server)?;
                propagation::run(&etcd, &mut client, changes).await
            })
        })
        .join()
        .map_err(|_| anyhow!("the etcd-write thread panicked"))?
    })
}

/// Prints p50/p99/max of `samples` by server and direction.
fn report(source: Source, samples: &[Sample], a: CheckArgs) {
    println!(
        "\npropagation ({source:?}: {} instances, http check every {} ms, polls every {:?}), \
         from the agent's verdict, ms:",
        a.instances, a.interval_ms, a.poll
    );
    println!(
        "| first answer of | change | changes | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|"
    );
    let mut by: BTreeMap<(String, bool), Vec<f64>> = BTreeMap::new();
    for s in samples {
        by.entry((s.server.clone(), !s.appear))
            .or_default()
            .push(s.took.as_secs_f64() * 1e3);
    }
    for ((server, gone), ms) in by {
        let change = if gone {
            "critical: NXDOMAIN"
        } else {
            "passing: answered"
        };
        println!(
            "| {server} | {change} | {} | {:.2} | {:.2} | {:.2} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            percentile(&ms, 1.0)
        );
    }
}
