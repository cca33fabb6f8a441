//! Conformance case for Maintenance.Snapshot: the stream `etcdctl snapshot
//! save` reads. Both servers send the backup in chunks whose
//! `remaining_bytes` counts down to 0, padded to 512 bytes and followed by
//! the SHA-256 of everything before it (etcdctl refuses a stream without
//! it). The contents differ: bbolt for etcd, Drover's snapshot format for
//! the embedded store.

use anyhow::{ensure, Context, Result};
use sha2::Digest;

use super::client;

pub(crate) async fn snapshot_stream_is_checksummed(ep: &[String]) -> Result<()> {
    let mut c = client(ep).await?;
    for i in 0..50 {
        c.put(format!("backup/{i}"), vec![b'x'; 100], None).await?;
    }
    let mut stream = c.snapshot().await?;
    let (mut image, mut last) = (Vec::new(), None);
    while let Some(msg) = stream.message().await? {
        image.extend_from_slice(msg.blob());
        last = Some(msg.remaining_bytes());
    }
    ensure!(
        last == Some(0),
        "stream ended with remaining_bytes {last:?}"
    );
    ensure!(
        image.len() % 512 == 32,
        "{} bytes: not a multiple of 512 plus a SHA-256",
        image.len()
    );
    let (data, sum) = image.split_at(image.len() - 32);
    ensure!(
        sha2::Sha256::digest(data).as_slice() == sum,
        "trailing SHA-256 does not match"
    );
    ensure!(
        data.len() > 50 * 100,
        "a {}-byte backup of 5,000 bytes",
        data.len()
    );
    // The server still serves after streaming it.
    let got = c.get("backup/49", None).await?;
    got.kvs().first().context("backup/49 gone")?;
    Ok(())
}
