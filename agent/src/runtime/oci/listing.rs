//! What the image cache holds, for `drover node images`: every image
//! record with its size and last use, and every unpacked layer with the
//! images that have it and whether a task directory names it.

use super::gc::{dir_size, InUse};
use super::ImageCache;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// One image of [`CacheListing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// The references tasks named it by.
    pub names: Vec<String>,
    /// Pinned to its digest, for a pulled image.
    pub pinned: Option<String>,
    /// Its manifest's digest.
    pub manifest: String,
    /// Bytes of its layers that are in the cache.
    pub size: u64,
    /// Last use (ms since the epoch).
    pub last_used_unix_ms: i64,
    /// Its layers' digests (`sha256:...`), bottom first.
    pub layers: Vec<String>,
    /// A task directory names it (a task runs it, or may restart in it).
    pub in_use: bool,
}

/// One layer of [`CacheListing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    /// `sha256:...`.
    pub digest: String,
    /// Bytes on disk.
    pub size: u64,
    /// Manifest digests of the images that have it.
    pub used_by: Vec<String>,
    /// Last use (ms since the epoch; 0: unknown).
    pub last_used_unix_ms: i64,
    /// A task directory names it.
    pub in_use: bool,
}

/// The cache's images and layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheListing {
    /// Images, by manifest digest.
    pub images: Vec<CachedImage>,
    /// Layers, by digest.
    pub layers: Vec<CachedLayer>,
}

impl ImageCache {
    /// Lists the cache; `used`: the layers and images task directories
    /// name. Measures each layer on disk (blocking: run it off the async
    /// executor).
    pub fn listing(&self, used: &InUse) -> Result<CacheListing, io::Error> {
        let in_use: BTreeSet<String> = used
            .layers
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        let records: Vec<_> = self.records().into_values().collect();
        let mut layers = Vec::new();
        let mut sizes = BTreeMap::new();
        for hex in self.layer_hexes()? {
            let size = dir_size(&self.layer_dir(&hex));
            sizes.insert(hex.clone(), size);
            let with: Vec<_> = records.iter().filter(|r| r.layers.contains(&hex)).collect();
            layers.push(CachedLayer {
                digest: format!("sha256:{hex}"),
                size,
                used_by: with.iter().map(|r| r.manifest.clone()).collect(),
                last_used_unix_ms: with.iter().map(|r| r.last_used_unix_ms).max().unwrap_or(0),
                in_use: in_use.contains(&hex),
            });
        }
        let mut images: Vec<CachedImage> = records
            .into_iter()
            .map(|r| CachedImage {
                size: r.layers.iter().filter_map(|l| sizes.get(l)).sum(),
                in_use: used.manifests.contains(&r.manifest),
                layers: r.layers.iter().map(|l| format!("sha256:{l}")).collect(),
                names: r.names.into_iter().collect(),
                pinned: r.pinned,
                manifest: r.manifest,
                last_used_unix_ms: r.last_used_unix_ms,
            })
            .collect();
        images.sort_by(|a, b| a.manifest.cmp(&b.manifest));
        Ok(CacheListing { images, layers })
    }
}
