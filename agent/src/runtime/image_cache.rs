//! [`Runtime`]'s side of the image cache: which layers tasks use, the
//! collection of the others under the node policy's `[images]`, and the
//! listing for `drover node images`.

use tracing::{info, warn};

use super::files::{read_json, TaskDir};
use super::oci::{self, CacheListing, InUse, ResolvedImage};
use super::{Runtime, RuntimeError};
use crate::io_error::IoError;

impl Runtime {
    /// Removes the unpacked image layers that no task directory's
    /// `image.json` names and that the node policy's `[images]` lets go
    /// (unused long enough, or the least recently used above the budget;
    /// [`super::ImageCache::sweep`]); skipped while a task with an image is being
    /// started. Called after a task with an image is removed, by the agent
    /// when it starts and periodically. Returns the removed layer digests
    /// (hex).
    pub fn collect_image_garbage(&self) -> Result<Vec<String>, RuntimeError> {
        let in_use = || self.images_in_use();
        let removed = self
            .images
            .sweep(&self.policy.images, oci::now_ms(), &in_use)
            .map_err(IoError::on(
                "collect garbage in image cache",
                self.images.root(),
            ))?;
        if !removed.is_empty() {
            info!(layers = ?removed, cache = %self.images.root().display(), "removed unused image layers");
        }
        Ok(removed)
    }

    /// The layer directories and manifests that task directories'
    /// `image.json` name; `None` (keep everything) when any task's record
    /// is unreadable.
    pub fn images_in_use(&self) -> Option<InUse> {
        let mut used = InUse::default();
        let tasks = match self.list() {
            Ok(tasks) => tasks,
            Err(error) => {
                warn!(%error, "listing tasks; keeping all image layers");
                return None;
            }
        };
        for (alloc_id, task) in tasks {
            let dir = TaskDir::new(self.task_dir(&alloc_id, &task).ok()?);
            match read_json::<ResolvedImage>(&dir.image()) {
                Ok(Some(image)) => {
                    used.manifests.insert(image.manifest);
                    used.layers.extend(image.layers);
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(alloc_id = %alloc_id, task = %task, %error, "image.json unreadable; keeping all image layers");
                    return None;
                }
            }
        }
        Some(used)
    }

    /// What the image cache holds ([`super::ImageCache::listing`]). Blocking.
    pub fn image_listing(&self) -> Result<CacheListing, RuntimeError> {
        let in_use = self.images_in_use().unwrap_or_default();
        self.images.listing(&in_use).map_err(|e| {
            IoError::new("list the image cache", self.images.root().to_owned(), e).into()
        })
    }
}
