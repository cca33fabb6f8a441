//! The node's own files are root's alone: data directories `0700`, every
//! state file, key, log and address file `0600`, whatever umask Drover was
//! started with.
//!
//! Two layers: [`restrict_umask`], called first thing by the `drover`
//! binary (so nothing any role creates is readable by others unless it
//! says so), and explicit modes where Drover creates its directories and
//! files ([`private_dir`], [`PRIVATE_FILE_MODE`]), so that a library
//! caller, or a directory made before by someone else, gets the same.
//! What tasks must read (their `resolv.conf` and `hosts`, the directories
//! of their root filesystem) is given its mode explicitly where it is made,
//! and a task starts with the usual umask `022`
//! ([`TASK_UMASK`]).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::Mode;

/// Mode of every data directory Drover makes.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every state file, key, log and address file Drover writes.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The umask of the `drover` process in every role.
pub const DROVER_UMASK: u32 = 0o077;
/// The umask a task (and a `drover exec` command) starts with.
pub const TASK_UMASK: u32 = 0o022;

/// Sets the process umask to [`DROVER_UMASK`]; returns the previous one.
pub fn restrict_umask() -> u32 {
    nix::sys::stat::umask(Mode::from_bits_truncate(DROVER_UMASK)).bits()
}

/// Creates `dir` and its missing parents with mode `0700`, and makes an
/// existing `dir` `0700` too (a data directory from an older version, or
/// made by `mkdir -p` under a permissive umask). Parents that exist are
/// left as they are.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

/// Makes the open file `file` mode `0600` (a file created before, or
/// created under a permissive umask without an explicit mode).
pub fn make_private(file: &fs::File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_creates_and_repairs() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        private_dir(&deep).unwrap();
        for d in [tmp.path().join("a"), tmp.path().join("a/b"), deep.clone()] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&deep).unwrap();
        let mode = fs::metadata(&deep).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let f = fs::File::create(deep.join("f")).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .unwrap();
        make_private(&f).unwrap();
        let mode = fs::metadata(deep.join("f")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }
}
