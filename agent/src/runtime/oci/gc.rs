//! What the image cache knows of its images, and which unused layers it
//! collects.
//!
//! Each image a task started from leaves a record in
//! `<cache>/records/<manifest hex>.json` (the names it was run by, its
//! pinned reference, its layers, when a task last started from it or was
//! seen running it). A layer's last use is the latest of its images'.
//! A layer no record names (cached before records were kept) counts as
//! unused since ever. [`choose_garbage`] is the pure choice: never a layer a task directory
//! names (a running task, or one whose allocation can still restart it);
//! of the others, those unused past the policy's age, then the least
//! recently used until the cache fits its budget. [`ImageCache::sweep`]
//! does it under the cache's exclusive lock (no pull or start runs
//! meanwhile, see [`super::CachePin`]), renaming each doomed layer into
//! `tmp/` first so that a crash leaves nothing half-removed under
//! `layers/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ImageCache, ResolvedImage};
use crate::policy::ImagePolicy;

/// One image the cache holds layers of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The references tasks named it by (a tag, a digest or a layout path).
    #[serde(default)]
    pub names: BTreeSet<String>,
    /// The reference pinned to its digest, for a pulled image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The manifest's digest (`sha256:...`).
    pub manifest: String,
    /// Its layers' hex digests, bottom first.
    pub layers: Vec<String>,
    /// When a task last started from it or was last seen using it.
    pub last_used_unix_ms: i64,
}

/// What the tasks on the node use: read from their directories'
/// `image.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    /// Unpacked layer directories.
    pub layers: BTreeSet<PathBuf>,
    /// Manifest digests (`sha256:...`).
    pub manifests: BTreeSet<String>,
}

/// One cached layer, as [`choose_garbage`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUse {
    /// Hex digest.
    pub hex: String,
    /// Bytes on disk (unpacked).
    pub size: u64,
    /// Last use (0: unknown, as old as can be).
    pub last_used_ms: i64,
    /// A task directory on the node names it.
    pub in_use: bool,
}

/// The layers to remove: never one in use; every other one unused for at
/// least `unused_after`; then, while the cache (in-use layers included)
/// is above `budget` bytes, the least recently used of the rest (ties by
/// digest, so the choice is deterministic). Pure.
pub fn choose_garbage(
    layers: &[LayerUse],
    unused_after: Duration,
    budget: Option<u64>,
    now_ms: i64,
) -> Vec<String> {
    let age_ms = i64::try_from(unused_after.as_millis()).unwrap_or(i64::MAX);
    let mut doomed = BTreeSet::new();
    for l in layers.iter().filter(|l| !l.in_use) {
        if now_ms.saturating_sub(l.last_used_ms) >= age_ms {
            doomed.insert(l.hex.clone());
        }
    }
    if let Some(budget) = budget {
        let mut total: u64 = layers
            .iter()
            .filter(|l| !doomed.contains(&l.hex))
            .map(|l| l.size)
            .sum();
        let mut candidates: Vec<&LayerUse> = layers
            .iter()
            .filter(|l| !l.in_use && !doomed.contains(&l.hex))
            .collect();
        candidates.sort_by(|a, b| (a.last_used_ms, &a.hex).cmp(&(b.last_used_ms, &b.hex)));
        for l in candidates {
            if total <= budget {
                break;
            }
            total = total.saturating_sub(l.size);
            doomed.insert(l.hex.clone());
        }
    }
    doomed.into_iter().collect()
}

/// Bytes of the regular files below `dir` (symlinks not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// The wall clock in Unix milliseconds (0 before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

fn hex_of(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

fn manifest_hex(manifest: &str) -> &str {
    manifest.strip_prefix("sha256:").unwrap_or(manifest)
}

impl ImageCache {
    fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    /// Notes that a task starts from `image` now (`now_ms`): its record is
    /// created or updated (written to a temporary file and renamed).
    pub fn record_use(&self, image: &ResolvedImage, now_ms: i64) -> Result<(), io::Error> {
        let dir = self.records_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", manifest_hex(&image.manifest)));
        let mut record = read_record(&path).unwrap_or_default();
        record.manifest.clone_from(&image.manifest);
        record
            .names
            .insert(image.image.to_string_lossy().into_owned());
        if image.reference.is_some() {
            record.pinned.clone_from(&image.reference);
        }
        // ResolvedImage lists top first; records bottom first.
        record.layers = image
            .layers
            .iter()
            .rev()
            .filter_map(|p| hex_of(p))
            .collect();
        record.last_used_unix_ms = record.last_used_unix_ms.max(now_ms);
        write_record(&path, &record)
    }

    /// Every image record, by file (unreadable ones are skipped).
    pub fn records(&self) -> BTreeMap<PathBuf, ImageRecord> {
        let mut out = BTreeMap::new();
        let Ok(entries) = fs::read_dir(self.records_dir()) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(r) = read_record(&path) {
                    out.insert(path, r);
                }
            }
        }
        out
    }

    /// The hex digests of the unpacked layers in the cache.
    pub fn layer_hexes(&self) -> Result<Vec<String>, io::Error> {
        let dir = self.root.join("layers");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.path().is_dir() {
                if let Some(h) = entry.file_name().to_str() {
                    out.push(h.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the layers [`choose_garbage`] picks under `policy` at
    /// `now_ms`; `in_use` gives the layers and images task directories
    /// name (read once the cache is locked; `None` keeps everything).
    /// Skipped, returning nothing, while a task is being started or an
    /// image pulled ([`ImageCache::pin`]). Records of images in use are
    /// marked used now; records of images that lost a layer are removed.
    /// Returns the removed layers' hex digests.
    pub fn sweep(
        &self,
        policy: &ImagePolicy,
        now_ms: i64,
        in_use: &dyn Fn() -> Option<InUse>,
    ) -> Result<Vec<String>, io::Error> {
        if !self.root.join("layers").is_dir() {
            return Ok(Vec::new());
        }
        let Some(lock) = self.lock_file(false, false)? else {
            return Ok(Vec::new());
        };
        let Some(keep) = in_use() else {
            return Ok(Vec::new());
        };
        let manifests = keep.manifests;
        let keep: BTreeSet<String> = keep.layers.iter().filter_map(|p| hex_of(p)).collect();
        let mut records = self.records();
        let mut last_used: BTreeMap<&str, i64> = BTreeMap::new();
        for (path, record) in &mut records {
            if manifests.contains(&record.manifest) {
                record.last_used_unix_ms = record.last_used_unix_ms.max(now_ms);
                write_record(path, record)?;
            }
        }
        for record in records.values() {
            for l in &record.layers {
                let e = last_used.entry(l.as_str()).or_insert(0);
                *e = (*e).max(record.last_used_unix_ms);
            }
        }
        let budget = policy.max_cache_bytes();
        let layers: Vec<LayerUse> = self
            .layer_hexes()?
            .into_iter()
            .map(|hex| LayerUse {
                size: budget.map_or(0, |_| dir_size(&self.layer_dir(&hex))),
                last_used_ms: last_used.get(hex.as_str()).copied().unwrap_or(0),
                in_use: keep.contains(&hex),
                hex,
            })
            .collect();
        let chosen = choose_garbage(&layers, policy.gc_unused_after, budget, now_ms);
        let tmp_root = self.root.join("tmp");
        fs::create_dir_all(&tmp_root)?;
        let mut doomed = Vec::with_capacity(chosen.len());
        for hex in chosen {
            // Named like an unpack's temp dir, so that a collection cut
            // short is finished by the next sweep of `tmp/`.
            let tmp = tmp_root.join(format!(
                "{hex}.{}.{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            fs::rename(self.layer_dir(&hex), &tmp)?;
            doomed.push((hex, tmp));
        }
        let gone: BTreeSet<&str> = doomed.iter().map(|(h, _)| h.as_str()).collect();
        for (path, record) in &records {
            if record.layers.iter().any(|l| gone.contains(l.as_str())) {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        match self.sweep_documents() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "image documents collected"),
            Err(error) => tracing::warn!(%error, "collecting the image cache's documents"),
        }
        drop(lock);
        let mut removed = Vec::with_capacity(doomed.len());
        for (hex, tmp) in doomed {
            fs::remove_dir_all(&tmp)?;
            removed.push(hex);
        }
        Ok(removed)
    }
}

impl ImageCache {
    /// Removes the kept manifests and configs (`documents/`, see
    /// `registry::local`) that can no longer start anything: a manifest
    /// one of whose layers is no longer cached, a config no kept manifest
    /// names, anything unreadable, and the temporary files of a writer
    /// that died. Called under the exclusive lock (no pull writes
    /// documents meanwhile). Returns how many files went.
    fn sweep_documents(&self) -> Result<usize, io::Error> {
        let dir = self.root.join("documents");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for name in &names {
            let Some(doc) = fs::read(dir.join(name))
                .ok()
                .and_then(|b| serde_json::from_slice::<DocumentRefs>(&b).ok())
            else {
                continue;
            };
            let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
                continue;
            };
            let all_cached = !layers.is_empty()
                && layers.iter().all(|l| {
                    l.digest
                        .strip_prefix("sha256:")
                        .is_some_and(|hex| is_hex64(hex) && self.layer_dir(hex).is_dir())
                });
            if all_cached {
                keep.insert(name.clone());
                if let Some(hex) = config.digest.strip_prefix("sha256:") {
                    keep.insert(hex.to_owned());
                }
            }
        }
        let mut removed = 0;
        for name in names.iter().filter(|n| !keep.contains(*n)) {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// What [`ImageCache::sweep_documents`] reads of a kept document: a
/// manifest names its config and layers; a config names neither.
#[derive(Deserialize)]
struct DocumentRefs {
    config: Option<DigestOnly>,
    layers: Option<Vec<DigestOnly>>,
}

#[derive(Deserialize)]
struct DigestOnly {
    digest: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_record(path: &Path) -> Option<ImageRecord> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

fn write_record(path: &Path, record: &ImageRecord) -> Result<(), io::Error> {
    let data = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let tmp = path.with_extension(format!("json.{}.tmp", rand::random::<u32>()));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn l(hex: &str, size: u64, last: i64, in_use: bool) -> LayerUse {
        LayerUse {
            hex: hex.into(),
            size,
            last_used_ms: last,
            in_use,
        }
    }

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn documents_go_with_their_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(tmp.path().to_owned());
        let hex = |c: char| c.to_string().repeat(64);
        let (a, b, gone) = (hex('a'), hex('b'), hex('f'));
        for layer in [&a, &b] {
            fs::create_dir_all(cache.layer_dir(layer)).unwrap();
        }
        let docs = tmp.path().join("documents");
        fs::create_dir_all(&docs).unwrap();
        let manifest = |config: &str, layers: &[&str]| {
            let layers: Vec<_> = layers
                .iter()
                .map(|l| serde_json::json!({ "digest": format!("sha256:{l}") }))
                .collect();
            serde_json::json!({ "config": { "digest": format!("sha256:{config}") }, "layers": layers })
                .to_string()
        };
        // m1: every layer cached (kept, with its config c1); m2: one layer
        // gone (removed, with c2); c3: no manifest names it; m3: damaged;
        // a temp file of a dead writer.
        let files = [
            (hex('1'), manifest(&hex('c'), &[&a, &b])),
            (
                hex('c'),
                r#"{"architecture":"amd64","os":"linux","config":{"Env":[]}}"#.to_owned(),
            ),
            (hex('2'), manifest(&hex('d'), &[&a, &gone])),
            (
                hex('d'),
                r#"{"architecture":"amd64","os":"linux"}"#.to_owned(),
            ),
            (hex('e'), r#"{"os":"linux"}"#.to_owned()),
            (hex('3'), "{not json".to_owned()),
            (format!(".42.{}", hex('9')), "half".to_owned()),
        ];
        for (name, body) in &files {
            fs::write(docs.join(name), body).unwrap();
        }
        assert_eq!(cache.sweep_documents().unwrap(), 5);
        let mut left: Vec<String> = fs::read_dir(&docs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [hex('1'), hex('c')]);
        // Nothing to collect the second time; no directory is no error.
        assert_eq!(cache.sweep_documents().unwrap(), 0);
        fs::remove_dir_all(&docs).unwrap();
        assert_eq!(cache.sweep_documents().unwrap(), 0);
    }

    #[test]
    fn by_age_never_in_use() {
        let now = 10 * 3_600_000;
        let layers = [
            l("old", 1, 0, false),
            l("old-used", 1, 0, true),
            l("fresh", 1, now - 1000, false),
            l("edge", 1, now - 3_600_000, false),
        ];
        assert_eq!(choose_garbage(&layers, H, None, now), ["edge", "old"]);
        // Zero: every unused layer goes at once (the default).
        assert_eq!(
            choose_garbage(&layers, Duration::ZERO, None, now),
            ["edge", "fresh", "old"]
        );
    }

    #[test]
    fn by_budget_least_recently_used_first() {
        let now = 1_000;
        let layers = [
            l("a", 40, 500, false),
            l("b", 40, 100, false),
            l("c", 40, 900, false),
            l("big-running", 100, 0, true),
        ];
        // 220 bytes, budget 150: b (oldest) then a go; c stays.
        assert_eq!(choose_garbage(&layers, H, Some(150), now), ["a", "b"]);
        // A budget the in-use layers alone exceed: every unused one goes,
        // the running one stays.
        assert_eq!(choose_garbage(&layers, H, Some(10), now), ["a", "b", "c"]);
        // Within budget: nothing.
        assert!(choose_garbage(&layers, H, Some(220), now).is_empty());
        // Ties are broken by digest.
        let tied = [l("y", 10, 5, false), l("x", 10, 5, false)];
        assert_eq!(choose_garbage(&tied, H, Some(10), now), ["x"]);
    }
}
