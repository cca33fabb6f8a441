//! Drover's end-to-end harness: the path of the `drover` binary under test,
//! [`dev::DevCluster`] (a real `drover dev` in a private data directory),
//! checks shared by the tests that drive it, procfs helpers, the harness of
//! the root-only runtime tests ([`runtime::Harness`]), `dig` and the stored
//! SkyDNS records ([`skydns`]), scraping and reading Prometheus metrics
//! ([`metrics`]), and
//! [`hosts::MultiHost`] (several agent hosts in network namespaces on a test
//! switch, with a scheduler and store); [`browser`] looks at the status
//! page with headless Chromium.

pub mod browser;
pub mod checks;
pub mod dev;
mod dev_in;
pub mod etcd_cluster;
pub mod hosts;
pub mod inproc;
pub mod metrics;
mod netns_exec;
pub mod procs;
pub mod registry;
pub mod registry_lab;
pub mod registry_token;
pub mod runtime;
pub mod sim;
pub mod skydns;
pub mod util;

pub use hosts::MultiHost;

pub use dev::{DevCluster, DEV_LOG};
pub use skydns::dig;
pub use util::{
    closed_loopback_addr, poll_until, poll_until_async, run_drover, run_drover_with_env,
    unique_name,
};

use std::path::PathBuf;

/// A gRPC channel to `url` under mutual TLS: the cluster CA
/// `<pki>/ca.pem`, the client certificate `<pki>/<cert>.pem` and its key
/// `<pki>/<cert>-key.pem` (as `drover tls init`/`tls agent` name them).
///
/// # Panics
///
/// When a file cannot be read or the connection fails.
pub async fn mtls_channel(
    url: &str,
    pki: &std::path::Path,
    cert: &str,
) -> tonic::transport::Channel {
    try_mtls_channel(url, pki, cert)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"))
}

/// [`mtls_channel`], returning a failed connection (a refused handshake)
/// instead of panicking on it.
///
/// # Panics
///
/// When the files cannot be read or the URL is malformed.
pub async fn try_mtls_channel(
    url: &str,
    pki: &std::path::Path,
    cert: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let read = |name: String| {
        std::fs::read(pki.join(&name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(
            "ca.pem".into(),
        )))
        .identity(tonic::transport::Identity::from_pem(
            read(format!("{cert}.pem")),
            read(format!("{cert}-key.pem")),
        ));
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .tls_config(tls)
        .unwrap_or_else(|e| panic!("TLS config: {e}"))
        .connect()
        .await
}

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
