//! Node policy: what any scheduler may ask of this node.
//!
//! The scheduler is trusted to place work, not to decide what a node
//! exposes. The operator bounds that here, in a TOML file given with
//! `drover agent --policy FILE` (or `drover dev --policy FILE`); an
//! assignment that asks for more is refused on the node, before anything
//! starts, with a message naming the setting that refused it.
//! The container runtime enforces it (`Runtime::with_policy`): rootfs
//! dirs and images are checked before an image is read, bind volume
//! sources on their canonical path (a symlink under an allowed path that
//! leads out of it is refused), a task's uid and gid against the user
//! namespace range.
//!
//! ```toml
//! # Host paths that volumes may bind (a path or anything under it).
//! allowed_host_paths = ["/srv/data"]
//! # Directories that `rootfs = { type = "dir" }` may name (or be under).
//! allowed_rootfs_dirs = ["/var/lib/drover/rootfs"]
//! # OCI image layouts (directories or tars) that tasks may name, and
//! # registry/repository prefixes of images they may pull (`registries`).
//! allowed_images = ["/var/lib/drover/images", "registry.internal:5000/team/"]
//! # Whether a group may ask for `network = "host"`.
//! allow_host_network = false
//! # What the `host` root shows besides /bin, /sbin, /usr, /lib*, /etc
//! # (see `host_root`): added read-only unless writable; more to hide.
//! [host_root]
//! add = ["/opt/tools", { path = "/srv/shared", writable = true }]
//! hide = ["/etc/myapp/token"]
//! # User namespaces: container uids/gids 0..size map to host_base..
//! [user_namespace]
//! enabled = true
//! host_base = 1000000
//! size = 65536
//! # Seccomp (see `crate::seccomp`): an OCI profile instead of the
//! # built-in one, and whether a task may ask for `seccomp = "unconfined"`.
//! [seccomp]
//! profile = "/etc/drover/seccomp.json"
//! allow_unconfined = false
//! # How many log streams and exec sessions the node serves at once
//! # (see `sessions`).
//! [sessions]
//! max_log_streams = 128
//! max_exec_sessions = 64
//! # The image cache: how long unused layers stay, and its budget (see
//! # `images`).
//! [images]
//! gc_unused_after = "24h"
//! max_cache_mb = 10240
//! ```

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

pub mod host_root;
pub mod images;
pub mod registries;
pub mod sessions;
use crate::seccomp::SeccompPolicy;
pub use host_root::{HostRootPath, HostRootPolicy};
pub use images::ImagePolicy;
pub use registries::RegistryPolicy;
pub use sessions::SessionPolicy;

/// The node's bounds on assignments.
///
/// [`NodePolicy::default`] is what `drover dev` without `--policy` (a
/// single-user machine) and the runtime library enforce: any rootfs
/// directory and image. A policy file ([`NodePolicy::load`]) and
/// `drover agent` without one ([`NodePolicy::node_default`]) allow only the
/// rootfs directories and images they list: a `dir` rootfs is mounted
/// idmapped, so a task would see host-root-owned files (`/etc/shadow`, the
/// agent's keys) as its own root's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodePolicy {
    /// Host paths (absolute) that bind volumes may name, or be under.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Directories a `dir` rootfs may name, or be under; empty allows none
    /// (any with [`NodePolicy::any_rootfs`]).
    pub allowed_rootfs_dirs: Vec<PathBuf>,
    /// OCI image layouts a task may name, or be under (absolute paths),
    /// and registry/repository prefixes of images it may pull (the other
    /// entries, see [`registries`]); empty allows none (any with
    /// [`NodePolicy::any_rootfs`]).
    pub allowed_images: Vec<PathBuf>,
    /// Whether a group may use the node's own network namespace.
    pub allow_host_network: bool,
    /// The user namespace every task gets.
    pub user_namespace: UserNamespacePolicy,
    /// What the `host` root filesystem shows besides its minimal default.
    pub host_root: HostRootPolicy,
    /// The seccomp profile every task gets, and whether a task may ask
    /// for none.
    pub seccomp: SeccompPolicy,
    /// How many log streams and exec sessions the node serves at once.
    pub sessions: SessionPolicy,
    /// How images are pulled from registries.
    pub registries: RegistryPolicy,
    /// How long unused image layers stay cached, and the cache's budget.
    pub images: ImagePolicy,
    /// An empty `allowed_rootfs_dirs` or `allowed_images` allows any
    /// directory (but `/`) or image instead of none. Never read from a
    /// policy file.
    #[serde(skip)]
    pub any_rootfs: bool,
}

impl Default for NodePolicy {
    fn default() -> Self {
        NodePolicy {
            allowed_host_paths: Vec::new(),
            allowed_rootfs_dirs: Vec::new(),
            allowed_images: Vec::new(),
            allow_host_network: false,
            user_namespace: UserNamespacePolicy::default(),
            host_root: HostRootPolicy::default(),
            seccomp: SeccompPolicy::default(),
            sessions: SessionPolicy::default(),
            registries: RegistryPolicy::default(),
            images: ImagePolicy::default(),
            any_rootfs: true,
        }
    }
}

/// How tasks' uids and gids map to the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserNamespacePolicy {
    /// Off: tasks run as the host's uid 0 (hardened by capabilities and
    /// `no_new_privs` only).
    pub enabled: bool,
    /// First host uid (and gid) of the mapped range.
    pub host_base: u32,
    /// Number of ids mapped; container ids `0..size` are valid.
    pub size: u32,
}

/// Default first host id of the task range (well above normal users).
pub const DEFAULT_USERNS_BASE: u32 = 1_000_000;
/// Default number of ids mapped (container ids 0..65535).
pub const DEFAULT_USERNS_SIZE: u32 = 65_536;

impl Default for UserNamespacePolicy {
    fn default() -> Self {
        UserNamespacePolicy {
            enabled: true,
            host_base: DEFAULT_USERNS_BASE,
            size: DEFAULT_USERNS_SIZE,
        }
    }
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read node policy {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a policy.
    #[error("node policy {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, field).
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("node policy {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl NodePolicy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<NodePolicy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut policy: NodePolicy = toml::from_str(&text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        policy.any_rootfs = false;
        policy.check().map_err(|message| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        policy
            .seccomp
            .load()
            .map_err(|message| PolicyError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(policy)
    }

    /// What `drover agent` enforces without a policy file: no bind volume,
    /// no rootfs directory, no image, no host network; user namespaces on.
    pub fn node_default() -> NodePolicy {
        NodePolicy {
            any_rootfs: false,
            ..NodePolicy::default()
        }
    }

    /// Checks that every setting can work: absolute, normal paths; a user
    /// namespace range that is not empty, does not include host uid 0 and
    /// does not wrap.
    pub fn check(&self) -> Result<(), String> {
        for (name, list) in [
            ("allowed_host_paths", &self.allowed_host_paths),
            ("allowed_rootfs_dirs", &self.allowed_rootfs_dirs),
            ("allowed_images", &self.allowed_images),
        ] {
            for p in list {
                if name == "allowed_images" && !p.is_absolute() {
                    // A registry prefix: a valid reference name.
                    let s = p.to_string_lossy();
                    drover_model::image_ref::ImageRef::parse(s.trim_end_matches('/'))
                        .map_err(|e| format!("allowed_images: {s:?} is neither an absolute path nor a registry prefix: {e}"))?;
                    continue;
                }
                if !is_normal_absolute(p) {
                    return Err(format!(
                        "{name}: {} must be an absolute path without `..` or `.`",
                        p.display()
                    ));
                }
            }
        }
        self.host_root.check()?;
        self.sessions.check()?;
        self.registries.check()?;
        self.images.check()?;
        let ns = &self.user_namespace;
        if ns.enabled {
            if ns.size == 0 {
                return Err("user_namespace.size must be at least 1".into());
            }
            if ns.host_base == 0 {
                return Err(
                    "user_namespace.host_base must not be 0: root inside would be root outside"
                        .into(),
                );
            }
            if ns.host_base.checked_add(ns.size).is_none() {
                return Err(format!(
                    "user_namespace.host_base {} + size {} passes the largest uid",
                    ns.host_base, ns.size
                ));
            }
        }
        Ok(())
    }

    /// Whether `path` is one of `allowed` or lies under one of them.
    /// `path` must already be absolute and normal (no `..`).
    pub fn allows(allowed: &[PathBuf], path: &Path) -> bool {
        is_normal_absolute(path) && allowed.iter().any(|a| path.starts_with(a))
    }
}

/// Absolute, and made only of normal components (no `.` or `..`).
pub fn is_normal_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parse() {
        let p: NodePolicy = toml::from_str("").unwrap();
        assert_eq!(p, NodePolicy::default());
        assert!(p.user_namespace.enabled);
        let p: NodePolicy =
            toml::from_str("allowed_host_paths = [\"/srv\"]\n[user_namespace]\nenabled = false\n")
                .unwrap();
        assert!(!p.user_namespace.enabled);
        assert!(NodePolicy::allows(
            &p.allowed_host_paths,
            Path::new("/srv/a")
        ));
        assert!(!NodePolicy::allows(
            &p.allowed_host_paths,
            Path::new("/srvx")
        ));
        assert!(!NodePolicy::allows(
            &p.allowed_host_paths,
            Path::new("/srv/../etc")
        ));
        assert!(toml::from_str::<NodePolicy>("bogus = 1").is_err());
    }

    #[test]
    fn check_refuses_bad_ranges_and_paths() {
        let mut p = NodePolicy::default();
        p.user_namespace.host_base = 0;
        assert!(p.check().unwrap_err().contains("host_base"));
        let mut p = NodePolicy::default();
        p.user_namespace.host_base = u32::MAX;
        assert!(p.check().unwrap_err().contains("passes"));
        let p = NodePolicy {
            allowed_host_paths: vec![PathBuf::from("relative")],
            ..Default::default()
        };
        assert!(p.check().unwrap_err().contains("allowed_host_paths"));
    }
}
