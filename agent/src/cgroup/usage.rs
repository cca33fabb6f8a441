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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::fs;

    use super::super::{Cgroups, V1, V2};
    use super::*;

    #[test]
    fn v1_and_v2_usage_are_read_from_their_files() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let path = Path::new("drover/a1");
        for (dir, file, value) in [
            ("cpuacct", "cpuacct.usage", "2500000000\n"),
            ("memory", "memory.usage_in_bytes", "1048576\n"),
        ] {
            fs::create_dir_all(r.join(dir).join(path)).unwrap();
            fs::write(r.join(dir).join(path).join(file), value).unwrap();
        }
        let u = V1::new(r.to_owned()).usage(path).unwrap();
        assert_eq!(u.memory_bytes, 1_048_576);
        assert!((u.cpu_seconds - 2.5).abs() < 1e-9, "{u:?}");

        let unified = r.join("unified");
        fs::create_dir_all(unified.join(path)).unwrap();
        fs::write(
            unified.join(path).join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
        )
        .unwrap();
        fs::write(unified.join(path).join("memory.current"), "4096\n").unwrap();
        let u = V2::new(unified).usage(path).unwrap();
        assert_eq!(u.memory_bytes, 4096);
        assert!((u.cpu_seconds - 1.5).abs() < 1e-9, "{u:?}");
        // A cgroup that is gone is an error naming its file.
        let err = V1::new(r.to_owned())
            .usage(Path::new("drover/gone"))
            .unwrap_err();
        assert!(err.to_string().contains("drover/gone"), "{err}");
    }

    #[test]
    fn v1_tasks_join_cpuacct_only_where_it_is_a_hierarchy_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for c in V1::CONTROLLERS {
            fs::create_dir(r.join(c)).unwrap();
            fs::write(r.join(c).join("cgroup.procs"), "").unwrap();
        }
        let path = Path::new("drover/a1/web");
        let joins = |r: &Path| V1::new(r.to_owned()).join_files(path);
        // No cpuacct hierarchy: the three controllers.
        assert_eq!(joins(r).len(), 3);
        // Mounted with cpu (a link to the same directory): still three.
        std::os::unix::fs::symlink(r.join("cpu"), r.join("cpuacct")).unwrap();
        assert_eq!(joins(r).len(), 3);
        // A hierarchy of its own: the task joins it too.
        fs::remove_file(r.join("cpuacct")).unwrap();
        fs::create_dir(r.join("cpuacct")).unwrap();
        fs::write(r.join("cpuacct/cgroup.procs"), "").unwrap();
        let all = joins(r);
        assert_eq!(all.len(), 4);
        assert!(
            all.contains(&r.join("cpuacct/drover/a1/web/tasks")),
            "{all:?}"
        );
    }
}
