//! The node itself: its identity (the node id kept in the data
//! directory), its capacity, and the attributes it registers with for
//! placement constraints.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why the node's identity could not be established.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    /// `<data_dir>/node-id` holds something that is not a node id.
    #[error("{} holds {id:?}, which is not a valid node id (a DNS label); fix or remove the file", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What it holds.
        id: String,
    },
    /// The agent certificate names something that is not a node id.
    #[error(
        "the agent certificate is bound to {id:?}, which is not a valid node id (a DNS label)"
    )]
    BadCertificate {
        /// What the certificate names.
        id: String,
    },
    /// The data directory belongs to another node than the certificate.
    #[error("the agent certificate is for node {want:?}, but {} says this node is {have:?}: use that node's certificate (drover tls agent --node {have}), or another --data-dir", path.display())]
    OtherNode {
        /// The certificate's node.
        want: String,
        /// The file.
        path: PathBuf,
        /// The node the data directory belongs to.
        have: String,
    },
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Reads the node id kept in `<data_dir>/node-id`, creating it on first
/// start from the host name and a random suffix. The id is a DNS label
/// (it becomes `<id>.node.drover.internal`) and never changes afterwards.
pub fn node_id(data_dir: &Path, hostname: &str) -> Result<String, NodeIdError> {
    secure_data_dir(data_dir)?;
    let path = data_dir.join("node-id");
    match fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            if is_label(&id) {
                return Ok(id);
            }
            Err(NodeIdError::BadFile { path, id })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut base: String = hostname
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            base.truncate(40);
            let base = base.trim_matches('-');
            let base = if base.is_empty() { "node" } else { base };
            let suffix: u32 = rand::random();
            let id = format!("{base}-{:06x}", suffix & 0xff_ffff);
            write_node_id(data_dir, &id)?;
            Ok(id)
        }
        Err(source) => Err(NodeIdError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// The node id an agent certificate is bound to, `want`: kept in
/// `<data_dir>/node-id` (written when there is none yet); an error naming
/// both when the data directory already belongs to another node.
pub fn claim_node_id(data_dir: &Path, want: &str) -> Result<String, NodeIdError> {
    if !is_label(want) {
        return Err(NodeIdError::BadCertificate {
            id: want.to_owned(),
        });
    }
    secure_data_dir(data_dir)?;
    let path = data_dir.join("node-id");
    match fs::read_to_string(&path) {
        Ok(s) if s.trim() == want => Ok(want.to_owned()),
        Ok(s) => Err(NodeIdError::OtherNode {
            want: want.to_owned(),
            path,
            have: s.trim().to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_node_id(data_dir, want)?;
            Ok(want.to_owned())
        }
        Err(source) => Err(NodeIdError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// Writes `<data_dir>/node-id`.
fn write_node_id(data_dir: &Path, id: &str) -> Result<(), NodeIdError> {
    secure_data_dir(data_dir)?;
    let path = data_dir.join("node-id");
    fs::write(&path, format!("{id}\n"))
        .and_then(|()| {
            fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(crate::private_fs::PRIVATE_FILE_MODE),
            )
        })
        .map_err(|source| NodeIdError::Io {
            op: "write",
            path,
            source,
        })
}

/// Creates the agent's data directory `0700` (or makes an existing one
/// so): it holds every task's spec, environment and logs.
fn secure_data_dir(data_dir: &Path) -> Result<(), NodeIdError> {
    crate::private_fs::private_dir(data_dir).map_err(|source| NodeIdError::Io {
        op: "create directory (0700)",
        path: data_dir.to_path_buf(),
        source,
    })
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// CPU capacity in millicores: online CPUs × 1000.
pub fn cpu_millis() -> i64 {
    std::thread::available_parallelism()
        .map(|n| i64::try_from(n.get()).unwrap_or(1) * 1000)
        .unwrap_or(1000)
}

/// Memory capacity in MiB, from `MemTotal` in `<proc_root>/meminfo`
/// (1024 when it cannot be read).
pub fn memory_mb(proc_root: &Path) -> i64 {
    mem_total_mb(proc_root).unwrap_or(1024)
}

/// `MemTotal` in `<proc_root>/meminfo`, MiB.
fn mem_total_mb(proc_root: &Path) -> Option<i64> {
    let text = fs::read_to_string(proc_root.join("meminfo")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb / 1024)
}

/// The attributes the node registers with (`Node.attributes`), for
/// placement constraints: `hostname`, `os`, `arch`, `kernel.version`
/// (`<proc_root>/sys/kernel/osrelease`), `cpu.count`, `memory.mb`
/// (`<proc_root>/meminfo`) and `drover.version`. One that cannot be read
/// is left out rather than guessed.
pub fn attributes(proc_root: &Path, hostname: &str) -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    attributes_with(proc_root, hostname, cpus)
}

fn attributes_with(proc_root: &Path, hostname: &str, cpus: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        out.insert(k.to_owned(), v);
    };
    set("hostname", hostname.to_owned());
    set("os", std::env::consts::OS.to_owned());
    set("arch", std::env::consts::ARCH.to_owned());
    set("cpu.count", cpus.to_string());
    set("drover.version", env!("CARGO_PKG_VERSION").to_owned());
    let osrelease = proc_root.join("sys/kernel/osrelease");
    match fs::read_to_string(&osrelease) {
        Ok(v) if !v.trim().is_empty() => set("kernel.version", v.trim().to_owned()),
        Ok(_) => tracing::warn!(path = %osrelease.display(), "empty kernel release"),
        Err(error) => {
            tracing::warn!(path = %osrelease.display(), %error, "cannot read the kernel release")
        }
    }
    match mem_total_mb(proc_root) {
        Some(mb) => set("memory.mb", mb.to_string()),
        None => tracing::warn!(path = %proc_root.join("meminfo").display(), "cannot read MemTotal"),
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_certificate_names_the_node_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // No identity yet: the certificate's becomes the node's.
        assert_eq!(claim_node_id(dir.path(), "node-a").unwrap(), "node-a");
        assert_eq!(node_id(dir.path(), "host").unwrap(), "node-a");
        assert_eq!(claim_node_id(dir.path(), "node-a").unwrap(), "node-a");
        // A data directory that belongs to another node is not taken over.
        let err = claim_node_id(dir.path(), "node-b").unwrap_err().to_string();
        assert!(
            err.contains("\"node-b\"") && err.contains("\"node-a\""),
            "{err}"
        );
        assert!(claim_node_id(dir.path(), "Not_A_Label").is_err());
    }

    #[test]
    fn node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_id(dir.path(), "Web_01.example.com").unwrap();
        assert!(a.starts_with("web-01-example-com-"), "{a}");
        assert!(is_label(&a));
        assert_eq!(node_id(dir.path(), "other").unwrap(), a);
    }

    #[test]
    fn a_corrupt_node_id_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node-id"), "Not A Label").unwrap();
        let e = node_id(dir.path(), "h").unwrap_err().to_string();
        assert!(e.contains("node-id"), "{e}");
    }

    #[test]
    fn reads_memory_from_meminfo() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("meminfo"), "MemTotal:       2048000 kB\n").unwrap();
        assert_eq!(memory_mb(dir.path()), 2000);
    }

    #[test]
    fn attributes_come_from_the_host_and_proc() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        fs::write(dir.path().join("sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        fs::write(
            dir.path().join("meminfo"),
            "MemFree: 1 kB\nMemTotal:  4096000 kB\n",
        )
        .unwrap();
        let a = attributes_with(dir.path(), "web-1", 8);
        let get = |k: &str| a.get(k).map(String::as_str);
        assert_eq!(get("hostname"), Some("web-1"));
        assert_eq!(get("os"), Some(std::env::consts::OS));
        assert_eq!(get("arch"), Some(std::env::consts::ARCH));
        assert_eq!(get("kernel.version"), Some("6.1.0-test"));
        assert_eq!(get("cpu.count"), Some("8"));
        assert_eq!(get("memory.mb"), Some("4000"));
        assert_eq!(get("drover.version"), Some(env!("CARGO_PKG_VERSION")));
        // What cannot be read is left out, not guessed.
        let empty = tempfile::tempdir().unwrap();
        let a = attributes_with(empty.path(), "h", 1);
        assert!(
            !a.contains_key("kernel.version") && !a.contains_key("memory.mb"),
            "{a:?}"
        );
        assert_eq!(a.len(), 5);
    }
}
