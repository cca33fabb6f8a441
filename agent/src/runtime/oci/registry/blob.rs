//! One layer from the registry into the cache: downloaded into
//! `<cache>/tmp/<hex>.<pid>.<random>/blob` while hashed, resumed with a
//! ranged request when the transfer breaks, verified, unpacked into the
//! same temporary directory and renamed to `layers/<hex>`; the temporary
//! directory goes whatever happens (an agent killed meanwhile leaves it
//! to [`ImageCache::prepare`]'s sweep).

use std::path::{Path, PathBuf};

use futures::StreamExt;
use oci_client::client::BlobResponse;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::super::unpack::{self, Compression};
use super::super::{ImageCache, RemoveOnDrop};
use super::{hex, Desc, Meter, Session};

/// Attempts at one blob (the first and the resumptions).
const ATTEMPTS: u32 = 4;
/// Pause before the second attempt, doubled before each later one: a
/// registry restarting (or a balancer moving it) gets a moment.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// The layer's directory in the cache, downloading and unpacking it first
/// when the cache does not hold it.
pub(super) async fn ensure_layer(
    s: &Session,
    cache: &ImageCache,
    desc: &Desc,
    meter: &Meter,
) -> Result<PathBuf, String> {
    let digest = &desc.digest;
    let hex_digest = drover_model::image_ref::parse_digest(digest)
        .map_err(|e| format!("layer {e}"))?
        .trim_start_matches("sha256:")
        .to_owned();
    let compression = Compression::of_media_type(&desc.media_type).ok_or_else(|| {
        format!(
            "layer {digest}: media type {:?} is not supported ({} only)",
            desc.media_type,
            unpack::SUPPORTED_LAYERS
        )
    })?;
    let target = cache.layer_dir(&hex_digest);
    if target.is_dir() {
        debug!(image = %s.image, layer = %digest, "layer cached");
        meter.cached_layer(desc.size);
        return Ok(target);
    }
    let tmp = cache.root().join("tmp").join(format!(
        "{hex_digest}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir(&tmp)
        .map_err(|e| format!("layer {digest}: creating {}: {e}", tmp.display()))?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let blob = tmp.join("blob");
    download(s, desc, &blob, meter).await?;
    let tree = tmp.join("tree");
    let image = s.image.clone();
    let (d, t) = (desc.digest.clone(), tree.clone());
    tokio::task::spawn_blocking(move || unpack_file(&blob, compression, &t))
        .await
        .map_err(|e| format!("layer {d}: unpack task: {e}"))?
        .map_err(|e| format!("layer {}: {e}", desc.digest))?;
    match std::fs::rename(&tree, &target) {
        Ok(()) => {}
        // Another pull of the same layer won the race: the same tree.
        Err(_) if target.is_dir() => {}
        Err(e) => {
            return Err(format!(
                "layer {digest}: rename into {}: {e}",
                target.display()
            ))
        }
    }
    drop(guard);
    meter.layer_done();
    debug!(image = %image, layer = %digest, "layer unpacked");
    Ok(target)
}

/// The layer's directory when the cache holds it.
pub(super) fn cached(cache: &ImageCache, desc: &Desc) -> Option<PathBuf> {
    let hex = desc.digest.strip_prefix("sha256:")?;
    let dir = cache.layer_dir(hex);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && dir.is_dir()).then_some(dir)
}

fn unpack_file(blob: &Path, compression: Compression, tree: &Path) -> Result<(), String> {
    std::fs::create_dir(tree).map_err(|e| format!("creating {}: {e}", tree.display()))?;
    let file = std::fs::File::open(blob).map_err(|e| format!("opening {}: {e}", blob.display()))?;
    unpack::unpack(Box::new(std::io::BufReader::new(file)), compression, tree)
        .map_err(|e| e.to_string())
}

/// Downloads the blob into `path`, hashing it; resumes after a broken
/// transfer where the registry honours ranges. Fails naming the digest on
/// a mismatch (nothing of the blob is kept then).
async fn download(s: &Session, desc: &Desc, path: &Path, meter: &Meter) -> Result<(), String> {
    let digest = desc.digest.as_str();
    let io_err = |e: std::io::Error| format!("layer {digest}: writing {}: {e}", path.display());
    let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut last_error = String::new();
    // Where and why the transfer first broke, for the final error.
    let mut broke_at: Option<(u64, String)> = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(RETRY_PAUSE * (1 << (attempt - 1))).await;
        }
        let stream = if got == 0 {
            s.client
                .pull_blob_stream(&s.reference, digest)
                .await
                .map(|r| r.stream)
        } else {
            match s
                .client
                .pull_blob_stream_partial(&s.reference, digest, got, None)
                .await
            {
                Ok(BlobResponse::Partial(r)) => Ok(r.stream),
                Ok(BlobResponse::Full(r)) => {
                    // No ranges: from the start again.
                    file = tokio::fs::File::create(path).await.map_err(io_err)?;
                    hasher = Sha256::new();
                    meter.undo_bytes(got);
                    got = 0;
                    Ok(r.stream)
                }
                Err(e) => Err(e),
            }
        };
        let mut stream = match stream {
            Ok(st) => st,
            Err(e) => {
                let transient = matches!(
                    &e,
                    oci_client::errors::OciDistributionError::RequestError(_)
                );
                last_error = super::describe(&e, "layer", digest);
                if transient && attempt + 1 < ATTEMPTS {
                    warn!(image = %s.image, layer = %digest, error = %last_error, "retrying layer");
                    continue;
                }
                return Err(match &broke_at {
                    Some((at, why)) => format!(
                        "layer {digest}: the transfer broke after {at} of {} bytes ({why}) \
                         and could not be resumed: {last_error}",
                        desc.size
                    ),
                    None => last_error,
                });
            }
        };
        let mut broke = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    hasher.update(&bytes);
                    file.write_all(&bytes).await.map_err(io_err)?;
                    got += bytes.len() as u64;
                    meter.add_bytes(bytes.len() as u64);
                }
                Err(e) => {
                    last_error = super::error_chain(&e);
                    broke_at.get_or_insert((got, last_error.clone()));
                    broke = true;
                    break;
                }
            }
        }
        // A stream that failed after the whole blob arrived failed the
        // client's own digest check: ours below names it.
        if !broke || (desc.size > 0 && got >= desc.size) {
            file.flush().await.map_err(io_err)?;
            let actual = hex(&hasher.finalize());
            if format!("sha256:{actual}") != digest {
                return Err(format!(
                    "layer {digest} is corrupt: the registry sent {got} bytes that hash to \
                     sha256:{actual}"
                ));
            }
            return Ok(());
        }
        warn!(image = %s.image, layer = %digest, bytes = got, error = %last_error, "layer transfer broke; resuming");
    }
    Err(format!(
        "layer {digest}: transfer failed after {ATTEMPTS} attempts ({got} bytes): {last_error}"
    ))
}
