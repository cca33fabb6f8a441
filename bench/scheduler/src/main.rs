//! `scheduler-bench core [--runs N]`: the placement core's placements per
//! second on simulated snapshots (see `core.rs`).
//!
//! `scheduler-bench e2e [--nodes N] [--instances N]`: one job through a
//! real scheduler and etcd onto simulated nodes (see `e2e.rs`).
//!
//! `scheduler-bench [--jobs N] [--drover PATH] [--cli]`: submit -> running latency
//! on a warm `drover dev` node. Starts `drover dev` (the binary given, or
//! `DROVER_BIN`), then, one job at a time, opens `JobService.Watch` on a
//! new single-task job (`sleep 3600`, 0.05 CPU, 16 MiB, no root
//! filesystem), submits it and times from just before the `Submit` RPC to
//! the first event showing its allocation running. Each job is stopped,
//! and its allocation seen stopped, before the next is submitted (outside
//! the timing). Prints min, median, p95, p99 and max in milliseconds.
//!
//! With `--cli`, each job is instead submitted with `drover job run FILE`
//! and timed from the command's start to its exit (it returns once the
//! allocation runs): what a user waits for, process start included.
//!
//! Run as root (the agent makes namespaces, cgroups and a bridge).

// A report on stdout is this program's purpose.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use drover_proto::v1 as pb;
use drover_tests::dev::DevCluster;
use pb::job_service_client::JobServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Longest wait for one job to run or to stop.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    jobs: usize,
    drover: Option<PathBuf>,
    cli: bool,
}

fn args() -> Result<Args> {
    let mut out = Args {
        jobs: 50,
        drover: None,
        cli: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--jobs" => out.jobs = value()?.parse().context("--jobs")?,
            "--drover" => out.drover = Some(PathBuf::from(value()?)),
            "--cli" => out.cli = true,
            other => bail!("unknown argument {other:?} (--jobs N, --drover PATH, --cli)"),
        }
    }
    if out.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    Ok(out)
}

fn job(name: &str) -> pb::Job {
    pb::Job {
        name: name.into(),
        kind: "service".into(),
        groups: vec![pb::Group {
            name: "main".into(),
            count: 1,
            tasks: vec![pb::Task {
                name: "sleep".into(),
                command: vec!["sleep".into(), "3600".into()],
                resources: Some(pb::Resources {
                    cpu_millis: 50,
                    memory_mb: 16,
                }),
                kill_timeout_ms: 200,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Waits on `events` until an allocation of the job has `status`.
async fn until_status(
    events: &mut tonic::Streaming<pb::JobEvent>,
    status: &str,
    desired: &str,
) -> Result<()> {
    loop {
        let event = tokio::time::timeout(STEP_TIMEOUT, events.message())
            .await
            .with_context(|| format!("no allocation {status} within {STEP_TIMEOUT:?}"))?
            .context("watch stream")?
            .ok_or_else(|| anyhow!("watch stream ended"))?;
        if let Some(pb::job_event::Event::Allocation(a)) = event.event {
            if a.status == status && a.desired == desired {
                return Ok(());
            }
            if a.status == "failed" {
                bail!("allocation {} failed: {:?}", a.name, a.tasks);
            }
        }
    }
}

/// The job file of [`job`], for `drover job run`.
fn job_file(name: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"service\"\n[[group]]\nname = \"main\"\n\
         [[group.task]]\nname = \"sleep\"\ncommand = [\"sleep\", \"3600\"]\n\
         kill_timeout_ms = 200\nresources = {{ cpu_millis = 50, memory_mb = 16 }}\n"
    )
}

/// Submits job `name` and returns the time until it runs; stops it.
async fn one(
    cluster: &DevCluster,
    client: &mut JobServiceClient<Channel>,
    name: &str,
    cli: bool,
) -> Result<Duration> {
    let mut events = client
        .watch(pb::WatchJobRequest { name: name.into() })
        .await?
        .into_inner();
    let took = if cli {
        let file = cluster.write_file(&format!("{name}.toml"), &job_file(name));
        let t0 = Instant::now();
        let out = cluster.cli(&["job".as_ref(), "run".as_ref(), file.as_os_str()]);
        let took = t0.elapsed();
        if !out.status.success() {
            bail!("drover job run: {}", String::from_utf8_lossy(&out.stderr));
        }
        took
    } else {
        let t0 = Instant::now();
        client
            .submit(pb::SubmitRequest {
                job: Some(job(name)),
            })
            .await?;
        until_status(&mut events, "running", "run").await?;
        t0.elapsed()
    };
    client
        .stop(pb::StopJobRequest { name: name.into() })
        .await?;
    loop {
        let event = tokio::time::timeout(STEP_TIMEOUT, events.message())
            .await
            .context("job did not stop")??
            .ok_or_else(|| anyhow!("watch stream ended"))?;
        if let Some(pb::job_event::Event::Allocation(a)) = event.event {
            if a.desired != "run" && !matches!(a.status.as_str(), "pending" | "running") {
                return Ok(took);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (nearest rank) of sorted `v`.
fn quantile<T: Copy>(v: &[T], q: f64) -> T {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

mod core;
mod e2e;
mod liveness;

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some("core") => core::run(&argv[1..]),
        Some("e2e") => tokio::runtime::Runtime::new()?.block_on(e2e::run(&argv[1..])),
        Some("liveness") => tokio::runtime::Runtime::new()?.block_on(liveness::run(&argv[1..])),
        _ => tokio::runtime::Runtime::new()?.block_on(latency()),
    }
}

/// The submit -> running latency on `drover dev` (the default mode).
async fn latency() -> Result<()> {
    let args = args()?;
    if let Some(bin) = &args.drover {
        std::env::set_var("DROVER_BIN", bin);
    }
    let cluster = DevCluster::start();
    let channel = Endpoint::from_shared(cluster.url())?.connect().await?;
    let mut client = JobServiceClient::new(channel);
    // One job first, untimed, so the node is warm (page cache, cgroups).
    one(&cluster, &mut client, "bench-warmup", args.cli).await?;
    let mut times = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        times.push(one(&cluster, &mut client, &format!("bench-{i}"), args.cli).await?);
    }
    times.sort();
    println!(
        "submit -> running ({}), {} single-task jobs, ms: min {:.1} median {:.1} p95 {:.1} p99 {:.1} max {:.1}",
        if args.cli { "drover job run" } else { "Submit RPC to Watch event" },
        times.len(),
        ms(times[0]),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.95)),
        ms(quantile(&times, 0.99)),
        ms(times[times.len() - 1]),
    );
    Ok(())
}
