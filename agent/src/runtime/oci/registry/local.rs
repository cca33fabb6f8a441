//! Starts of a digest-pinned image that need no registry.
//!
//! A pull keeps the platform manifest and the config it verified under
//! `documents/` in the cache, named by their digests, beside the layers.
//! A reference pinned to a digest (every instance of a deployment once the
//! tag is pinned, every restart) whose manifest, config and layers are all
//! cached then resolves on the node alone: no manifest request, no config
//! request, no TLS handshake, and a restart works while the registry is
//! down. Content addressed by digest cannot go stale; each document is
//! hashed again when read, so a damaged file is a miss (and the registry
//! is asked), never a wrong image.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use drover_model::image_ref::ImageRef;
use sha2::{Digest, Sha256};

use super::{blob, hex, parse_document, resolved, Desc, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::runtime::oci::{ConfigBlob, ImageCache, ResolvedImage};

/// Where document `digest` is kept; `None` for a digest that is not a
/// well-formed sha256.
fn path(cache: &ImageCache, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| cache.root().join("documents").join(hex))
}

/// Document `digest` from the cache, if kept and still hashing to it.
fn read(cache: &ImageCache, digest: &str) -> Option<Vec<u8>> {
    let bytes = fs::read(path(cache, digest)?).ok()?;
    (format!("sha256:{}", hex(&Sha256::digest(&bytes))) == digest).then_some(bytes)
}

/// Keeps verified documents (`(digest, bytes)`) for later starts. Best
/// effort: a document not kept only costs a registry request later.
pub(super) fn keep(cache: &ImageCache, documents: &[(&str, &[u8])]) {
    for (digest, bytes) in documents {
        let Some(dest) = path(cache, digest) else {
            continue;
        };
        if dest.exists() {
            continue;
        }
        let written = (|| -> std::io::Result<()> {
            let dir = cache.root().join("documents");
            fs::create_dir_all(&dir)?;
            // Written aside and renamed: a reader sees the whole document
            // or none (and a torn one would fail its hash anyway).
            let tmp = dir.join(format!(".{}.{}", std::process::id(), dest_name(&dest)));
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            drop(file);
            fs::rename(&tmp, &dest).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        })();
        if let Err(error) = written {
            tracing::debug!(%digest, %error, "could not keep an image document in the cache");
        }
    }
}

fn dest_name(dest: &std::path::Path) -> String {
    dest.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `image`, pinned to a platform manifest whose manifest, config and
/// layers the cache holds, resolved without the registry; `None` when
/// anything is missing (then the registry is asked).
pub(super) fn resolve(cache: &ImageCache, image: &ImageRef) -> Option<ResolvedImage> {
    let digest = image.digest.as_deref()?;
    let doc = parse_document(&read(cache, digest)?, digest).ok()?;
    if doc.manifests.is_some()
        || doc
            .media_type
            .as_deref()
            .is_some_and(|mt| mt != OCI_MANIFEST && mt != DOCKER_MANIFEST)
    {
        return None;
    }
    let config_desc: Desc = doc.config?;
    let config: ConfigBlob = serde_json::from_slice(&read(cache, &config_desc.digest)?).ok()?;
    let mut layers = doc
        .layers
        .iter()
        .map(|d| blob::cached(cache, d))
        .collect::<Option<Vec<_>>>()?;
    if layers.is_empty() {
        return None;
    }
    layers.reverse();
    Some(resolved(image, digest, layers, config))
}
