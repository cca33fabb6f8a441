//! `drover-sim`: simulated nodes for a running scheduler, by hand.
//!
//! ```text
//! drover-sim --scheduler http://127.0.0.1:4680 --nodes 100 \
//!     [--cpu-millis 4000] [--memory-mb 8192] [--prefix sim-] \
//!     [--meta rack=r1]... [--attr arch=arm64]... [--checks-pass]
//! ```
//!
//! Registers N fake agents over the real agent stream (see
//! [`drover_tests::sim`]), acknowledges what the scheduler assigns them
//! and reports it running, without running anything, and prints what they
//! hold every two seconds until interrupted (Ctrl-C), when their streams
//! end and the scheduler sees the nodes go silent.

// A report on stdout is this program's purpose.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use drover_tests::sim::{NodeSpec, Sim};

/// The usage line, for errors.
const USAGE: &str = "usage: drover-sim --scheduler URL --nodes N [--cpu-millis M] \
    [--memory-mb M] [--prefix P] [--meta K=V]... [--attr K=V]... [--checks-pass]";

struct Args {
    scheduler: String,
    nodes: usize,
    spec: NodeSpec,
}

fn pair(flag: &str, v: &str) -> Result<(String, String)> {
    let (k, val) = v
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} {v:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("{flag} {v:?}: empty key");
    }
    Ok((k.to_string(), val.to_string()))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let (mut scheduler, mut nodes) = (None, None);
    let mut spec = NodeSpec {
        attributes: BTreeMap::new(),
        ..NodeSpec::default()
    };
    while let Some(flag) = it.next() {
        if flag == "--checks-pass" {
            spec.checks_pass = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<i64> {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| anyhow!("{flag} {v:?}: expected a positive number"))
        };
        match flag.as_str() {
            "--scheduler" => scheduler = Some(value),
            "--nodes" => nodes = Some(usize::try_from(num(&value)?)?),
            "--cpu-millis" => spec.cpu_millis = num(&value)?,
            "--memory-mb" => spec.memory_mb = num(&value)?,
            "--prefix" => spec.id_prefix = value,
            "--meta" => {
                let (k, v) = pair("--meta", &value)?;
                spec.meta.insert(k, v);
            }
            "--attr" => {
                let (k, v) = pair("--attr", &value)?;
                spec.attributes.insert(k, v);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        scheduler: scheduler.ok_or_else(|| anyhow!("--scheduler is required\n{USAGE}"))?,
        nodes: nodes.ok_or_else(|| anyhow!("--nodes is required\n{USAGE}"))?,
        spec,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse(std::env::args().skip(1))?;
    let sim = Sim::start(&args.scheduler, args.nodes, args.spec)
        .await
        .with_context(|| format!("starting {} simulated nodes", args.nodes))?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let c = sim.counts();
                println!(
                    "nodes registered {}/{}, allocations running {}, healthy {}, failed {}, complete {}",
                    c.registered, args.nodes, c.running, c.healthy, c.failed, c.complete
                );
            }
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                sim.stop();
                println!("stopped: the scheduler sees {} nodes go silent", args.nodes);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args> {
        parse(v.iter().map(|s| (*s).to_string()))
    }

    #[test]
    fn flags_fill_the_spec_and_bad_ones_are_named() {
        let a = args(&[
            "--scheduler",
            "http://127.0.0.1:4680",
            "--nodes",
            "3",
            "--meta",
            "rack=r1",
            "--attr",
            "arch=arm64",
            "--checks-pass",
        ])
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.nodes, 3);
        assert_eq!(a.spec.meta.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(
            a.spec.attributes.get("arch").map(String::as_str),
            Some("arm64")
        );
        assert!(a.spec.checks_pass);
        for (bad, says) in [
            (vec!["--nodes", "3"], "--scheduler is required"),
            (vec!["--scheduler", "x", "--nodes", "0"], "--nodes \"0\""),
            (
                vec!["--scheduler", "x", "--nodes", "1", "--meta", "r1"],
                "KEY=VALUE",
            ),
            (vec!["--bogus", "1"], "unknown argument"),
        ] {
            let e = args(&bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
