//! What the `host` root filesystem shows a task, and what it never shows.
//!
//! By default a task with `rootfs = { type = "host" }` sees only what
//! programs need to run: [`HOST_VIEW_DIRS`] (read-only), `/etc` without
//! the node's secrets ([`HIDDEN_PATHS`], and every entry below `/etc` that
//! other users may not read), a read-only `/sys`, and its own `/proc`,
//! `/dev`, `/tmp` and `/run`. Never the node's data or state directories,
//! its certificates, `/root`, `/home`, `/srv` or `/var/lib`: the operator
//! adds what tasks need in the node policy:
//!
//! ```toml
//! [host_root]
//! # Shown read-only, or writable with `writable = true`.
//! add = ["/opt/tools", { path = "/srv/shared", writable = true }]
//! # Hidden besides the defaults (a file shows empty, a directory empty).
//! hide = ["/etc/myapp/token"]
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::is_normal_absolute;

/// The host's top-level directories every `host` root shows, read-only,
/// when the host has them (a symlink, as `/bin -> usr/bin` on a merged-usr
/// system, is shown as the same symlink).
pub const HOST_VIEW_DIRS: [&str; 8] = [
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Paths every `host` root hides (when the host has them), besides every
/// entry of `/etc` that other users may not read: password hashes, host
/// keys, private TLS keys, Drover's and etcd's own configuration and
/// certificates.
pub const HIDDEN_PATHS: [&str; 11] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/drover",
    "/etc/etcd",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/credstore",
];

/// Paths that a policy may never add: the root itself and the host's
/// homes and state, whatever else they hold.
pub const NEVER_ADDED: [&str; 5] = ["/", "/root", "/home", "/var/lib", "/var"];

/// The node policy's additions to the `host` root (`[host_root]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostRootPolicy {
    /// Host paths (directories or files) shown at the same place.
    pub add: Vec<HostRootPath>,
    /// Host paths hidden besides [`HIDDEN_PATHS`].
    pub hide: Vec<PathBuf>,
}

/// One added path: `"/opt"` (read-only) or `{ path = "/opt", writable = true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HostRootPathRepr", into = "HostRootPathRepr")]
pub struct HostRootPath {
    /// The absolute host path, shown at the same path.
    pub path: PathBuf,
    /// Whether the task may write through it (its permissions permitting).
    pub writable: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum HostRootPathRepr {
    Path(PathBuf),
    Table(HostRootPathTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostRootPathTable {
    path: PathBuf,
    #[serde(default)]
    writable: bool,
}

impl From<HostRootPathRepr> for HostRootPath {
    fn from(r: HostRootPathRepr) -> Self {
        match r {
            HostRootPathRepr::Path(path) => HostRootPath {
                path,
                writable: false,
            },
            HostRootPathRepr::Table(HostRootPathTable { path, writable }) => {
                HostRootPath { path, writable }
            }
        }
    }
}

impl From<HostRootPath> for HostRootPathRepr {
    fn from(p: HostRootPath) -> Self {
        if p.writable {
            HostRootPathRepr::Table(HostRootPathTable {
                path: p.path,
                writable: true,
            })
        } else {
            HostRootPathRepr::Path(p.path)
        }
    }
}

impl HostRootPolicy {
    /// Checks every path: absolute and normal; an added path is none of
    /// [`NEVER_ADDED`] nor inside `/root` or `/home`.
    pub fn check(&self) -> Result<(), String> {
        for add in &self.add {
            let p = &add.path;
            if !is_normal_absolute(p) {
                return Err(format!(
                    "host_root.add: {} must be an absolute path without `..` or `.`",
                    p.display()
                ));
            }
            if NEVER_ADDED.iter().any(|n| p == Path::new(n))
                || p.starts_with("/root")
                || p.starts_with("/home")
            {
                return Err(format!(
                    "host_root.add: {} would show the node's homes or state to every task; \
                     add the directories tasks need below it instead",
                    p.display()
                ));
            }
        }
        for p in &self.hide {
            if !is_normal_absolute(p) || p == Path::new("/") {
                return Err(format!(
                    "host_root.hide: {} must be an absolute path (not /) without `..` or `.`",
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// Whether a task with a `host` root sees `path` (absolute, normal)
    /// from the host: below one of [`HOST_VIEW_DIRS`] or the added paths,
    /// and not hidden by name. (Entries of `/etc` that other users may not
    /// read are hidden too, which only the supervisor's walk finds.)
    pub fn shows(&self, path: &Path) -> bool {
        let shown = HOST_VIEW_DIRS.iter().any(|d| path.starts_with(d))
            || self.add.iter().any(|a| path.starts_with(&a.path));
        let hidden = HIDDEN_PATHS.iter().any(|h| path.starts_with(h))
            || self.hide.iter().any(|h| path.starts_with(h));
        shown && !hidden
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let p: HostRootPolicy = toml::from_str(
            "add = [\"/opt\", { path = \"/srv/shared\", writable = true }]\nhide = [\"/etc/x\"]",
        )
        .unwrap();
        assert_eq!(
            p.add,
            vec![
                HostRootPath {
                    path: "/opt".into(),
                    writable: false
                },
                HostRootPath {
                    path: "/srv/shared".into(),
                    writable: true
                }
            ]
        );
        p.check().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<HostRootPolicy>(&json).unwrap(), p);
        assert!(toml::from_str::<HostRootPolicy>("add = [{ path = \"/a\", rw = 1 }]").is_err());
    }

    #[test]
    fn refuses_paths_that_would_show_the_node() {
        for bad in [
            "/",
            "/root",
            "/home/alice",
            "/var/lib",
            "relative",
            "/opt/../etc",
        ] {
            let p = HostRootPolicy {
                add: vec![HostRootPath {
                    path: bad.into(),
                    writable: false,
                }],
                hide: vec![],
            };
            assert!(p.check().is_err(), "{bad} must be refused");
        }
        let p = HostRootPolicy {
            add: vec![],
            hide: vec!["/".into()],
        };
        assert!(p.check().unwrap_err().contains("host_root.hide"));
    }

    #[test]
    fn shows_program_dirs_and_additions_but_no_secrets() {
        let p = HostRootPolicy {
            add: vec![HostRootPath {
                path: "/opt/tools".into(),
                writable: false,
            }],
            hide: vec!["/etc/app/token".into()],
        };
        for shown in ["/usr/bin/env", "/etc/passwd", "/opt/tools/x", "/bin"] {
            assert!(p.shows(Path::new(shown)), "{shown}");
        }
        for hidden in [
            "/etc/shadow",
            "/etc/ssl/private/k.pem",
            "/etc/drover/pki/ca-key.pem",
            "/etc/app/token",
            "/var/lib/drover",
            "/root",
            "/home",
            "/srv",
            "/opt/other",
            "/etcx",
        ] {
            assert!(!p.shows(Path::new(hidden)), "{hidden}");
        }
    }
}
