//! `scheduler-bench e2e [--nodes 1000] [--instances 10000] [--drover PATH]
//! [--limit-s 900]`:
//! one job of `instances` onto `nodes` simulated nodes (`drover_tests::sim`)
//! through a real `drover scheduler` process and a real etcd (Debian's, on
//! loopback ports with a temporary data directory). Times from the
//! `Submit` RPC until every instance has been acknowledged running by its
//! simulated agent and prints `persisted allocs/s: N`; then what each node
//! was sent (bytes, assignment messages and entries) and the scheduler's
//! RSS. With `--nodes 10000 --instances 100000` the RSS is the memory
//! figure of issue #13.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use drover_tests::etcd::RealEtcd;
use drover_tests::sim::{NodeSpec, Received, Sim};

/// Longest wait for registration or for every instance to run, unless
/// `--limit-s` says otherwise.
const TIMEOUT: Duration = Duration::from_secs(900);

/// How often the registration's progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The scheduler process, killed on drop.
pub(crate) struct Scheduler(pub(crate) Child);

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real etcd, a `drover scheduler` on it, and simulated nodes
/// registered with it; dropped in that order reversed (nodes first).
pub(crate) struct SimCluster {
    pub(crate) sim: Sim,
    pub(crate) sched: Scheduler,
    pub(crate) url: String,
    /// How long the nodes took to register.
    pub(crate) registered_in: Duration,
    _dir: tempfile::TempDir,
    pub(crate) etcd: RealEtcd,
}

impl SimCluster {
    /// Starts etcd and `bin scheduler` with `flags` (heartbeat, grace),
    /// then `nodes` simulated nodes of 64 cores and 128 GiB, and waits
    /// until all have registered (at most `limit`), printing the progress
    /// every minute.
    pub(crate) async fn start(
        bin: &Path,
        nodes: usize,
        flags: &[&str],
        limit: Duration,
    ) -> Result<SimCluster> {
        let etcd = RealEtcd::start().await?;
        let dir = tempfile::tempdir()?;
        let addr_file = dir.path().join("scheduler.addr");
        let log = std::fs::File::create(dir.path().join("scheduler.log"))?;
        let child = Command::new(bin)
            .args([
                "scheduler",
                "--etcd",
                etcd.endpoint(),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--addr-file")
            .arg(&addr_file)
            .args(["--cluster-cidr", "10.0.0.0/8", "--log", "warn"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let sched = Scheduler(child);
        let url = format!(
            "http://{}",
            wait_for(limit, || std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| s.ends_with('\n')))
            .await?
            .trim()
        );
        let spec = NodeSpec {
            cpu_millis: 64_000,
            memory_mb: 131_072,
            nodes_per_connection: 50,
            ..NodeSpec::default()
        };
        let t0 = Instant::now();
        let sim = Sim::start(&url, nodes, spec).await?;
        let pid = sched.0.id();
        let mut next_report = t0 + PROGRESS_EVERY;
        wait_for(limit, || {
            let registered = sim.counts().registered;
            if Instant::now() >= next_report {
                next_report += PROGRESS_EVERY;
                progress(t0, registered, pid);
            }
            (registered == nodes).then_some(())
        })
        .await
        .with_context(|| format!("{} of {nodes} nodes registered", sim.counts().registered))?;
        Ok(SimCluster {
            sim,
            sched,
            url,
            registered_in: t0.elapsed(),
            _dir: dir,
            etcd,
        })
    }
}

/// `e2e` arguments.
pub async fn run(args: &[String]) -> Result<()> {
    let (mut nodes, mut instances, mut drover) = (1000usize, 10_000u32, None);
    let mut limit = TIMEOUT;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => nodes = value()?.parse().context("--nodes")?,
            "--instances" => instances = value()?.parse().context("--instances")?,
            "--drover" => drover = Some(PathBuf::from(value()?)),
            "--limit-s" => {
                limit = Duration::from_secs(value()?.parse().context("--limit-s")?);
            }
            other => {
                bail!(
                    "unknown argument {other:?} \
                     (e2e: --nodes N --instances N --drover PATH --limit-s S)"
                )
            }
        }
    }
    let bin = match drover {
        Some(b) => b,
        None => drover_tests::drover_bin(),
    };
    let cluster = SimCluster::start(
        &bin,
        nodes,
        &["--heartbeat-ms", "5000", "--node-grace-ms", "60000"],
        limit,
    )
    .await?;
    let (sim, sched, url) = (&cluster.sim, &cluster.sched, &cluster.url);
    println!(
        "e2e: {nodes} simulated nodes registered in {:.1} s",
        cluster.registered_in.as_secs_f64()
    );

    let mut jobs = pb::job_service_client::JobServiceClient::new(
        tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await?,
    )
    .max_decoding_message_size(drover_proto::MAX_MESSAGE_BYTES);
    report_registration(sim, sched.0.id())?;
    print_cpu("after registration", sched.0.id(), cluster.etcd.pid())?;
    // What registration sent (the peer view, which every node gets when
    // one joins, published at most every 200 ms, and every node's DNS
    // record, relayed to every node) is not the job's: let the last of it
    // go out, then count from here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = settle(sim, limit).await;
    println!(
        "e2e: DNS records settled {:.1} s after the last registration",
        settled.as_secs_f64()
    );
    let before = sim.received();
    let t0 = Instant::now();
    jobs.submit(pb::SubmitRequest {
        job: Some(job(instances)),
    })
    .await?;
    let submitted = t0.elapsed();
    wait_for(limit, || {
        (sim.counts().running >= instances as usize).then_some(())
    })
    .await?;
    let took = t0.elapsed();
    println!(
        "e2e: {instances} instances on {nodes} nodes: submit RPC {:.2} s, all acknowledged running after {:.2} s",
        submitted.as_secs_f64(),
        took.as_secs_f64()
    );
    report_sent(&sim.received(), &before, instances, nodes);
    println!(
        "e2e: scheduler RSS {} MiB (peak {} MiB)",
        rss_kib(sched.0.id(), "VmRSS")? / 1024,
        rss_kib(sched.0.id(), "VmHWM")? / 1024
    );
    print_cpu("at the end", sched.0.id(), cluster.etcd.pid())?;
    println!(
        "persisted allocs/s: {:.0}",
        f64::from(instances) / took.as_secs_f64()
    );
    Ok(())
}

fn job(count: u32) -> pb::Job {
    // A group holds at most 10,000 instances: larger counts take several.
    let groups = (0..count.div_ceil(10_000))
        .map(|g| pb::Group {
            name: format!("g{g}"),
            count: i64::from((count - g * 10_000).min(10_000)),
            tasks: vec![pb::Task {
                name: "t".into(),
                command: vec!["/bin/true".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_mb: 64,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    pb::Job {
        name: "e2e".into(),
        kind: "service".into(),
        groups,
        ..Default::default()
    }
}

/// Polls `check` every 10 ms until it gives a value, for `limit`.
pub(crate) async fn wait_for<T>(
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("gave up after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `field` (`VmRSS`, or `VmHWM`: the peak) of process `pid`, in KiB.
fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// Waits until no node has been sent a DNS update for 2 s (at most
/// `limit`); returns how long that took.
async fn settle(sim: &Sim, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let total = || sim.received().iter().map(|r| r.dns_messages).sum::<u64>();
    let (mut last, mut quiet_since) = (total(), Instant::now());
    while t0.elapsed() < limit && quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    quiet_since.saturating_duration_since(t0)
}

/// Prints how many nodes registered since `t0`, and the scheduler's CPU
/// time and memory so far.
fn progress(t0: Instant, registered: usize, pid: u32) {
    let secs = t0.elapsed().as_secs_f64();
    let cpu =
        crate::liveness::usage(pid).map(|(ticks, _)| ticks as f64 / crate::liveness::TICKS_PER_SEC);
    let rss = rss_kib(pid, "VmRSS").map(|k| k / 1024);
    match (cpu, rss) {
        (Ok(cpu), Ok(rss)) => println!(
            "e2e: {secs:.0} s: {registered} nodes registered ({:.0} a minute), scheduler CPU {cpu:.1} s, RSS {rss} MiB",
            registered as f64 * 60.0 / secs
        ),
        _ => println!("e2e: {secs:.0} s: {registered} nodes registered"),
    }
}

/// Prints the CPU time the scheduler and etcd used so far.
fn print_cpu(when: &str, sched: u32, etcd: u32) -> Result<()> {
    let secs = |pid| -> Result<f64> {
        Ok(crate::liveness::usage(pid)?.0 as f64 / crate::liveness::TICKS_PER_SEC)
    };
    println!(
        "e2e: CPU {when}: scheduler {:.1} s, etcd {:.1} s",
        secs(sched)?,
        secs(etcd)?
    );
    Ok(())
}

/// Prints what registration sent each node (median / max), and the
/// scheduler's memory then.
fn report_registration(sim: &Sim, pid: u32) -> Result<()> {
    let received = sim.received();
    let per = |f: fn(&Received) -> u64| {
        let mut v: Vec<u64> = received.iter().map(f).collect();
        v.sort_unstable();
        (crate::quantile(&v, 0.5), v.last().copied().unwrap_or(0))
    };
    let (b, bmax) = per(|r| r.bytes);
    let (m, mmax) = per(|r| r.dns_messages);
    let (r, rmax) = per(|r| r.dns_records);
    println!(
        "e2e: sent per node while registering (median / max): {b} / {bmax} bytes, {m} / {mmax} DNS messages, {r} / {rmax} DNS records ({} nodes)",
        received.len()
    );
    println!(
        "e2e: scheduler RSS after registration {} MiB (peak {} MiB)",
        rss_kib(pid, "VmRSS")? / 1024,
        rss_kib(pid, "VmHWM")? / 1024
    );
    Ok(())
}

/// Prints what each node was sent between `before` and `after`, median and
/// max over the nodes.
fn report_sent(after: &[Received], before: &[Received], instances: u32, nodes: usize) {
    let mut received: Vec<Received> = after
        .iter()
        .zip(before)
        .map(|(after, was)| Received {
            bytes: after.bytes - was.bytes,
            assignment_messages: after.assignment_messages - was.assignment_messages,
            assignment_entries: after.assignment_entries - was.assignment_entries,
            dns_messages: after.dns_messages - was.dns_messages,
            dns_records: after.dns_records - was.dns_records,
        })
        .collect();
    received.sort_by_key(|r| r.bytes);
    let per = |f: fn(&Received) -> u64| {
        let v: Vec<u64> = received.iter().map(f).collect();
        (crate::quantile(&v, 0.5), v.last().copied().unwrap_or(0))
    };
    let (bytes_med, bytes_max) = per(|r| r.bytes);
    let (msgs_med, msgs_max) = per(|r| r.assignment_messages);
    let (entries_med, entries_max) = per(|r| r.assignment_entries);
    let (dns_med, dns_max) = per(|r| r.dns_messages);
    println!(
        "e2e: sent per node for the job (median / max): {bytes_med} / {bytes_max} bytes, {msgs_med} / {msgs_max} assignment messages, {entries_med} / {entries_max} assignment entries, {dns_med} / {dns_max} DNS messages (allocations per node: {:.1})",
        f64::from(instances) / nodes as f64
    );
}
