//! Who the task runs as: the user namespace every task gets by default
//! ([`IdMap`]: container ids `0..size` are host ids `host_base..`), the
//! task's user and group ([`RunAs`], from `"uid"`, `"uid:gid"`, `"name"` or
//! `"name:group"` looked up in the task's own `/etc/passwd` and
//! `/etc/group`), and the creation of the namespace itself.
//!
//! The user namespace is made by a short-lived helper process
//! ([`create_user_namespace`]) before the supervisor unshares anything
//! else: the supervisor writes the helper's `uid_map` and `gid_map`, keeps
//! `/proc/<helper>/ns/user` open and lets the helper exit. The task's
//! child joins it with `setns(2)` as its very last step before exec, after
//! every mount, `sethostname` and cgroup write: the mount, PID, UTS, IPC,
//! network and cgroup namespaces stay owned by the host's user namespace,
//! so root inside has no capability over any of them. This needs no
//! handshake between the forked child and the supervisor (which
//! `std::process::Command::spawn` could not offer: it returns only after
//! the exec), and the same descriptor serves the idmapped lower layers of
//! the root filesystem (see `rootfs::prepare`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors parsing and resolving a task's `user` setting and creating its
/// user namespace. The former name the setting (or the name looked up);
/// the latter the syscall or `/proc` file involved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The user or group part of the setting is empty.
    #[error("user {setting:?}: an empty user or group")]
    Empty {
        /// The `user` setting.
        setting: String,
    },
    /// A numeric id over `u32`.
    #[error("user {setting:?}: id {id} is larger than 4294967295")]
    IdTooLarge {
        /// The `user` setting.
        setting: String,
        /// The digits given.
        id: String,
    },
    /// Neither a number nor a valid name.
    #[error(
        "user {setting:?}: {name:?} is neither a number nor a user/group name ([A-Za-z0-9_.-], 1-32)"
    )]
    BadName {
        /// The `user` setting.
        setting: String,
        /// The offending part.
        name: String,
    },
    /// A user name missing from the task's `/etc/passwd`.
    #[error("user {name:?} is not in the task's /etc/passwd")]
    UnknownUser {
        /// The name looked up.
        name: String,
    },
    /// A user whose `/etc/passwd` entry has a non-numeric uid.
    #[error("user {name:?}: bad uid {uid:?} in /etc/passwd")]
    BadUid {
        /// The name looked up.
        name: String,
        /// The uid field found.
        uid: String,
    },
    /// A group name missing from the task's `/etc/group`.
    #[error("group {name:?} is not in the task's /etc/group")]
    UnknownGroup {
        /// The name looked up.
        name: String,
    },
    /// A uid or gid outside the node's user namespace mapping.
    #[error(
        "user {user:?}: {what} {id} is outside the mapped range 0..{size} of the node's user \
         namespace (user_namespace.size = {size})"
    )]
    Unmapped {
        /// The `user` setting.
        user: String,
        /// "uid" or "gid".
        what: &'static str,
        /// The id, as the task sees it.
        id: u32,
        /// How many ids are mapped.
        size: u32,
    },
    /// `pipe2` for the namespace helper failed.
    #[error("pipe2 for the user namespace helper: {0}")]
    Pipe(#[source] nix::errno::Errno),
    /// `clone(CLONE_NEWUSER)` failed.
    #[error("clone(CLONE_NEWUSER) for the user namespace helper: {0}")]
    Clone(#[source] io::Error),
    /// `clone` returned something that is not a pid.
    #[error("clone returned pid {0}")]
    ClonePid(libc::c_long),
    /// Writing the helper's `uid_map` or `gid_map` failed.
    #[error("write {line:?} to {}: {source}", path.display())]
    WriteIdMap {
        /// The map file.
        path: PathBuf,
        /// The line written.
        line: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening the helper's `ns/user` failed.
    #[error("open {}: {source}", path.display())]
    OpenNamespace {
        /// `/proc/<helper>/ns/user`.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A task's user namespace mapping, the same for uids and gids: container
/// ids `0..size` are host ids `host_base..host_base + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMap {
    /// Host id of container id 0.
    pub host_base: u32,
    /// Number of ids mapped.
    pub size: u32,
}

impl IdMap {
    /// The host id of container id `id`, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.size)
            .then(|| self.host_base.checked_add(id))
            .flatten()
    }

    /// The line written to `uid_map` and `gid_map`.
    fn line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }
}

/// The numeric user and group the task runs as, in its user namespace
/// (on the host when the node runs tasks without one). Supplementary
/// groups are always cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl RunAs {
    /// `(uid, gid)` as host ids under `map` (unchanged without one);
    /// `None` when either is outside the mapped range.
    pub fn on_host(&self, map: Option<&IdMap>) -> Option<(u32, u32)> {
        match map {
            None => Some((self.uid, self.gid)),
            Some(map) => Some((map.to_host(self.uid)?, map.to_host(self.gid)?)),
        }
    }
}

/// Checks that both ids of `run_as` (the task's view) are mapped by `map`;
/// `user` is the setting they came from, for the message.
pub(crate) fn check_mapped(
    user: &str,
    run_as: RunAs,
    map: Option<&IdMap>,
) -> Result<(), IdentityError> {
    let Some(map) = map else {
        return Ok(());
    };
    for (what, id) in [("uid", run_as.uid), ("gid", run_as.gid)] {
        if map.to_host(id).is_none() {
            return Err(IdentityError::Unmapped {
                user: user.to_owned(),
                what,
                id,
                size: map.size,
            });
        }
    }
    Ok(())
}

/// Resolves a `user` setting against the `/etc/passwd` and `/etc/group`
/// inside `root` (a running task's `/proc/<pid>/root`; every path
/// component resolved inside it) and checks its ids against `map`.
pub(crate) fn resolve_user_in_root(
    user: &str,
    root: &Path,
    map: Option<&IdMap>,
) -> Result<RunAs, IdentityError> {
    let parsed = UserSpec::parse(user)?;
    let read = |file: &str| {
        parsed
            .needs_lookup()
            .then(|| super::rootfs::read_in_root(root, Path::new(file)))
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let run_as = parsed.resolve(
        read("/etc/passwd").as_deref(),
        read("/etc/group").as_deref(),
    )?;
    check_mapped(user, run_as, map)?;
    Ok(run_as)
}

/// A parsed `user` setting, before names are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserSpec {
    user: IdOrName,
    group: Option<IdOrName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdOrName {
    Id(u32),
    Name(String),
}

impl IdOrName {
    /// Parses `s`, one part of the `user` setting `setting`.
    fn parse(s: &str, setting: &str) -> Result<Self, IdentityError> {
        if s.is_empty() {
            return Err(IdentityError::Empty {
                setting: setting.to_owned(),
            });
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(IdOrName::Id)
                .map_err(|_| IdentityError::IdTooLarge {
                    setting: setting.to_owned(),
                    id: s.to_owned(),
                });
        }
        // Names as useradd accepts them (plus '.'): nothing that could
        // confuse the passwd format.
        if s.len() > 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(IdentityError::BadName {
                setting: setting.to_owned(),
                name: s.to_owned(),
            });
        }
        Ok(IdOrName::Name(s.to_owned()))
    }
}

impl UserSpec {
    /// Parses `"uid"`, `"uid:gid"`, `"name"` or `"name:group"` (a number
    /// and a name may be mixed).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        Ok(UserSpec {
            user: IdOrName::parse(user, s)?,
            group: group.map(|g| IdOrName::parse(g, s)).transpose()?,
        })
    }

    /// Whether a name must be looked up (the rootfs' `/etc/passwd` or
    /// `/etc/group` is needed).
    pub fn needs_lookup(&self) -> bool {
        matches!(self.user, IdOrName::Name(_))
            || matches!(self.group, Some(IdOrName::Name(_)))
            // A bare uid takes its primary group from passwd when listed.
            || self.group.is_none()
    }

    /// Resolves names with `passwd` and `group` (the contents of the
    /// task's `/etc/passwd` and `/etc/group`, `None` when missing). A bare
    /// uid or name takes its primary group from `passwd`; a uid not listed
    /// there gets gid 0, as Docker does.
    pub fn resolve(
        &self,
        passwd: Option<&str>,
        group: Option<&str>,
    ) -> Result<RunAs, IdentityError> {
        let entry = |pred: &dyn Fn(&[&str]) -> bool| {
            passwd.and_then(|text| {
                text.lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 4 && pred(f))
            })
        };
        let (uid, primary) = match &self.user {
            IdOrName::Id(uid) => {
                let primary = entry(&|f| f[2].parse() == Ok(*uid)).and_then(|f| f[3].parse().ok());
                (*uid, primary)
            }
            IdOrName::Name(name) => {
                let f = entry(&|f| f[0] == name.as_str())
                    .ok_or_else(|| IdentityError::UnknownUser { name: name.clone() })?;
                let uid = f[2].parse().map_err(|_| IdentityError::BadUid {
                    name: name.clone(),
                    uid: f[2].to_owned(),
                })?;
                (uid, f[3].parse().ok())
            }
        };
        let gid = match &self.group {
            None => primary.unwrap_or(0),
            Some(IdOrName::Id(gid)) => *gid,
            Some(IdOrName::Name(name)) => group
                .and_then(|text| {
                    text.lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() >= 3 && f[0] == name.as_str())
                        .and_then(|f| f[2].parse().ok())
                })
                .ok_or_else(|| IdentityError::UnknownGroup { name: name.clone() })?,
        };
        Ok(RunAs { uid, gid })
    }
}

/// The helper process a user namespace was made with ([`create_user_namespace`]).
/// It exits by itself once that returns; it is reaped by
/// [`NamespaceHelper::reap`], or on drop.
#[derive(Debug)]
pub(super) struct NamespaceHelper {
    pid: Option<nix::unistd::Pid>,
}

impl NamespaceHelper {
    /// Waits for the helper to exit and reaps it. Call it off the critical
    /// path (once the task runs): the helper exits on its own, shortly.
    pub fn reap(&mut self) {
        if let Some(pid) = self.pid.take() {
            reap(pid);
        }
    }
}

impl Drop for NamespaceHelper {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Creates a user namespace with `map` for uids and gids; returns a
/// descriptor of it (`O_CLOEXEC`) and its helper, to be reaped.
///
/// A helper child is cloned directly into a new user namespace
/// (`clone(CLONE_NEWUSER)`), so the namespace exists when the clone
/// returns and nothing has to wait for the child to run: its maps are
/// written from here at once (we are root in the parent namespace, so
/// `setgroups` stays allowed: the task's root may manage groups within its
/// own range), the namespace is opened, and the helper, which only waits
/// for that, exits.
///
/// Must be called while the caller is single-threaded (the supervisor is)
/// and before it unshares its PID namespace (the helper would become that
/// namespace's PID 1). The helper only makes async-signal-safe syscalls.
pub(super) fn create_user_namespace(
    map: &IdMap,
) -> Result<(OwnedFd, NamespaceHelper), IdentityError> {
    let (hold_r, hold_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(IdentityError::Pipe)?;
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone(2) without CLONE_VM and with a null stack is fork(2)
    // with a new user namespace for the child. The caller is
    // single-threaded, so the child is a faithful copy with no lock held
    // by another thread; glibc's fork handlers do not run, and the child
    // only makes raw async-signal-safe syscalls (close, read, _exit) on
    // descriptors that exist before the clone and a stack buffer, and
    // never returns.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret == 0 {
        // SAFETY: see above.
        unsafe {
            // The clone copied our write end too: without closing it here,
            // the read below would never see EOF.
            libc::close(hold_w.as_raw_fd());
            let mut b = [0u8; 1];
            // Returns (EOF) once the supervisor closed its end, or died.
            while libc::read(hold_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) > 0 {}
            libc::_exit(0);
        }
    }
    if ret < 0 {
        return Err(IdentityError::Clone(io::Error::last_os_error()));
    }
    let child = i32::try_from(ret)
        .map(nix::unistd::Pid::from_raw)
        .map_err(|_| IdentityError::ClonePid(ret))?;
    drop(hold_r);
    let result = (|| {
        let proc_dir = Path::new("/proc").join(child.as_raw().to_string());
        for file in ["uid_map", "gid_map"] {
            let path = proc_dir.join(file);
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(map.line().as_bytes()))
                .map_err(|source| IdentityError::WriteIdMap {
                    path,
                    line: map.line(),
                    source,
                })?;
        }
        let path = proc_dir.join("ns/user");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|source| IdentityError::OpenNamespace { path, source })
    })();
    // The helper exits now; it is reaped later, off the critical path.
    drop(hold_w);
    match result {
        Ok(ns) => Ok((ns, NamespaceHelper { pid: Some(child) })),
        Err(e) => {
            reap(child);
            Err(e)
        }
    }
}

/// Waits for the child `pid` to exit and reaps it.
fn reap(pid: nix::unistd::Pid) {
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
}

/// The user namespace, user and group the task's child takes on as its
/// last steps before exec ([`Identity::apply_in_child`]), prepared before
/// the fork.
#[derive(Debug)]
pub(super) struct Identity {
    /// The user namespace to join, when the task gets one.
    pub userns: Option<OwnedFd>,
    /// Inside that namespace (or on the host without one).
    pub run_as: RunAs,
}

impl Identity {
    /// Clears supplementary groups (while still root on the host, so that
    /// no host group, such as the supervisor's group 0, goes with the task
    /// into its namespace) and joins the user namespace, if any. After
    /// this the caller still has every capability, in the new namespace.
    ///
    /// Raw syscalls only: async-signal-safe, and they act on the calling
    /// thread alone, which in the forked child is the only one.
    pub fn enter_in_child(&self) -> io::Result<()> {
        // SAFETY: integer arguments (a null list with length 0).
        if unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(ns) = &self.userns {
            // SAFETY: a valid namespace descriptor owned by `self`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Sets the real, effective and saved gid.
    pub fn set_gid_in_child(&self) -> io::Result<()> {
        let gid = self.run_as.gid;
        // SAFETY: integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the real, effective and saved uid; a non-zero uid loses every
    /// capability here (no `PR_SET_KEEPCAPS`).
    pub fn set_uid_in_child(&self) -> io::Result<()> {
        let uid = self.run_as.uid;
        // SAFETY: integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn parses_and_resolves_users() {
        let r = |s: &str| {
            UserSpec::parse(s)
                .and_then(|u| u.resolve(Some(PASSWD), Some(GROUP)))
                .map(|r| (r.uid, r.gid))
                .map_err(|e| e.to_string())
        };
        assert_eq!(r("0"), Ok((0, 0)));
        assert_eq!(r("1000"), Ok((1000, 1001)));
        assert_eq!(r("1234"), Ok((1234, 0)));
        assert_eq!(r("1000:50"), Ok((1000, 50)));
        assert_eq!(r("app"), Ok((1000, 1001)));
        assert_eq!(r("app:staff"), Ok((1000, 50)));
        assert_eq!(r("5:staff"), Ok((5, 50)));
        assert!(r("nobody-here")
            .unwrap_err()
            .contains("not in the task's /etc/passwd"));
        assert!(r("app:nogroup").unwrap_err().contains("/etc/group"));
        for bad in ["", ":", "a:", "a b", "99999999999", "x/y"] {
            assert!(UserSpec::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!UserSpec::parse("1:2").unwrap().needs_lookup());
        assert!(UserSpec::parse("1").unwrap().needs_lookup());
    }

    #[test]
    fn id_map_ranges() {
        let m = IdMap {
            host_base: 100_000,
            size: 10,
        };
        assert_eq!(m.to_host(0), Some(100_000));
        assert_eq!(m.to_host(9), Some(100_009));
        assert_eq!(m.to_host(10), None);
        let run = RunAs { uid: 3, gid: 12 };
        assert_eq!(run.on_host(Some(&m)), None);
        assert_eq!(run.on_host(None), Some((3, 12)));
        assert_eq!(m.line(), "0 100000 10\n");
    }
}
