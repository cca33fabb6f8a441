//! Runs Debian's `dnsperf` against a server and reads its summary.
//!
//! dnsperf 2.10 reports the mean latency and its standard deviation, not
//! percentiles (its latency histogram came in a later version).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// One dnsperf run's summary.
#[derive(Debug, Clone, Copy)]
pub struct Perf {
    /// Queries per second.
    pub qps: f64,
    /// Mean latency, milliseconds.
    pub avg_ms: f64,
    /// Standard deviation of the latency, milliseconds.
    pub stddev_ms: f64,
    /// Queries answered.
    pub completed: u64,
    /// Queries never answered.
    pub lost: u64,
}

/// How dnsperf loads the server.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// `-c`: client sockets.
    pub clients: u32,
    /// `-q`: queries outstanding.
    pub outstanding: u32,
    /// `-l`: seconds.
    pub secs: u32,
}

/// Runs dnsperf with `queries` against `server`; fails unless every
/// answer is NOERROR.
pub fn run(server: SocketAddr, queries: &Path, load: Load) -> Result<Perf> {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-c", &load.clients.to_string()])
        .args(["-q", &load.outstanding.to_string()])
        .args(["-l", &load.secs.to_string()])
        .output()
        .context("running dnsperf: apt-get install dnsperf (deploy/deps.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "dnsperf failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// Reads dnsperf's summary.
fn parse(text: &str) -> Result<Perf> {
    let field = |label: &str| -> Result<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(str::trim)
            .with_context(|| format!("no {label:?} in dnsperf's output:\n{text}"))
    };
    let first = |s: &str| -> Result<f64> {
        s.split_whitespace()
            .next()
            .context("an empty field")?
            .parse::<f64>()
            .with_context(|| format!("not a number: {s:?}"))
    };
    let codes = field("Response codes:")?;
    if !codes.starts_with("NOERROR") || codes.contains(',') {
        bail!("answers other than NOERROR: {codes}");
    }
    Ok(Perf {
        qps: first(field("Queries per second:")?)?,
        avg_ms: first(field("Average Latency (s):")?)? * 1e3,
        stddev_ms: first(field("Latency StdDev (s):")?)? * 1e3,
        completed: first(field("Queries completed:")?)? as u64,
        lost: first(field("Queries lost:")?)? as u64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn reads_the_summary() {
        let text = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    998 (99.80%)\n  \
                    Queries lost:         2 (0.20%)\n\n  Response codes:       NOERROR 998 (100.00%)\n  \
                    Run time (s):         1.000\n  Queries per second:   998.000000\n\n  \
                    Average Latency (s):  0.000150 (min 0.000010, max 0.002000)\n  \
                    Latency StdDev (s):   0.000050\n";
        let p = super::parse(text).unwrap();
        assert_eq!((p.completed, p.lost), (998, 2));
        assert!((p.qps - 998.0).abs() < 1e-9 && (p.avg_ms - 0.15).abs() < 1e-9);
        let bad = text.replace(
            "NOERROR 998 (100.00%)",
            "NOERROR 990 (99.2%), SERVFAIL 8 (0.8%)",
        );
        assert!(super::parse(&bad).is_err());
    }
}
