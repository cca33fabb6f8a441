//! `dns-bench [OPTIONS] [perf] [propagation] [memory]` (all three when
//! none is named): Drover's DNS server beside knot, on loopback.
//!
//! - **perf**: dnsperf (`-c 4 -q 200 -l <secs>` by default) against
//!   Drover's server and against `knotd`, both serving the same zone
//!   (1,000 services x 3 instances: A, per-instance A, SRV with the
//!   targets' addresses as additional records); runs alternate which
//!   server goes first; qps and latency per run, medians, ratio.
//! - **propagation**: from a write to the store to the first answer that
//!   holds the new instance (and from a delete to NXDOMAIN), p50/p99.
//! - **memory**: heap bytes of the index with 10,000 endpoints.
//!
//! Drover's side runs in this process (see `drover.rs`): the embedded
//! store, the watch loop and the server, on a tokio runtime with one
//! worker per CPU, as the `drover` binary has. knot runs with its default
//! (one UDP worker per CPU). dnsperf, both servers and this process share
//! the machine's CPUs: on a small machine the figures say as much about
//! the load generator as about the servers, which is why the ratio of two
//! servers measured alternately is the figure to quote.

// The report on stdout is this program's purpose.
#![allow(clippy::print_stdout)]

mod checked;
mod client;
mod cpu;
mod dnsperf;
mod drover;
mod harness;
mod knot;
mod memory;
mod propagation;
mod zone;

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use hickory_server::proto::rr::{Name, RData, RecordType};

use crate::dnsperf::{Load, Perf};
use crate::drover::Drover;
use crate::knot::Knot;

#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

struct Args {
    runs: usize,
    load: Load,
    services: u32,
    instances: u32,
    changes: u32,
    endpoints: u32,
    knot_workers: usize,
    perf: bool,
    propagation: bool,
    memory: bool,
    check: harness::CheckArgs,
    prop_dev: bool,
    prop_hosts: bool,
}

const USAGE: &str = "usage: dns-bench [--runs N] [--secs S] [--clients C] [--outstanding Q] \
                     [--services N] [--instances N] [--changes N] [--endpoints N] \
                     [--knot-workers N] [--checked N] [--check-interval-ms MS] [--poll-us US] \
                     [perf] [propagation] [memory] [prop-dev] [prop-hosts]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 5,
        load: Load {
            clients: 4,
            outstanding: 200,
            secs: 10,
        },
        services: 1000,
        instances: 3,
        changes: 1000,
        endpoints: 10_000,
        knot_workers: 0,
        perf: false,
        propagation: false,
        memory: false,
        check: harness::CheckArgs {
            instances: 6,
            interval_ms: 100,
            changes: 1000,
            poll: Duration::from_millis(1),
        },
        prop_dev: false,
        prop_hosts: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u32> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value; {USAGE}"))?;
            v.parse()
                .with_context(|| format!("{name} {v:?}: not a number"))
        };
        match arg.as_str() {
            "--runs" => a.runs = value("--runs")? as usize,
            "--secs" => a.load.secs = value("--secs")?,
            "--clients" => a.load.clients = value("--clients")?,
            "--outstanding" => a.load.outstanding = value("--outstanding")?,
            "--services" => a.services = value("--services")?,
            "--instances" => a.instances = value("--instances")?,
            "--changes" => a.changes = value("--changes")?,
            "--endpoints" => a.endpoints = value("--endpoints")?,
            "--knot-workers" => a.knot_workers = value("--knot-workers")? as usize,
            "--checked" => a.check.instances = value("--checked")?,
            "--check-interval-ms" => a.check.interval_ms = value("--check-interval-ms")?,
            "--poll-us" => a.check.poll = Duration::from_micros(value("--poll-us")?.into()),
            "perf" => a.perf = true,
            "propagation" => a.propagation = true,
            "memory" => a.memory = true,
            "prop-dev" => a.prop_dev = true,
            "prop-hosts" => a.prop_hosts = true,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    a.check.changes = a.changes;
    ensure!((1..=64).contains(&a.check.instances), "--checked 1..=64");
    if !(a.perf || a.propagation || a.memory || a.prop_dev || a.prop_hosts) {
        (a.perf, a.propagation, a.memory) = (true, true, true);
    }
    ensure!(
        a.runs >= 1 && a.load.secs >= 1,
        "--runs and --secs must be at least 1"
    );
    ensure!(
        (1..=10_000).contains(&a.services) && (1..=100).contains(&a.instances),
        "--services 1..=10000, --instances 1..=100"
    );
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    println!("{} CPUs, load {}", cpus(), loadavg());
    // First, before any thread of the runtime allocates.
    if args.memory {
        memory_report(args.endpoints)?;
    }
    if args.prop_dev || args.prop_hosts {
        drover_bin()?;
    }
    if args.prop_dev {
        harness::same_node(args.check)?;
    }
    if args.prop_hosts {
        harness::other_host(args.check)?;
    }
    if !(args.perf || args.propagation) {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args))
}

async fn run(args: &Args) -> Result<()> {
    let instances = zone::instances(args.services, args.instances);
    let drover = Drover::start().await?;
    drover.load(&instances).await?;
    println!(
        "Drover: DNS on {}, {} endpoints loaded through the store",
        drover.addr,
        instances.len()
    );
    if args.perf {
        perf(args, &instances, &drover).await?;
    }
    if args.propagation {
        propagation(args, &drover).await?;
    }
    Ok(())
}

async fn perf(args: &Args, instances: &[zone::Instance], drover: &Drover) -> Result<()> {
    let knot = Knot::start(&zone::zone_file(instances), args.knot_workers).await?;
    println!("knot: pid {} on {}", knot.pid(), knot.addr);
    same_answers(drover, &knot, args.services).await?;
    let dir = tempfile::tempdir()?;
    let queries = dir.path().join("queries");
    std::fs::write(&queries, zone::query_file(args.services))?;
    let servers = [
        ("drover", drover.addr, std::process::id()),
        ("knot", knot.addr, knot.pid()),
    ];
    // Warm-up: caches, the servers' first allocations.
    for (_, addr, pid) in servers {
        let warm = Load {
            secs: 2,
            ..args.load
        };
        perf_run(addr, pid, &queries, warm).await?;
    }
    println!(
        "\ndnsperf -c {} -q {} -l {}: {} queries (A and SRV, {} services x {})",
        args.load.clients,
        args.load.outstanding,
        args.load.secs,
        args.services * 2,
        args.services,
        args.instances
    );
    println!(
        "| run | server | qps | avg ms | stddev ms | answered | lost | server CPU µs/query | \
         dnsperf CPU µs/query | load |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut results: [Vec<Perf>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_per_query: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..args.runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            let (name, addr, pid) = servers[s];
            let (p, used) = perf_run(addr, pid, &queries, args.load).await?;
            let per_query = |secs: f64| secs * 1e6 / p.completed.max(1) as f64;
            println!(
                "| {} | {name} | {:.0} | {:.3} | {:.3} | {} | {} | {:.1} | {:.1} | {} |",
                run + 1,
                p.qps,
                p.avg_ms,
                p.stddev_ms,
                p.completed,
                p.lost,
                per_query(used.server),
                per_query(used.children),
                loadavg()
            );
            results[s].push(p);
            cpu_per_query[s].push(per_query(used.server));
        }
    }
    let med = |s: usize, f: fn(&Perf) -> f64| median(results[s].iter().map(f).collect());
    let (dq, kq) = (med(0, |p| p.qps), med(1, |p| p.qps));
    println!(
        "\nmedian: drover {dq:.0} qps, avg {:.3} ms; knot {kq:.0} qps, avg {:.3} ms; \
         drover/knot = {:.2}",
        med(0, |p| p.avg_ms),
        med(1, |p| p.avg_ms),
        dq / kq
    );
    let ratios: Vec<f64> = results[0]
        .iter()
        .zip(&results[1])
        .map(|(d, k)| d.qps / k.qps)
        .collect();
    println!("per-run ratios: {ratios:.2?}");
    let (dc, kc) = (
        median(cpu_per_query[0].clone()),
        median(cpu_per_query[1].clone()),
    );
    println!(
        "server CPU per query (median): drover {dc:.1} µs, knot {kc:.1} µs, drover/knot = {:.2}",
        dc / kc
    );
    Ok(())
}

/// One dnsperf run against the server at `addr` (process `pid`), with
/// the CPU time the server and dnsperf used.
/// dnsperf blocks: it runs off the runtime's workers, which serve
/// Drover's DNS.
async fn perf_run(
    addr: std::net::SocketAddr,
    pid: u32,
    queries: &std::path::Path,
    load: Load,
) -> Result<(Perf, cpu::Used)> {
    let queries = queries.to_owned();
    let before = cpu::Snapshot::take(pid)?;
    let perf = tokio::task::spawn_blocking(move || dnsperf::run(addr, &queries, load)).await??;
    Ok((perf, before.used()?))
}

/// Checks that both servers give the same records for a few services, so
/// that neither is measured answering less.
async fn same_answers(drover: &Drover, knot: &Knot, services: u32) -> Result<()> {
    let mut d = client::Client::new(drover.addr).await?;
    let mut k = client::Client::new(knot.addr).await?;
    for s in [0, services / 2, services - 1] {
        for (name, qtype) in [
            (format!("svc{s:04}.service.{}.", zone::ZONE), RecordType::A),
            (
                format!("_svc{s:04}._tcp.service.{}.", zone::ZONE),
                RecordType::SRV,
            ),
        ] {
            let name = Name::from_ascii(&name)?;
            let t = Duration::from_secs(2);
            let (dm, km) = (d.ask(&name, qtype, t).await?, k.ask(&name, qtype, t).await?);
            let summary = |m: &hickory_server::proto::op::Message| {
                let mut answers: Vec<String> = m.answers.iter().map(|r| rdata(&r.data)).collect();
                let mut extra: Vec<String> = m
                    .additionals
                    .iter()
                    .filter(|r| r.record_type() != RecordType::OPT)
                    .map(|r| format!("{} {}", r.name, rdata(&r.data)))
                    .collect();
                answers.sort();
                extra.sort();
                (answers, extra)
            };
            ensure!(
                summary(&dm) == summary(&km),
                "{name} {qtype}: drover {:?} but knot {:?}",
                summary(&dm),
                summary(&km)
            );
        }
    }
    Ok(())
}

fn rdata(data: &RData) -> String {
    data.to_string().to_ascii_lowercase()
}

async fn propagation(args: &Args, drover: &Drover) -> Result<()> {
    let mut client = client::Client::new(drover.addr).await?;
    let s = propagation::run(&drover.etcd, &mut client, args.changes).await?;
    println!(
        "\npropagation ({:?}, {} changes, the index holding {} other endpoints), ms:",
        propagation::Source::EtcdWrite,
        args.changes,
        args.services * args.instances
    );
    print_samples(&s);
    Ok(())
}

/// The table of an etcd-write mode's samples.
fn print_samples(s: &propagation::Samples) {
    println!("| from the write | p50 | p99 | max |\n|---|---:|---:|---:|");
    for (what, samples) in [
        ("put acknowledged", &s.put_ack),
        ("instance answered", &s.appear),
        ("deleted: NXDOMAIN", &s.disappear),
    ] {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            percentile(&ms, 1.0)
        );
    }
}

fn memory_report(endpoints: u32) -> Result<()> {
    println!("\nindex memory (heap bytes counted by the allocator):");
    println!("| endpoints | shape | tags | bytes | bytes/endpoint | store bytes/endpoint |");
    println!("|---:|---|---:|---:|---:|---:|");
    for (instances, tags) in [(1, 0), (3, 0), (10, 0), (100, 0), (3, 2)] {
        let shape = memory::Shape {
            services: endpoints / instances,
            instances,
            tags,
        };
        let m = memory::measure(&shape)?;
        println!(
            "| {} | {} services x {} | {} | {} | {:.0} | {:.0} |",
            m.endpoints,
            shape.services,
            instances,
            tags,
            m.bytes,
            m.bytes as f64 / m.endpoints as f64,
            m.store_bytes as f64 / m.endpoints as f64
        );
    }
    Ok(())
}

/// Makes sure `$DROVER_BIN` names the `drover` binary the harness runs:
/// when unset, the one beside this program.
fn drover_bin() -> Result<()> {
    if std::env::var_os("DROVER_BIN").is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding this program's path")?;
    let bin = exe.with_file_name("drover");
    ensure!(
        bin.is_file(),
        "{} does not exist: build drover-cli or set DROVER_BIN",
        bin.display()
    );
    // Before any other thread runs (the harness's runtimes start later).
    std::env::set_var("DROVER_BIN", &bin);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The nearest-rank percentile of `v` (q in 0..=1).
fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
