//! `scheduler-bench liveness [--nodes 1000] [--heartbeat-ms 1000]
//! [--grace-ms 4000] [--seconds 30] [--drover PATH]`: what failure
//! detection costs. Registers `nodes` simulated agents (`drover_tests::sim`)
//! with a real `drover scheduler` and a real etcd, lets them settle, then
//! measures over `seconds` of steady heartbeats the scheduler's and etcd's
//! CPU (utime + stime from `/proc/PID/stat`) and the bytes the scheduler
//! moves through its sockets and files (`rchar` + `wchar` of
//! `/proc/PID/io`: the agents' streams and etcd's traffic, lease renewals
//! included). Then ends every simulated stream at once and times until the
//! scheduler lists every node down: the detection time of a loss.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use drover_tests::sim::Sim;

use crate::e2e::SimCluster;

/// Longest wait for registration or detection.
const TIMEOUT: Duration = Duration::from_secs(900);

/// What the run was asked for.
struct Args {
    nodes: usize,
    heartbeat_ms: u64,
    grace_ms: u64,
    seconds: u64,
    drover: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        nodes: 1000,
        heartbeat_ms: 1000,
        grace_ms: 4000,
        seconds: 30,
        drover: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = value()?.parse().context("--nodes")?,
            "--heartbeat-ms" => a.heartbeat_ms = value()?.parse().context("--heartbeat-ms")?,
            "--grace-ms" => a.grace_ms = value()?.parse().context("--grace-ms")?,
            "--seconds" => a.seconds = value()?.parse().context("--seconds")?,
            "--drover" => a.drover = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other:?} (liveness: --nodes N --heartbeat-ms MS \
                 --grace-ms MS --seconds S --drover PATH)"
            ),
        }
    }
    Ok(a)
}

/// CPU ticks (utime + stime) and bytes through read and write calls
/// (rchar + wchar) of process `pid` so far.
pub(crate) fn usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat field {i}"))
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let cpu = ticks(11)? + ticks(12)?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let field = |name: &str| -> u64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((cpu, field("rchar:") + field("wchar:")))
}

/// Clock ticks per second (`_SC_CLK_TCK`), 100 on Linux.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// `liveness` arguments.
pub async fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    let bin = a.drover.clone().unwrap_or_else(drover_tests::drover_bin);
    let (heartbeat, grace) = (a.heartbeat_ms.to_string(), a.grace_ms.to_string());
    let cluster = SimCluster::start(
        &bin,
        a.nodes,
        &["--heartbeat-ms", &heartbeat, "--node-grace-ms", &grace],
        TIMEOUT,
    )
    .await?;
    let (sim, sched, url, etcd) = (&cluster.sim, &cluster.sched, &cluster.url, &cluster.etcd);
    println!(
        "liveness: {} simulated nodes registered in {:.1} s (heartbeat {} ms, grace {} ms)",
        a.nodes,
        cluster.registered_in.as_secs_f64(),
        a.heartbeat_ms,
        a.grace_ms
    );
    // Registration's full passes and peer views are not the steady state.
    tokio::time::sleep(Duration::from_millis(2 * a.grace_ms) + Duration::from_secs(5)).await;
    let (s0, e0) = (usage(sched.0.id())?, usage(etcd.pid())?);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (s1, e1) = (usage(sched.0.id())?, usage(etcd.pid())?);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = |b: (u64, u64), e: (u64, u64)| (e.0 - b.0) as f64 / TICKS_PER_SEC / secs * 100.0;
    let bytes = (s1.1 - s0.1) as f64 / secs;
    println!(
        "liveness: steady state over {secs:.0} s: scheduler CPU {:.1} % of a core, etcd CPU {:.1} %, \
         scheduler I/O {:.0} bytes/s ({:.0} per node per second)",
        cpu(s0, s1),
        cpu(e0, e1),
        bytes,
        bytes / a.nodes as f64
    );
    let down = detection(url, sim, a.nodes).await?;
    println!(
        "liveness: every stream ended at once: all {} nodes listed down after {:.1} s (grace {} ms)",
        a.nodes,
        down.as_secs_f64(),
        a.grace_ms
    );
    Ok(())
}

/// Ends every simulated stream and times until the scheduler lists all
/// `nodes` down.
async fn detection(url: &str, sim: &Sim, nodes: usize) -> Result<Duration> {
    let mut client = pb::node_service_client::NodeServiceClient::new(
        tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect()
            .await?,
    )
    .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    let t0 = Instant::now();
    sim.stop();
    loop {
        let list = client
            .list(pb::ListNodesRequest::default())
            .await?
            .into_inner();
        let down = list.nodes.iter().filter(|n| n.status == "down").count();
        if down >= nodes {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > TIMEOUT {
            bail!("only {down} of {nodes} nodes down after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
