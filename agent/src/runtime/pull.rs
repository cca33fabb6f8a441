//! [`Runtime`]'s side of images from registries: the node policy first
//! (before any request), then the digest recorded for the task, then the
//! pull ([`oci::registry::Puller`]).
//!
//! A tag is resolved once per deployment, not per node: the scheduler
//! records the digest of the deployment's first start and sends it with
//! every assignment of that deployment (`Assignment.image_pins`); the
//! agent then hands the runtime the pinned reference itself
//! (`crate::allocs::spec`), which is pulled as named. The task's own
//! record below covers what comes before a pin reaches the node (the
//! restarts of the very first start).

use drover_model::image_ref::ImageRef;
use tracing::info;

use super::files::{read_json, TaskDir};
use super::oci::{ResolvedImage, IMAGE_RECORD_NOTE};
use super::{Runtime, RuntimeError, TaskSpec};

impl Runtime {
    /// Pulls `image` for `spec`'s task. `image` is already pinned when its
    /// deployment has a digest; otherwise a task restarted in its
    /// directory pulls the digest its first start resolved (recorded in
    /// its `image.json`), never what the tag names now.
    pub(super) async fn pull_image(
        &self,
        spec: &TaskSpec,
        dir: &TaskDir,
        image: &ImageRef,
    ) -> Result<ResolvedImage, RuntimeError> {
        let recorded = read_json::<ResolvedImage>(&dir.image())
            .ok()
            .flatten()
            .and_then(|r| r.reference)
            .and_then(|r| ImageRef::parse(&r).ok())
            .filter(|r| r.name() == image.name() && r.digest.is_some());
        let wanted = match &recorded {
            Some(pinned) if image.digest.is_none() => {
                info!(alloc_id = %spec.alloc_id, task = %spec.task, image = %image, pinned = %pinned, "{IMAGE_RECORD_NOTE}");
                pinned
            }
            _ => image,
        };
        let mut resolved = self
            .puller
            .pull(&self.images, &self.policy.registries, wanted)
            .await?;
        // Named as the job named it; the pinned form says what runs.
        resolved.image = image.to_string().into();
        Ok(resolved)
    }

    /// The pinned reference of the image `alloc_id`/`task` runs, when it
    /// was pulled from a registry (`reg/web@sha256:...`).
    pub fn image_digest(&self, alloc_id: &str, task: &str) -> Option<String> {
        let dir = TaskDir::new(self.task_dir(alloc_id, task).ok()?);
        read_json::<ResolvedImage>(&dir.image())
            .ok()
            .flatten()
            .and_then(|r| r.reference)
    }
}
