//! CPU time from `/proc`: a server's (user + system, all threads) and
//! that of this process's reaped children (dnsperf), so that a run says
//! how much CPU each side spent per query, whatever else loads the
//! machine.

use anyhow::{Context, Result};

/// CPU seconds used between a [`Snapshot`] and [`Snapshot::used`].
pub struct Used {
    /// By the server's process.
    pub server: f64,
    /// By children of this process that ended in between (dnsperf).
    pub children: f64,
}

/// CPU times at one moment.
pub struct Snapshot {
    pid: u32,
    server: f64,
    children: f64,
}

impl Snapshot {
    /// The times of process `pid` and of this process's children now.
    pub fn take(pid: u32) -> Result<Self> {
        let (server, _) = times(pid)?;
        let (_, children) = times(std::process::id())?;
        Ok(Self {
            pid,
            server,
            children,
        })
    }

    /// What was used since.
    pub fn used(&self) -> Result<Used> {
        let now = Self::take(self.pid)?;
        Ok(Used {
            server: now.server - self.server,
            children: now.children - self.children,
        })
    }
}

/// (utime + stime, cutime + cstime) of `pid`, in seconds.
fn times(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The fields after the command, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{path}: times are not numbers"))?;
    let [utime, stime, cutime, cstime] = fields[..] else {
        anyhow::bail!("{path}: too few fields");
    };
    let hz = ticks_per_second();
    Ok(((utime + stime) / hz, (cutime + cstime) / hz))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value; it has no
    // preconditions and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}
