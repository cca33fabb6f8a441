//! Network namespaces: opening them, running code inside them, and keeping
//! named ones alive as bind mounts under a run directory.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;

/// Where the agent keeps its named network namespaces by default.
pub const DEFAULT_NETNS_DIR: &str = "/run/drover/netns";

/// An open network namespace. Holding it keeps the namespace alive.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    label: String,
}

impl Netns {
    /// Opens the namespace at `path`: `/proc/<pid>/ns/net`, or a bind mount
    /// of one such as [`NetnsDir::path`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetError> {
        let path = path.as_ref();
        let file = fs::File::open(path)
            .map_err(|e| NetError::sys("open netns", path.display().to_string(), e))?;
        Ok(Self {
            fd: file.into(),
            label: path.display().to_string(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self, NetError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Wraps an fd that refers to a network namespace; `label` names it in
    /// errors.
    pub fn from_fd(fd: OwnedFd, label: impl Into<String>) -> Self {
        Self {
            fd,
            label: label.into(),
        }
    }

    /// How errors name this namespace (its path, or the label given).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> Result<Self, NetError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| NetError::sys("dup netns fd", self.label.clone(), e))?;
        Ok(Self {
            fd,
            label: self.label.clone(),
        })
    }

    /// Runs `f` on a short-lived thread that has entered this namespace, and
    /// returns its result. Sockets `f` creates stay in this namespace after
    /// it returns. The calling thread never changes namespace, so this is safe
    /// to use from tokio worker threads (it blocks for the duration of `f`).
    pub fn run<F, R>(&self, f: F) -> Result<R, NetError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let joined = s
                .spawn(|| {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetError::sys("setns", self.label.clone(), e))?;
                    Ok(f())
                })
                .join();
            match joined {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Enters this namespace on the calling thread. Only for threads that
    /// belong to the caller (never a tokio worker): the thread stays in the
    /// namespace until it exits or enters another.
    pub fn enter_current_thread(&self) -> Result<(), NetError> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys("setns", self.label.clone(), e))
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A directory of named network namespaces, each a bind mount of a
/// namespace file (as `ip netns` does under `/run/netns`).
///
/// The directory itself is made a shared mount point the first time a
/// namespace is created in it, so that unmounting a namespace here also
/// unmounts the copies that mount namespaces cloned later (containers) hold,
/// and the namespace really goes away.
#[derive(Debug)]
pub struct NetnsDir {
    dir: PathBuf,
    shared: OnceLock<()>,
}

impl NetnsDir {
    /// A namespace directory at `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            shared: OnceLock::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file the namespace `name` is (or would be) mounted on.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the directory and makes it a shared mount point (a bind mount
    /// of itself). [`NetnsDir::create`] does this on first use; an agent may
    /// call it at start to fail early.
    pub fn init(&self) -> Result<(), NetError> {
        self.make_shared()
    }

    /// Creates the namespace `name` and keeps it alive with a bind mount at
    /// [`NetnsDir::path`]. Blocks for as long as the kernel takes to set up
    /// a namespace (about a millisecond). The new namespace is created on a
    /// dedicated thread, so the caller's thread (a tokio worker, say) never
    /// changes namespace.
    pub fn create(&self, name: &str) -> Result<Netns, NetError> {
        std::thread::scope(|s| {
            s.spawn(|| self.create_on_this_thread(name))
                .join()
                .unwrap_or_else(|_| {
                    Err(NetError::Thread {
                        op: "create netns",
                        target: self.path(name).display().to_string(),
                    })
                })
        })
    }

    /// [`NetnsDir::create`] done by the calling thread, which is left inside
    /// the new namespace: for a thread of the caller's own that exits
    /// afterwards (never a tokio worker), and that may then do more inside
    /// it, e.g. open a netlink socket there without another thread.
    pub fn create_on_this_thread(&self, name: &str) -> Result<Netns, NetError> {
        check_name(name)?;
        self.make_shared()?;
        let path = self.path(name);
        let label = path.display().to_string();
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| NetError::sys("create netns file", label.clone(), e))?;
        let mounted = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys("unshare(CLONE_NEWNET) for", label.clone(), e))
            .and_then(|()| {
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| NetError::sys("bind-mount netns on", label.clone(), e))
            });
        if let Err(e) = mounted {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Netns::open(&path)
    }

    /// Opens the existing namespace `name`.
    pub fn open(&self, name: &str) -> Result<Netns, NetError> {
        check_name(name)?;
        Netns::open(self.path(name))
    }

    /// Unmounts and deletes the namespace `name`. Returns false when it did
    /// not exist. The namespace itself dies once no process or fd holds it.
    pub fn remove(&self, name: &str) -> Result<bool, NetError> {
        check_name(name)?;
        let path = self.path(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(nix::errno::Errno::ENOENT) => return Ok(false),
            Err(e) => {
                return Err(NetError::sys(
                    "unmount netns",
                    path.display().to_string(),
                    e,
                ))
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(NetError::sys(
                "remove netns file",
                path.display().to_string(),
                e,
            )),
        }
    }

    /// The names of the namespaces in the directory.
    pub fn list(&self) -> Result<Vec<String>, NetError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(NetError::sys(
                    "list netns dir",
                    self.dir.display().to_string(),
                    e,
                ))
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| NetError::sys("list netns dir", self.dir.display().to_string(), e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes every namespace in the directory, then the directory's own
    /// bind mount and the directory. For tearing a node (or a test) down.
    pub fn remove_all(&self) -> Result<(), NetError> {
        for name in self.list()? {
            self.remove(&name)?;
        }
        match umount2(&self.dir, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(NetError::sys(
                    "unmount netns dir",
                    self.dir.display().to_string(),
                    e,
                ))
            }
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::sys(
                "remove netns dir",
                self.dir.display().to_string(),
                e,
            )),
        }
    }

    /// Makes the directory a shared mount point: a bind mount of itself
    /// when it is not a mount point yet.
    fn make_shared(&self) -> Result<(), NetError> {
        if self.shared.get().is_some() {
            return Ok(());
        }
        let label = self.dir.display().to_string();
        fs::create_dir_all(&self.dir)
            .map_err(|e| NetError::sys("create netns dir", label.clone(), e))?;
        let share = || {
            mount(
                None::<&str>,
                &self.dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match share() {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) => {
                mount(
                    Some(&self.dir),
                    &self.dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| NetError::sys("bind-mount netns dir on itself", label.clone(), e))?;
                share().map_err(|e| NetError::sys("make netns dir shared", label.clone(), e))?;
            }
            Err(e) => return Err(NetError::sys("make netns dir shared", label, e)),
        }
        let _ = self.shared.set(());
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), NetError> {
    let bad = |reason: &str| Err(NetError::invalid("netns name", name, reason));
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 bytes");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return bad("must be a plain file name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("alloc-1234").is_ok());
    }
}
