//! `embedded_store DATA_DIR [ADDR]`: serves the embedded store over
//! `DATA_DIR` on `ADDR` (default `127.0.0.1:0`, a port the kernel picks),
//! and prints the bound address as the first line of stdout. The crash
//! test runs it as a child so it can `kill -9` it and restart it on the
//! same address.
//!
//! Crash tests tune snapshots through the environment:
//! `DROVER_TEST_SNAPSHOT_RECORDS=N` snapshots every N log records,
//! `DROVER_TEST_SNAPSHOT_BYTES=N` every N bytes of log, and
//! `DROVER_TEST_CRASH_AT=after-snapshot|after-rotate` aborts the process
//! at that step of the first snapshot.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use drover_store::embedded::{CancellationToken, CrashPoint, EmbeddedEtcd, StoreOptions};

fn options() -> Result<StoreOptions> {
    let mut opts = StoreOptions::default();
    if let Ok(n) = std::env::var("DROVER_TEST_SNAPSHOT_RECORDS") {
        opts.snapshot_after_records = n
            .parse()
            .with_context(|| format!("DROVER_TEST_SNAPSHOT_RECORDS={n:?} is not a count"))?;
    }
    if let Ok(n) = std::env::var("DROVER_TEST_SNAPSHOT_BYTES") {
        opts.snapshot_after_bytes = n
            .parse()
            .with_context(|| format!("DROVER_TEST_SNAPSHOT_BYTES={n:?} is not a size"))?;
    }
    opts.crash_at = match std::env::var("DROVER_TEST_CRASH_AT").as_deref() {
        Ok("after-snapshot") => Some(CrashPoint::AfterSnapshot),
        Ok("after-rotate") => Some(CrashPoint::AfterRotate),
        Ok(other) => bail!("DROVER_TEST_CRASH_AT={other:?}: after-snapshot or after-rotate"),
        Err(_) => None,
    };
    Ok(opts)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), addr, None) = (args.next(), args.next(), args.next()) else {
        bail!("usage: embedded_store DATA_DIR [ADDR]");
    };
    let dir = PathBuf::from(dir);
    let addr = match addr {
        Some(a) => a
            .to_str()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .with_context(|| format!("{a:?} is not an address like 127.0.0.1:2379"))?,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let etcd = EmbeddedEtcd::open_with(&dir, options()?)
        .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // The address line is this program's interface to its parent.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}").context("writing the address to stdout")?;
    out.flush().context("flushing stdout")?;
    drop(out);
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    etcd.serve(listener, stop).await?;
    Ok(())
}
