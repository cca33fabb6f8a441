//! A pull's progress, for the allocation events of the task being started
//! (`Pulling`, then `Pulled`): layers and bytes done out of the image's,
//! counted as blobs arrive, and reported at a bounded rate ([`due`]): at
//! most one note per [`MIN_INTERVAL`], and only once a tenth of the bytes
//! or a layer more is done, so that a long pull adds a dozen events to
//! the allocation's, not one per second.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Least time between two progress notes of one pull.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a pull tells about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullNote {
    /// The manifest is read: what the pull has to do.
    Started {
        /// The image's layers.
        layers: usize,
        /// Of which already in the cache.
        cached: usize,
        /// The image's compressed layer bytes.
        bytes: u64,
    },
    /// Some more is done.
    Progress {
        /// Layers in the cache now (cached before or pulled).
        layers_done: usize,
        /// The image's layers.
        layers: usize,
        /// Compressed bytes done (cached layers count in full).
        bytes_done: u64,
        /// The image's compressed layer bytes.
        bytes: u64,
    },
    /// Every layer is in the cache.
    Done {
        /// The pinned reference (`reg/web@sha256:...`).
        pinned: String,
        /// Bytes actually downloaded by this pull.
        downloaded: u64,
        /// How long the pull took.
        took: Duration,
    },
}

/// Where a pull's notes go.
pub type ProgressFn = Arc<dyn Fn(PullNote) + Send + Sync>;

/// Whether a progress note is due: at least [`MIN_INTERVAL`] since the
/// last one, and a layer more done or a tenth of the bytes. Pure.
pub fn due(since_last: Duration, layers_changed: bool, bytes_since: u64, total: u64) -> bool {
    since_last >= MIN_INTERVAL && (layers_changed || bytes_since >= (total / 10).max(1))
}

/// Counts one pull's progress and sends the notes [`due`] lets through.
pub(super) struct Meter {
    sink: Option<ProgressFn>,
    layers: usize,
    bytes: u64,
    layers_done: AtomicUsize,
    bytes_done: AtomicU64,
    downloaded: AtomicU64,
    started: Instant,
    last: Mutex<(Instant, usize, u64)>,
}

impl Meter {
    /// A meter for `layers` layers of `bytes` bytes, `cached` of them
    /// already in the cache (told in `Started`; they count as done when
    /// [`Meter::cached_layer`] finds them); sends `Started`.
    pub(super) fn start(
        sink: Option<ProgressFn>,
        layers: usize,
        bytes: u64,
        cached: usize,
    ) -> Meter {
        let now = Instant::now();
        if let Some(s) = &sink {
            s(PullNote::Started {
                layers,
                cached,
                bytes,
            });
        }
        Meter {
            sink,
            layers,
            bytes,
            layers_done: AtomicUsize::new(0),
            bytes_done: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            started: now,
            last: Mutex::new((now, 0, 0)),
        }
    }

    /// A layer of `size` bytes was found in the cache: done, without a
    /// note of its own.
    pub(super) fn cached_layer(&self, size: u64) {
        self.bytes_done.fetch_add(size, Ordering::Relaxed);
        self.layers_done.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.1 += 1;
        last.2 += size;
    }

    /// `n` more bytes arrived.
    pub(super) fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
        self.downloaded.fetch_add(n, Ordering::Relaxed);
        self.maybe_note();
    }

    /// A transfer restarted from the beginning: its `n` bytes are undone.
    pub(super) fn undo_bytes(&self, n: u64) {
        self.bytes_done.fetch_sub(n, Ordering::Relaxed);
    }

    /// One more layer is in the cache.
    pub(super) fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
        self.maybe_note();
    }

    fn maybe_note(&self) {
        let Some(sink) = &self.sink else { return };
        let (layers_done, bytes_done) = (
            self.layers_done.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
        );
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let (at, l, b) = *last;
            if !due(
                now.duration_since(at),
                layers_done > l,
                bytes_done.saturating_sub(b),
                self.bytes,
            ) {
                return;
            }
            *last = (now, layers_done, bytes_done);
        }
        sink(PullNote::Progress {
            layers_done,
            layers: self.layers,
            bytes_done: bytes_done.min(self.bytes),
            bytes: self.bytes,
        });
    }

    /// Sends `Done`.
    pub(super) fn finish(&self, pinned: String) {
        if let Some(s) = &self.sink {
            s(PullNote::Done {
                pinned,
                downloaded: self.downloaded.load(Ordering::Relaxed),
                took: self.started.elapsed(),
            });
        }
    }
}

/// `12.3 MB` (decimal megabytes, one decimal).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_rate_bounded_and_report_increasing_bytes() {
        let ms = Duration::from_millis;
        // Under a second: never, whatever changed.
        assert!(!due(ms(999), true, 1 << 30, 100));
        // A second on: a layer more, or a tenth of the bytes.
        assert!(due(ms(1000), true, 0, 100));
        assert!(due(ms(1500), false, 10, 100));
        assert!(!due(ms(5000), false, 9, 100));
        // A tiny image: any byte counts.
        assert!(due(ms(1000), false, 1, 3));

        let notes = Arc::new(Mutex::new(Vec::new()));
        let n2 = Arc::clone(&notes);
        let sink: ProgressFn = Arc::new(move |n| n2.lock().unwrap().push(n));
        let m = Meter::start(Some(sink), 2, 1000, 1);
        m.cached_layer(400);
        // Right away: too soon for a note.
        m.add_bytes(300);
        {
            // As if the last note were long ago.
            let mut last = m.last.lock().unwrap();
            last.0 = Instant::now().checked_sub(ms(2000)).unwrap();
        }
        m.add_bytes(300);
        m.layer_done();
        m.finish("r/x@sha256:00".into());
        let notes = notes.lock().unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(
            notes[0],
            PullNote::Started {
                layers: 2,
                cached: 1,
                bytes: 1000
            }
        );
        assert_eq!(
            notes[1],
            PullNote::Progress {
                layers_done: 1,
                layers: 2,
                bytes_done: 1000,
                bytes: 1000
            }
        );
        assert!(
            matches!(
                &notes[2],
                PullNote::Done {
                    downloaded: 600,
                    ..
                }
            ),
            "{:?}",
            notes[2]
        );
    }
}
