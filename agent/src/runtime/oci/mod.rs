//! Local OCI image layouts ([`super::Rootfs::Oci`]): reading the layout (a
//! directory or a `.tar` of one), verifying every blob against its digest,
//! and unpacking each layer once into a cache keyed by digest, so that a
//! task's overlay can stack the layer directories as its lower dirs.
//!
//! Everything here runs in the agent before the supervisor is spawned: a bad
//! image is refused before anything starts. The supervisor only reads the
//! [`ResolvedImage`] the agent wrote to `<task_dir>/image.json`.

mod gc;
mod layout;
mod listing;
mod lookup;
pub mod registry;
mod unpack;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use gc::now_ms;
pub use gc::{choose_garbage, ImageRecord, InUse, LayerUse};
use layout::{Descriptor, Layout};
pub use listing::{CacheListing, CachedImage, CachedLayer};
pub(crate) use lookup::{is_executable_in_layers, read_in_layers};

#[cfg(test)]
mod tests;

/// Errors reading, verifying or unpacking an OCI image; each names the
/// image and the blob, file or entry involved.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A file of the layout (or the layout itself) could not be read.
    #[error("image {}: reading {what}: {source}", image.display())]
    Read {
        /// The image path.
        image: PathBuf,
        /// What was being read (`index.json`, a blob digest, ...).
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the layout is malformed.
    #[error("image {}: {what} is not valid: {detail}", image.display())]
    Invalid {
        /// The image path.
        image: PathBuf,
        /// The document (`index.json`, `manifest sha256:...`).
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A blob's content does not hash to its digest.
    #[error(
        "image {}: blob {digest} is corrupt: its content hashes to sha256:{actual}; \
         re-export the image",
        image.display()
    )]
    DigestMismatch {
        /// The image path.
        image: PathBuf,
        /// The digest the blob was referenced by.
        digest: String,
        /// The hex sha256 of what was read.
        actual: String,
    },
    /// A layer has an entry that may not be unpacked (escaping the root,
    /// through a symlink, ...).
    #[error("image {}: layer {digest}: entry {entry:?} refused: {reason}", image.display())]
    BadEntry {
        /// The image path.
        image: PathBuf,
        /// The layer digest.
        digest: String,
        /// The entry's path as stored in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// Writing to the layer cache failed.
    #[error("image {}: layer {digest}: {op} {}: {source}", image.display(), path.display())]
    Cache {
        /// The image path.
        image: PathBuf,
        /// The layer digest.
        digest: String,
        /// The operation.
        op: &'static str,
        /// The path in the cache.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The defaults an image's config gives a task (the `config` object of the
/// OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDefaults {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`; `None` when empty.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User` (`"uid"`, `"uid:gid"`, `"name"`, `"name:group"`): who the
    /// task runs as when it names no user; `None` when empty.
    #[serde(default)]
    pub user: Option<String>,
}

impl ImageDefaults {
    /// `Entrypoint` followed by `Cmd`: the command of a task that names none.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// `Env` as a map (entries without `=` are ignored), for the task's
    /// own env to be merged over.
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// An image whose blobs were verified and whose layers are unpacked in the
/// cache: what a task's overlay and defaults are built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The image as named in the spec.
    pub image: PathBuf,
    /// Digest of the manifest used.
    pub manifest: String,
    /// Unpacked layer directories, top layer first (overlay `lowerdir`
    /// order).
    pub layers: Vec<PathBuf>,
    /// The config's defaults.
    pub defaults: ImageDefaults,
    /// For an image pulled from a registry: its reference pinned to the
    /// digest the tag named when it was pulled (`reg/web@sha256:...`),
    /// which every restart of the task pulls again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Logged when a restart runs the digest recorded at the first start.
pub(crate) const IMAGE_RECORD_NOTE: &str = "running the image digest recorded at the first start";

/// The on-disk cache of unpacked layers: `<root>/layers/<sha256 hex>/`,
/// each unpacked once into `<root>/tmp/` and renamed into place.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

impl ImageCache {
    /// A cache below `root` (created on first use).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory holding the unpacked layer with this hex digest.
    pub fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    /// Reads the layout at `image`, picks its manifest (the one for
    /// linux/amd64, else the first), verifies the manifest, config and
    /// every layer blob against their digests, and unpacks layers missing
    /// from the cache. Blocking: run it off the async executor.
    pub fn resolve(&self, image: &Path) -> Result<ResolvedImage, OciError> {
        let layout = Layout::open(image)?;
        if self
            .root
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(layout.invalid(
                format!("image cache {}", self.root.display()),
                "the cache path contains ',', ':' or '\\', which overlayfs cannot take \
                 in a lowerdir; choose another cache directory"
                    .to_owned(),
            ));
        }
        self.sweep_tmp();
        let manifest_desc = layout.pick_manifest()?;
        let manifest: Manifest = layout.read_json_blob(&manifest_desc, "manifest")?;
        let config: ConfigBlob = layout.read_json_blob(&manifest.config, "config")?;
        if manifest.layers.is_empty() {
            return Err(layout.invalid(
                format!("manifest {}", manifest_desc.digest),
                "lists no layer".to_owned(),
            ));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for desc in &manifest.layers {
            layers.push(self.ensure_layer(&layout, desc)?);
        }
        layers.reverse();
        Ok(ResolvedImage {
            image: image.to_owned(),
            manifest: manifest_desc.digest.clone(),
            layers,
            defaults: config.defaults(),
            reference: None,
        })
    }

    /// Before a pull writes to the cache: refuses a root overlayfs cannot
    /// take, sweeps temporaries of dead processes and creates `tmp/` and
    /// `layers/`.
    pub(crate) fn prepare(&self) -> Result<(), String> {
        if self
            .root
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(format!(
                "image cache {} contains ',', ':' or '\\', which overlayfs cannot take in a \
                 lowerdir; choose another cache directory",
                self.root.display()
            ));
        }
        self.sweep_tmp();
        for dir in [self.root.join("tmp"), self.root.join("layers")] {
            fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes temporary unpack directories (`<hex>.<pid>.<random>`) of
    /// processes that no longer exist: an agent killed while unpacking.
    /// Best effort.
    fn sweep_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('.').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Verifies the layer blob and returns its unpacked directory,
    /// unpacking it first when the cache does not hold it.
    fn ensure_layer(&self, layout: &Layout, desc: &Descriptor) -> Result<PathBuf, OciError> {
        let hex = layout.hex(desc)?;
        let compression =
            unpack::Compression::of_media_type(&desc.media_type).ok_or_else(|| {
                layout.invalid(
                    format!("layer {}", desc.digest),
                    format!(
                        "media type {:?} is not supported ({} only)",
                        desc.media_type,
                        unpack::SUPPORTED_LAYERS
                    ),
                )
            })?;
        // Always verified, cached or not: the cache is keyed by the digest
        // the image claims, so the image must prove it.
        layout.verify_blob(desc)?;
        let target = self.layer_dir(hex);
        if target.is_dir() {
            return Ok(target);
        }
        let cache_err = |op, path: &Path, source| OciError::Cache {
            image: layout.image().to_owned(),
            digest: desc.digest.clone(),
            op,
            path: path.to_owned(),
            source,
        };
        let tmp_root = self.root.join("tmp");
        for dir in [&tmp_root, &self.root.join("layers")] {
            fs::create_dir_all(dir).map_err(|e| cache_err("create directory", dir, e))?;
        }
        let tmp = tmp_root.join(format!(
            "{hex}.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir(&tmp).map_err(|e| cache_err("create directory", &tmp, e))?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let reader = layout.open_blob(desc)?;
        unpack::unpack(reader, compression, &tmp).map_err(|e| e.into_oci(layout.image(), desc))?;
        match fs::rename(&tmp, &target) {
            Ok(()) => {
                guard.disarm();
                Ok(target)
            }
            // Another unpack of the same layer won the race; its result is
            // the same tree. Ours is dropped by the guard.
            Err(_) if target.is_dir() => Ok(target),
            Err(e) => Err(cache_err("rename into place", &target, e)),
        }
    }
}

/// A shared lock on the image cache, held by a task's start from before
/// its image is resolved until its `image.json` is written: while any is
/// held, [`ImageCache::collect_garbage`] removes nothing.
#[derive(Debug)]
pub struct CachePin {
    _lock: fs::File,
}

impl ImageCache {
    fn lock_file(&self, shared: bool, wait: bool) -> Result<Option<fs::File>, io::Error> {
        fs::create_dir_all(&self.root)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        let mut op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
        if !wait {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a descriptor owned by `file`.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), op) } == 0 {
                return Ok(Some(file));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Takes a shared lock on the cache (see [`CachePin`]); waits only
    /// while a collection renames its garbage away (milliseconds).
    pub fn pin(&self) -> Result<CachePin, io::Error> {
        let file = self
            .lock_file(true, true)?
            .ok_or_else(|| io::Error::other("flock(LOCK_SH) would block"))?;
        Ok(CachePin { _lock: file })
    }

    /// Removes every unpacked layer that is not in `in_use` (the layer
    /// directories that tasks' `image.json` files name; the caller reads
    /// them through `in_use` once the cache is locked; `None` keeps all),
    /// whenever it was last used: [`ImageCache::sweep`] with the default
    /// policy. Skipped, returning nothing, while a task is being started
    /// ([`ImageCache::pin`]). Returns the removed digests (hex).
    pub fn collect_garbage(
        &self,
        in_use: &dyn Fn() -> Option<std::collections::BTreeSet<PathBuf>>,
    ) -> Result<Vec<String>, io::Error> {
        let in_use = || {
            in_use().map(|layers| InUse {
                layers,
                manifests: Default::default(),
            })
        };
        self.sweep(
            &crate::policy::ImagePolicy::default(),
            gc::now_ms(),
            &in_use,
        )
    }
}

/// Removes a temporary directory tree unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// `application/vnd.oci.image.manifest.v1+json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// `application/vnd.oci.image.config.v1+json` (the parts used here).
#[derive(Debug, Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ConfigFields>,
}

impl ConfigBlob {
    /// What a task of the image runs by default.
    fn defaults(self) -> ImageDefaults {
        let c = self.config.unwrap_or_default();
        ImageDefaults {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigFields {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}
