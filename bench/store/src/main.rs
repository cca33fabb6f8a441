//! Side-by-side benchmark of the embedded store and a real etcd 3.4, each
//! in its own process (the embedded one is `drover-tests`'s
//! `embedded_store` binary, so it does not share this client's runtime),
//! on loopback, with data in a temp dir on the same disk, both fsyncing
//! every acknowledged write.
//!
//! For each server and each of `--runs` runs (default 5), on a fresh
//! server:
//! - **put latency**: sequential puts, one at a time;
//! - **watch delivery**: a put, timed from just before the request until a
//!   watcher on the prefix receives the event;
//! - **throughput**: puts with 64 in flight for a fixed duration.
//!
//! Prints a table with the median and p99 over all samples of all runs,
//! and the median (and worst) throughput run.
//!
//! Tests assert none of these figures (a loaded CI machine has no latency
//! bound): run this after changing the store's writer or watch path. A
//! watch-delivery median near 40 ms means Nagle is holding events back
//! (see `TCP_NODELAY` in the embedded server).
//!
//! `cargo build --release -p drover-tests --bin embedded_store &&
//! cargo run --release -p drover-bench-store [-- --runs N]`

// The table on stdout is this program's output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drover_tests::etcd::{EmbeddedChild, RealEtcd};
use etcd_client::{Client, WatchOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

const PUTS: usize = 500;
const WATCH_SAMPLES: usize = 300;
const IN_FLIGHT: usize = 64;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
const VALUE: &[u8] = &[b'x'; 256];

#[derive(Default)]
struct Results {
    put: Vec<Duration>,
    watch: Vec<Duration>,
    loaded: Vec<Duration>,
    rates: Vec<f64>,
}

async fn put_latency(c: &mut Client, out: &mut Vec<Duration>) -> Result<()> {
    for i in 0..PUTS {
        let t = Instant::now();
        c.put(format!("bench/put/{i}"), VALUE, None).await?;
        out.push(t.elapsed());
    }
    Ok(())
}

async fn watch_latency(c: &mut Client, out: &mut Vec<Duration>) -> Result<()> {
    let mut w = c
        .watch("bench/watch/", Some(WatchOptions::new().with_prefix()))
        .await?;
    match w.message().await? {
        Some(r) if r.created() => {}
        other => bail!("watch not created: {other:?}"),
    }
    for i in 0..WATCH_SAMPLES {
        let key = format!("bench/watch/{i}");
        let t = Instant::now();
        c.put(key.as_str(), VALUE, None).await?;
        loop {
            let r = w.message().await?.context("watch ended")?;
            if r.events()
                .iter()
                .any(|e| e.kv().is_some_and(|kv| kv.key() == key.as_bytes()))
            {
                break;
            }
        }
        out.push(t.elapsed());
    }
    Ok(())
}

async fn throughput(c: &Client, lat: &mut Vec<Duration>) -> Result<f64> {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < THROUGHPUT_FOR {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let mut c = c.clone();
        let key = format!("bench/load/{}", i % 10_000);
        i += 1;
        tasks.spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            c.put(key, VALUE, None).await.map(|_| t.elapsed())
        });
        while let Some(done) = tasks.try_join_next() {
            lat.push(done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        lat.push(done??);
    }
    Ok(i as f64 / start.elapsed().as_secs_f64())
}

async fn run_once(endpoint: &str, r: &mut Results) -> Result<()> {
    let mut c = Client::connect([endpoint], None).await?;
    put_latency(&mut c, &mut r.put).await?;
    watch_latency(&mut c, &mut r.watch).await?;
    let rate = throughput(&c, &mut r.loaded).await?;
    r.rates.push(rate);
    Ok(())
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(idx).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
            }
            other => bail!("unknown argument {other:?}; usage: [--runs N]"),
        }
    }
    let bin = std::env::current_exe()
        .context("locating this executable")?
        .with_file_name("embedded_store");
    if !bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p drover-tests --bin embedded_store` first",
            bin.display()
        );
    }
    let mut embedded = Results::default();
    let mut real = Results::default();
    for run in 0..runs {
        // Alternate which goes first so drift in the machine's state
        // favours neither.
        for which in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            if which == 0 {
                let dir = tempfile::Builder::new()
                    .prefix("drover-bench-")
                    .tempdir()
                    .context("creating a temp dir")?;
                let s = EmbeddedChild::start(&bin, dir.path()).await?;
                run_once(s.endpoint(), &mut embedded).await?;
            } else {
                let s = RealEtcd::start().await?;
                run_once(s.endpoint(), &mut real).await?;
            }
        }
        eprintln!("run {}/{runs} done", run + 1);
    }
    println!(
        "{runs} runs each; {PUTS} sequential puts, {WATCH_SAMPLES} watch samples, \
         {IN_FLIGHT} in flight for {THROUGHPUT_FOR:?} per run; 256-byte values"
    );
    println!("| metric | embedded median | embedded p99 | etcd 3.4 median | etcd 3.4 p99 |");
    println!("|---|---|---|---|---|");
    for (name, e, r) in [
        ("put latency (sequential)", &mut embedded.put, &mut real.put),
        (
            "watch delivery (put → event)",
            &mut embedded.watch,
            &mut real.watch,
        ),
        (
            "put latency (64 in flight)",
            &mut embedded.loaded,
            &mut real.loaded,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(pct(e, 0.5)),
            ms(pct(e, 0.99)),
            ms(pct(r, 0.5)),
            ms(pct(r, 0.99))
        );
    }
    let rate = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let (em, ew) = rate(&mut embedded.rates);
    let (rm, rw) = rate(&mut real.rates);
    println!(
        "| puts/s, 64 in flight (median run / worst run) | {em:.0} | {ew:.0} | {rm:.0} | {rw:.0} |"
    );
    Ok(())
}
