//! [`DevCluster`] on a data directory placed as an operator would place
//! it: below `/var/lib`, made by `mkdir -p` under the usual umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::DevCluster;

impl DevCluster {
    /// Like [`DevCluster::start_with`], with the data directory made below
    /// `parent` (e.g. `/var/lib`, as the README's `/var/lib/drover/dev`)
    /// with mode `mode` before `drover dev` starts (`0o755`: what
    /// `mkdir -p` makes under the usual umask). Removed on drop.
    ///
    /// # Panics
    ///
    /// As [`DevCluster::start`].
    pub fn start_in(parent: &Path, mode: u32, extra: &[&str]) -> DevCluster {
        let tmp = tempfile::Builder::new()
            .prefix("drover-e2e-")
            .tempdir_in(parent)
            .expect("creating a temporary data dir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod of the data dir");
        DevCluster::start_on(tmp, extra)
    }
}
