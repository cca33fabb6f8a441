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

use std::sync::Arc;

use drover_model::image_ref::ImageRef;
use drover_model::EventType;
use tokio::sync::broadcast;
use tracing::info;

use super::files::{read_json, TaskDir};
use super::oci::registry::progress::megabytes;
use super::oci::registry::{ProgressFn, PullNote};
use super::oci::{ResolvedImage, IMAGE_RECORD_NOTE};
use super::{Runtime, RuntimeError, TaskSpec};
use crate::assignment::TaskEvent;

/// An event of a task's image pull, for its allocation's events
/// ([`Runtime::pull_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullEvent {
    /// The allocation whose task is being started.
    pub alloc_id: String,
    /// The event (`Pulling` or `Pulled`).
    pub event: TaskEvent,
}

/// Pull events waiting for a session to take them; older ones are dropped
/// first when none keeps up.
pub(super) const PULL_EVENTS_QUEUE: usize = 256;

/// The message of an event for `note` about `image`.
pub fn note_event(image: &str, note: &PullNote) -> (EventType, String) {
    match note {
        PullNote::Started {
            layers,
            cached,
            bytes,
        } => (
            EventType::Pulling,
            format!(
                "pulling image {image}: {layers} layers ({cached} cached), {}",
                megabytes(*bytes)
            ),
        ),
        PullNote::Progress {
            layers_done,
            layers,
            bytes_done,
            bytes,
        } => (
            EventType::Pulling,
            format!(
                "pulling image {image}: {layers_done}/{layers} layers, {} of {} \
                 ({bytes_done} of {bytes} bytes)",
                megabytes(*bytes_done),
                megabytes(*bytes)
            ),
        ),
        PullNote::Done {
            pinned,
            downloaded,
            took,
        } => (
            EventType::Pulled,
            format!(
                "pulled image {pinned} ({} downloaded in {:.1} s)",
                megabytes(*downloaded),
                took.as_secs_f64()
            ),
        ),
    }
}

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
        let sink = self.pull_sink(spec, wanted.to_string());
        let mut resolved = self
            .puller
            .pull(&self.images, &self.policy.registries, wanted, Some(sink))
            .await?;
        // Named as the job named it; the pinned form says what runs.
        resolved.image = image.to_string().into();
        Ok(resolved)
    }

    /// Sends `event` of allocation `alloc_id` with the pull events (an
    /// event about a task's image that no state change shows).
    pub fn note_event(&self, alloc_id: &str, event: TaskEvent) {
        // No receiver: no session to send it on; the caller logged it.
        let _ = self.pull_events.send(PullEvent {
            alloc_id: alloc_id.to_owned(),
            event,
        });
    }

    /// The events of image pulls as they happen, for the session to send
    /// between status reports.
    pub fn pull_events(&self) -> broadcast::Receiver<PullEvent> {
        self.pull_events.subscribe()
    }

    fn pull_sink(&self, spec: &TaskSpec, image: String) -> ProgressFn {
        let (tx, alloc_id, task) = (
            self.pull_events.clone(),
            spec.alloc_id.clone(),
            spec.task.clone(),
        );
        Arc::new(move |note: PullNote| {
            let (kind, message) = note_event(&image, &note);
            info!(alloc_id = %alloc_id, task = %task, image = %image, "{message}");
            // No receiver: no session to send it on; it is only logged.
            let _ = tx.send(PullEvent {
                alloc_id: alloc_id.clone(),
                event: TaskEvent {
                    time_unix_ms: drover_model::now_ms(),
                    task: task.clone(),
                    kind,
                    message,
                },
            });
        })
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
