//! What a cgroup has used: CPU time and memory, read for the metrics
//! (`drover_agent_allocation_*`). Each version's files are read by its
//! [`Cgroups::usage`](super::Cgroups::usage).

use std::path::Path;

use super::{cgroupfs, CgroupError};

/// A cgroup's use, its descendants included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time consumed since the cgroup was made, in seconds.
    pub cpu_seconds: f64,
    /// Memory charged now (page cache included), in bytes.
    pub memory_bytes: u64,
}

/// v1: `cpuacct.usage` (nanoseconds) in `cpuacct_dir`,
/// `memory.usage_in_bytes` in `memory_dir`.
pub(super) fn v1(cpuacct_dir: &Path, memory_dir: &Path) -> Result<Usage, CgroupError> {
    let ns = cgroupfs::read_u64(&cpuacct_dir.join("cpuacct.usage"))?;
    Ok(Usage {
        cpu_seconds: ns as f64 / 1e9,
        memory_bytes: cgroupfs::read_u64(&memory_dir.join("memory.usage_in_bytes"))?,
    })
}

/// v2: `usage_usec` of `cpu.stat` and `memory.current` in `dir`.
pub(super) fn v2(dir: &Path) -> Result<Usage, CgroupError> {
    let us = cgroupfs::read_keyed(&dir.join("cpu.stat"), "usage_usec")?;
    Ok(Usage {
        cpu_seconds: us as f64 / 1e6,
        memory_bytes: cgroupfs::read_u64(&dir.join("memory.current"))?,
    })
}
