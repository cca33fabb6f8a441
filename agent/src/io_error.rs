//! [`IoError`]: a file operation that failed, named by what was done and
//! on which path. The module errors that touch files (cgroups, the
//! runtime, the task's root filesystem) each wrap it as their `Io` variant.

use std::io;
use std::path::{Path, PathBuf};

/// A file operation that failed: `{op} {path}: {source}`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct IoError {
    /// The operation (`read`, `mkdir`, `rename`, `chmod 0666`, ...).
    pub op: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// `op` on `path` failed with `source`.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            op,
            path: path.into(),
            source,
        }
    }

    /// For `map_err`: the OS error of `op` on `path`.
    pub fn on<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::new(op, path, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_operation_the_path_and_the_os_error() {
        let e = IoError::new(
            "rmdir",
            "/sys/fs/cgroup/x",
            io::Error::from_raw_os_error(16),
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with("rmdir /sys/fs/cgroup/x: "),
            "unexpected message: {shown}"
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source, Some(io::Error::from_raw_os_error(16).to_string()));
    }
}
