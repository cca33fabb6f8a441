//! Propagation from a check's verdict to the first DNS answer that shows
//! it, on real agents (`drover dev`, or the multi-host harness).
//!
//! Each instance of the service `prop` is a busybox `httpd` serving its
//! own `/tmp/www` (a tmpfs private to the task) with an http check of
//! `/health`. The bench makes an instance healthy by writing that file
//! through `/proc/<pid>/root` (no `drover exec`, so toggling costs
//! nothing), and sick by removing it. For each change: the file is
//! written (or removed), every server of the instance is asked for
//! `<alloc>.prop.service.<zone>` until the answer holds the instance's
//! address (or is NXDOMAIN), and the clock's start is read from the
//! agent's log: the `health check status changed` line of that
//! allocation with the new status, whose `unix_us` lies between the
//! toggle and the first answer. Both clocks are the machine's realtime
//! clock. Instances run their changes in parallel, one task each.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::Name;

use crate::client::Client;
use crate::propagation::until;
use crate::zone::ZONE;

/// The service every instance registers as.
pub const SERVICE: &str = "prop";

/// How long the agent's verdict line may take to show in its log after
/// the answer it caused.
const LOG_DEADLINE: Duration = Duration::from_secs(5);

/// The job: `count` instances of [`SERVICE`], checked every
/// `interval_ms` over http, one result deciding either way.
pub fn job(name: &str, count: u32, interval_ms: u32) -> String {
    let script = "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && \
                  exec busybox httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    let timeout_ms = interval_ms.saturating_sub(10).max(10);
    format!(
        r#"name = "{name}"
kind = "service"

[[group]]
name = "main"
count = {count}

[[group.task]]
name = "httpd"
command = ["/bin/sh", "-c", {script:?}]
kill_timeout_ms = 200
resources = {{ cpu_millis = 50, memory_mb = 32 }}

[[group.service]]
name = "{SERVICE}"
port = 8080

[[group.service.check]]
type = "http"
path = "/health"
interval_ms = {interval_ms}
timeout_ms = {timeout_ms}
success_before_passing = 1
failures_before_critical = 1
"#
    )
}

/// The health file of allocation `alloc_id` as this host sees it: under
/// `/proc/<pid>/root` of the task's process (found by its environment).
pub fn health_file(alloc_id: &str) -> Result<PathBuf> {
    let want = format!("DROVER_ALLOC_ID={alloc_id}");
    let entries = std::fs::read_dir("/proc").context("listing /proc")?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            continue;
        }
        let www = PathBuf::from(format!("/proc/{pid}/root/tmp/www"));
        if www.join("index.html").is_file() {
            return Ok(www.join("health"));
        }
    }
    bail!("no process of allocation {alloc_id} serves /tmp/www yet")
}

/// An agent's log, read as it grows: the verdicts it logged, by
/// allocation.
pub struct LogTail {
    path: PathBuf,
    state: Mutex<TailState>,
}

#[derive(Default)]
struct TailState {
    offset: u64,
    partial: Vec<u8>,
    /// Allocation -> (status, unix_us) in log order.
    verdicts: HashMap<String, Vec<(String, u64)>>,
}

impl LogTail {
    /// The log at `path`, read from its end (earlier lines are ignored).
    pub fn new(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(TailState {
                offset: len,
                ..TailState::default()
            }),
        })
    }

    /// Reads what was appended since the last call.
    fn refresh(&self, st: &mut TailState) -> Result<()> {
        let mut f = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(st.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        st.offset += buf.len() as u64;
        st.partial.extend_from_slice(&buf);
        while let Some(end) = st.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = st.partial.drain(..=end).collect();
            if let Some((alloc, status, us)) = parse_verdict(&String::from_utf8_lossy(&line)) {
                st.verdicts.entry(alloc).or_default().push((status, us));
            }
        }
        Ok(())
    }

    /// When `alloc`'s checks last turned `status` within `[after,
    /// before]`, waiting up to [`LOG_DEADLINE`] for the line.
    pub async fn verdict(
        &self,
        alloc: &str,
        status: &str,
        after: SystemTime,
        before: SystemTime,
    ) -> Result<SystemTime> {
        let (lo, hi) = (unix_us(after), unix_us(before));
        let deadline = tokio::time::Instant::now() + LOG_DEADLINE;
        loop {
            {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                self.refresh(&mut st)?;
                let list = st.verdicts.entry(alloc.to_owned()).or_default();
                let found = list
                    .iter()
                    .filter(|(s, us)| s == status && (lo..=hi).contains(us))
                    .map(|(_, us)| *us)
                    .max();
                list.retain(|(_, us)| *us >= lo);
                if let Some(us) = found {
                    return Ok(UNIX_EPOCH + Duration::from_micros(us));
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{}: no `health check status changed` to {status} for {alloc} between \
                     {lo} and {hi} µs",
                    self.path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// (alloc_id, status, unix_us) of a `health check status changed` line.
fn parse_verdict(line: &str) -> Option<(String, String, u64)> {
    if !line.contains("health check status changed") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
    };
    Some((
        field("alloc_id")?.to_owned(),
        field("status")?.to_owned(),
        field("unix_us")?.parse().ok()?,
    ))
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One instance and where its changes are watched.
pub struct Instance {
    /// Its allocation.
    pub alloc_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its health file on this host ([`health_file`]).
    pub health: PathBuf,
    /// The log of the agent that runs its checks.
    pub log: Arc<LogTail>,
    /// The servers to ask, by label: a UDP socket (made in the right
    /// network namespace) and the server's address.
    pub servers: Vec<(String, std::net::UdpSocket, SocketAddr)>,
}

/// One change seen by one server.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The server's label.
    pub server: String,
    /// Appeared (passing) or went away (critical).
    pub appear: bool,
    /// From the verdict to the first answer showing it.
    pub took: Duration,
}

/// Runs `cycles` appear/disappear changes of `inst`, asking each server
/// every `poll` (zero: as fast as answers come).
pub async fn changes(inst: Instance, cycles: u32, poll: Duration) -> Result<Vec<Sample>> {
    let name = Name::from_ascii(format!("{}.{SERVICE}.service.{ZONE}.", inst.alloc_id))?;
    let mut clients = Vec::new();
    for (label, socket, addr) in inst.servers {
        clients.push((label, Client::from_std(socket, addr)?));
    }
    let ip = IpAddr::V4(inst.ip);
    let mut out = Vec::new();
    for _ in 0..cycles {
        for appear in [true, false] {
            let toggled = SystemTime::now();
            if appear {
                std::fs::write(&inst.health, "ok\n")
                    .with_context(|| format!("writing {}", inst.health.display()))?;
            } else {
                std::fs::remove_file(&inst.health)
                    .with_context(|| format!("removing {}", inst.health.display()))?;
            }
            let start = tokio::time::Instant::now();
            let seen = futures::future::try_join_all(clients.iter_mut().map(|(_, c)| {
                let name = &name;
                async move {
                    until(c, name, start, poll, |r| {
                        if appear {
                            r.0 == ResponseCode::NoError && r.1.contains(&ip)
                        } else {
                            r.0 == ResponseCode::NXDomain
                        }
                    })
                    .await?;
                    Ok::<_, anyhow::Error>(SystemTime::now())
                }
            }))
            .await
            .with_context(|| format!("{} never {}", inst.alloc_id, verb(appear)))?;
            let first = seen.iter().min().copied().unwrap_or(toggled);
            let status = if appear { "passing" } else { "critical" };
            let verdict = inst
                .log
                .verdict(&inst.alloc_id, status, toggled, first)
                .await?;
            for ((label, _), at) in clients.iter().zip(&seen) {
                out.push(Sample {
                    server: label.clone(),
                    appear,
                    took: at.duration_since(verdict).unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

fn verb(appear: bool) -> &'static str {
    if appear {
        "appeared"
    } else {
        "went away"
    }
}

/// Runs every instance's changes at once, `changes` of each direction in
/// all (rounded up to a multiple of the instances).
pub async fn run(
    instances: Vec<Instance>,
    changes_total: u32,
    poll: Duration,
) -> Result<Vec<Sample>> {
    let n = u32::try_from(instances.len()).unwrap_or(u32::MAX).max(1);
    let cycles = changes_total.div_ceil(n);
    let tasks: Vec<_> = instances
        .into_iter()
        .map(|inst| tokio::spawn(changes(inst, cycles, poll)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("an instance's task panicked")??);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::parse_verdict;

    #[test]
    fn a_verdict_line_is_parsed_and_other_lines_are_not() {
        let line = "2025-01-01T00:00:00.123456Z  INFO drover_agent::checks::runner: health check \
                    status changed alloc_id=ab12 service=prop check=0 kind=http status=passing \
                    unix_us=1735689600123456 output=HTTP 200 status=x";
        assert_eq!(
            parse_verdict(line),
            Some(("ab12".into(), "passing".into(), 1_735_689_600_123_456))
        );
        assert_eq!(parse_verdict("INFO something else alloc_id=ab12"), None);
    }
}
