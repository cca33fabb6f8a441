//! Drover's end-to-end harness: the path of the `drover` binary under test,
//! [`dev::DevCluster`] (a real `drover dev` in a private data directory),
//! checks shared by the tests that drive it, procfs helpers, the harness of
//! the root-only runtime tests ([`runtime::Harness`]), and
//! [`hosts::MultiHost`] (several agent hosts in network namespaces on a test
//! switch, with a scheduler and store).

pub mod checks;
pub mod dev;
pub mod hosts;
pub mod procs;
pub mod runtime;

pub use hosts::MultiHost;

pub use dev::{
    closed_loopback_addr, poll_until, run_drover, run_drover_with_env, unique_name, DevCluster,
};

use std::path::PathBuf;

/// Path of the `drover` binary the e2e tests run: `$DROVER_BIN` if set,
/// otherwise `target/<profile>/drover` next to the test executable's
/// `deps/` directory.
///
/// # Panics
///
/// When the binary does not exist; build it with `cargo build -p drover-cli`.
pub fn drover_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("DROVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "DROVER_BIN={} does not exist; build it with `cargo build -p drover-cli`",
            path.display()
        );
        return path;
    }
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("drover"))
        .expect("test executable is not in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build -p drover-cli` first (or set DROVER_BIN)",
        bin.display()
    );
    bin
}
pub mod etcd;
