//! Giving back the page-table entries of code that ran once, at start.
//!
//! The agent, the scheduler, the CLI and every allocation's supervisor are
//! one binary, so its pages sit in the page cache once and are shared by
//! all of them. The kernel still counts, in each process's RSS, every page
//! of it that the process has mapped, and it maps file pages around each
//! fault (64 KiB at a time by default, "fault-around"): argument parsing,
//! configuration, TLS set-up and the first reconciliation leave an agent
//! that then idles with some 13 MiB of the binary's text counted against
//! it although it runs a fraction of that.
//!
//! [`release_binary_text`] drops this process's mappings of the binary's
//! read-only, never-copied segments (`MADV_DONTNEED` on a private file
//! mapping whose pages are all clean): nothing is lost, the page cache
//! keeps the pages, and the next access maps them back from there. What
//! stays counted afterwards is the code the process goes on running. A
//! segment holding a copied page, such as the relocated `.data.rel.ro`, is
//! never touched: dropping it would read the unrelocated bytes back from
//! the file. The supervisor does the same once its task runs
//! (`runtime::supervisor`), the agent once it has registered and again
//! after each burst of work once the node is quiet
//! ([`release_after_start`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long after its first registration the agent gives back its start-up
/// pages: the first reconciliation, report and heartbeat are done by then.
pub const RELEASE_AFTER_REGISTERED: Duration = Duration::from_secs(2);

/// How long the node must have been quiet (no assignment applied) after a
/// burst of work before the agent gives back the pages the burst mapped
/// (starting a hundred allocations maps megabytes of code that then idles).
pub const QUIET_FOR: Duration = Duration::from_secs(10);

/// Set once the agent's releases are scheduled: one loop per process.
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Assignments applied so far ([`busy`]).
static WORK: AtomicU64 = AtomicU64::new(0);

/// Counts one piece of work (an assignment applied): the next release waits
/// until the node has been quiet for [`QUIET_FOR`].
pub fn busy() {
    WORK.fetch_add(1, Ordering::Relaxed);
}

/// Once per process: [`RELEASE_AFTER_REGISTERED`] from now, gives back the
/// binary's start-up pages and the heap freed since; then, after each
/// burst of work, once the node has been quiet for [`QUIET_FOR`], the pages
/// the burst mapped. (On a blocking thread: it reads `/proc/self/smaps`.)
pub fn release_after_start() {
    if SCHEDULED.swap(true, Ordering::Relaxed) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(RELEASE_AFTER_REGISTERED).await;
        release_now().await;
        let mut released_at = WORK.load(Ordering::Relaxed);
        let mut seen = released_at;
        loop {
            tokio::time::sleep(QUIET_FOR).await;
            let now = WORK.load(Ordering::Relaxed);
            if now != released_at && now == seen {
                release_now().await;
                released_at = now;
            }
            seen = now;
        }
    });
}

/// Gives back the binary's clean pages and the freed heap, on a blocking
/// thread.
async fn release_now() {
    let released = tokio::task::spawn_blocking(|| {
        let kib = release_binary_text();
        trim_heap();
        kib
    })
    .await;
    match released {
        Ok(kib) => tracing::debug!(released_kib = kib, "gave back the pages of code run once"),
        Err(error) => tracing::debug!(%error, "the page release task ended early"),
    }
}

/// Drops this process's page-table entries for its executable's read-only,
/// never-copied mappings; returns the KiB they had resident. Best effort:
/// what it cannot read is left as it is.
pub fn release_binary_text() -> u64 {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return 0;
    };
    let mut released = 0;
    for m in droppable_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: a range of this process's own mapping of the binary,
        // read-only and holding no private (copied) page, so every page
        // equals the file's bytes: dropping its page-table entries loses
        // nothing, and any later access faults the same pages back in from
        // the page cache. Nothing in Drover mprotects its own executable,
        // so the range cannot become writable meanwhile.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += m.rss_kib;
        }
    }
    released
}

/// Returns the heap's freed memory to the kernel (`malloc_trim`).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim(3) takes no pointer and is thread-safe (it takes
    // each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A mapping of `/proc/self/smaps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Resident KiB.
    pub rss_kib: u64,
}

/// The mappings of `exe` in `smaps` (the text of `/proc/<pid>/smaps`) that
/// are not writable and hold no anonymous (copied-on-write) page.
pub(crate) fn droppable_mappings(smaps: &str, exe: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some((range, perms, path)) = mapping_header(line) {
            out.extend(current.take());
            if path == exe && !perms.contains('w') {
                current = range_of(range).map(|(start, end)| Mapping {
                    start,
                    end,
                    rss_kib: 0,
                });
            }
        } else if let Some(kb) = line
            .strip_prefix("Anonymous:")
            .or_else(|| line.strip_prefix("Swap:"))
        {
            // A copied page, resident or swapped out (then it shows as
            // swap only): dropping it would bring back the file's bytes.
            if kib(kb) != Some(0) {
                current = None;
            }
        } else if let (Some(kb), Some(m)) = (line.strip_prefix("Rss:"), current.as_mut()) {
            m.rss_kib = kib(kb).unwrap_or(0);
        }
    }
    out.extend(current);
    out
}

/// `(start, end)` of the `[stack]` mapping in `smaps`.
pub(crate) fn stack_mapping(smaps: &str) -> Option<(usize, usize)> {
    smaps
        .lines()
        .filter_map(mapping_header)
        .find(|(_, _, path)| *path == "[stack]")
        .and_then(|(range, _, _)| range_of(range))
}

/// A mapping's header line: `start-end perms offset dev inode [path]`.
fn mapping_header(line: &str) -> Option<(&str, &str, &str)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    if !range.contains('-') || perms.len() != 4 || range.ends_with(':') {
        return None;
    }
    let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
    // The path may contain spaces: everything after the inode.
    let path = line
        .splitn(6, char::is_whitespace)
        .nth(5)
        .map_or("", str::trim);
    Some((range, perms, path))
}

fn range_of(range: &str) -> Option<(usize, usize)> {
    let (start, end) = range.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

/// The number of a `   123 kB` field.
fn kib(field: &str) -> Option<u64> {
    field.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0000-55d2000 r--p 00000000 fe:00 42                         /usr/bin/drover
Rss:                   8 kB
Anonymous:             0 kB
55d2000-55d9000 r-xp 00002000 fe:00 42                         /usr/bin/drover
Rss:                  28 kB
Anonymous:             0 kB
55d9000-55da000 r--p 00009000 fe:00 42                         /usr/bin/drover
Anonymous:             4 kB
55d9800-55d9900 r--p 00009800 fe:00 42                         /usr/bin/drover
Anonymous:             0 kB
Swap:                  4 kB
55da000-55db000 rw-p 0000a000 fe:00 42                         /usr/bin/drover
Anonymous:             4 kB
7f00000-7f01000 r-xp 00000000 fe:00 7                          /usr/lib/libc.so.6
Anonymous:             0 kB
7ffd000-7fff000 rw-p 00000000 00:00 0                          [stack]
Anonymous:             8 kB
";

    #[test]
    fn only_the_binarys_unmodified_read_only_mappings_are_dropped() {
        // Not the relocated (copied) read-only ones, resident or swapped
        // out, not the data, not libc.
        let got = droppable_mappings(SMAPS, "/usr/bin/drover");
        let ranges: Vec<(usize, usize)> = got.iter().map(|m| (m.start, m.end)).collect();
        assert_eq!(ranges, [(0x55d0000, 0x55d2000), (0x55d2000, 0x55d9000)]);
        assert_eq!(got.iter().map(|m| m.rss_kib).sum::<u64>(), 8 + 28);
        assert!(droppable_mappings(SMAPS, "/usr/bin/other").is_empty());
        assert_eq!(stack_mapping(SMAPS), Some((0x7ffd000, 0x7fff000)));
        // A path with spaces is kept whole.
        let spaced = "1000-2000 r-xp 00000000 fe:00 9    /opt/my tools/drover\nAnonymous: 0 kB\n";
        let got = droppable_mappings(spaced, "/opt/my tools/drover");
        assert_eq!(
            got.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(),
            [(0x1000, 0x2000)]
        );
    }

    fn resident_text_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        droppable_mappings(&smaps, &exe.to_string_lossy())
            .iter()
            .map(|m| m.rss_kib)
            .sum()
    }

    #[test]
    fn releasing_drops_the_resident_text_and_the_process_runs_on() {
        let before = resident_text_kib();
        assert!(before > 0, "the test binary's text is resident");
        let released = release_binary_text();
        let after = resident_text_kib();
        assert!(
            released >= before / 2,
            "released {released} KiB of {before}"
        );
        assert!(
            after < before,
            "text resident after: {after} KiB of {before}"
        );
        // Code runs on, faulted back from the page cache.
        let text = ["still", "running"].join(" ");
        assert_eq!(text.len(), 13);
    }
}
