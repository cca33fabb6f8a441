//! How the embedded store's restart time, disk use and memory grow with
//! history and with live data, beside a real etcd 3.4 in the same run.
//!
//! 1. **History**: `--writes` puts (default 1,000,000) to `--keys` keys
//!    (default 1,000), 64-byte values, 128 in flight; then `kill -9` and
//!    restart (median of 3). Three servers: the embedded store with
//!    snapshots off (`log replay`: the whole log is read at start, as every
//!    build before snapshots did), the embedded store with its default
//!    snapshot thresholds, and etcd (no compaction: it keeps every
//!    revision, as etcd does by default).
//! 2. **Live data**: `--live` keys (default 100,000) of 256 bytes into a
//!    fresh server; RSS (VmRSS) and disk use, then again after a restart.
//!
//! Restart time is from spawning the process until a Range answers.
//!
//! `cargo build --release -p drover-tests --bin embedded_store &&
//! cargo run --release -p drover-bench-store --bin store-restart [-- --writes N --keys N --live N]`

// The table on stdout is this program's output.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drover_tests::etcd::{EmbeddedChild, RealEtcd};
use etcd_client::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

const IN_FLIGHT: usize = 128;
const RESTARTS: usize = 3;

struct Args {
    writes: u64,
    keys: u64,
    live: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        writes: 1_000_000,
        keys: 1_000,
        live: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a count"))?;
        match flag.as_str() {
            "--writes" => a.writes = v,
            "--keys" => a.keys = v,
            "--live" => a.live = v,
            other => bail!("unknown flag {other}; flags: --writes N --keys N --live N"),
        }
    }
    Ok(a)
}

/// Puts `n` values of `size` bytes, key `prefix{i % keys}`, with
/// [`IN_FLIGHT`] in flight; returns puts per second.
async fn load(c: &Client, prefix: &str, n: u64, keys: u64, size: usize) -> Result<f64> {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let value = Arc::new(vec![b'v'; size]);
    let t = Instant::now();
    for i in 0..n {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let (mut c, value) = (c.clone(), Arc::clone(&value));
        let key = format!("{prefix}{:08}", i % keys);
        tasks.spawn(async move {
            let _permit = permit;
            c.put(key, value.as_slice(), None).await.map(|_| ())
        });
        while let Some(r) = tasks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

fn du_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One server under test: the embedded store (snapshots on or off) or etcd.
enum Server {
    Embedded {
        bin: PathBuf,
        dir: tempfile::TempDir,
        env: Vec<(&'static str, &'static str)>,
        child: Option<EmbeddedChild>,
    },
    Etcd(RealEtcd),
}

impl Server {
    async fn embedded(bin: &Path, snapshots: bool) -> Result<Self> {
        let env = if snapshots {
            vec![]
        } else {
            vec![
                ("DROVER_TEST_SNAPSHOT_RECORDS", "18446744073709551615"),
                ("DROVER_TEST_SNAPSHOT_BYTES", "18446744073709551615"),
            ]
        };
        let mut s = Server::Embedded {
            bin: bin.to_path_buf(),
            dir: tempfile::tempdir()?,
            env,
            child: None,
        };
        s.restart().await?;
        Ok(s)
    }

    fn endpoint(&self) -> String {
        match self {
            Server::Embedded { child, .. } => child
                .as_ref()
                .map(|c| c.endpoint().to_string())
                .unwrap_or_default(),
            Server::Etcd(e) => e.endpoint().to_string(),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Server::Embedded { child, .. } => child.as_ref().map_or(0, |c| c.pid()),
            Server::Etcd(e) => e.pid(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        match self {
            Server::Embedded { dir, .. } => dir.path().to_path_buf(),
            Server::Etcd(e) => e.data_dir(),
        }
    }

    /// `kill -9`, then start again; returns the time until it served.
    async fn restart(&mut self) -> Result<Duration> {
        match self {
            Server::Embedded {
                bin,
                dir,
                env,
                child,
            } => {
                if let Some(mut c) = child.take() {
                    c.kill9()?;
                }
                let t = Instant::now();
                let c = EmbeddedChild::start_with_env(bin, dir.path(), None, env).await?;
                let took = t.elapsed();
                *child = Some(c);
                Ok(took)
            }
            Server::Etcd(e) => {
                e.kill()?;
                let t = Instant::now();
                e.restart().await?;
                Ok(t.elapsed())
            }
        }
    }
}

async fn history(name: &str, mut s: Server, a: &Args) -> Result<()> {
    let c = Client::connect([s.endpoint()], None).await?;
    let rate = load(&c, "bench/hist/", a.writes, a.keys, 64).await?;
    drop(c);
    let disk = du_mib(&s.data_dir());
    let mut times = Vec::new();
    for _ in 0..RESTARTS {
        times.push(s.restart().await?);
    }
    let rss = rss_mib(s.pid())?;
    println!(
        "| {name} | {rate:.0} | {disk:.1} | {:.0} | {rss:.0} |",
        median(times).as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn live(name: &str, mut s: Server, a: &Args) -> Result<()> {
    let c = Client::connect([s.endpoint()], None).await?;
    let before = rss_mib(s.pid())?;
    load(&c, "bench/live/", a.live, a.live, 256).await?;
    drop(c);
    let rss = rss_mib(s.pid())?;
    let disk = du_mib(&s.data_dir());
    let took = s.restart().await?;
    let c = Client::connect([s.endpoint()], None).await?;
    let n = c
        .kv_client()
        .get(
            "bench/live/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?
        .count();
    if n != a.live as i64 {
        bail!("{name}: {n} keys after restart, wrote {}", a.live);
    }
    let rss_after = rss_mib(s.pid())?;
    println!(
        "| {name} | {before:.0} | {rss:.0} | {disk:.1} | {:.0} | {rss_after:.0} |",
        took.as_secs_f64() * 1000.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let bin = std::env::current_exe()?.with_file_name("embedded_store");
    if !bin.exists() {
        bail!(
            "{} not found: cargo build --release -p drover-tests --bin embedded_store",
            bin.display()
        );
    }
    println!(
        "\n{} writes to {} keys (64-byte values), then kill -9 and restart (median of {RESTARTS})\n",
        a.writes, a.keys
    );
    println!("| server | puts/s | disk MiB | restart ms | RSS after restart MiB |");
    println!("|---|---:|---:|---:|---:|");
    history(
        "embedded, log replay (snapshots off)",
        Server::embedded(&bin, false).await?,
        &a,
    )
    .await?;
    history(
        "embedded, snapshots",
        Server::embedded(&bin, true).await?,
        &a,
    )
    .await?;
    history("etcd 3.4", Server::Etcd(RealEtcd::start().await?), &a).await?;

    println!("\n{} keys of 256 bytes in a fresh server\n", a.live);
    println!(
        "| server | RSS empty MiB | RSS MiB | disk MiB | restart ms | RSS after restart MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    live(
        "embedded, snapshots",
        Server::embedded(&bin, true).await?,
        &a,
    )
    .await?;
    live("etcd 3.4", Server::Etcd(RealEtcd::start().await?), &a).await?;
    Ok(())
}
