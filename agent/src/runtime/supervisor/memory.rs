//! Giving back, once the task runs, the memory the supervisor used to set
//! it up: the idle supervisor only copies logs and waits.

/// Gives back the memory that setting the task up used and the idle
/// supervisor (copying logs, waiting) does not, so that each allocation
/// costs little while its task runs:
///
/// - the page-table entries of the `drover` binary's read-only, unmodified
///   mappings (its code and constants: setting up touched megabytes of
///   them, the idle loop needs a few pages, which fault back in from the
///   page cache);
/// - the stack pages below the current frame;
/// - the heap that was freed (`malloc_trim`).
///
/// Best effort: anything it cannot read is left as it is.
pub(super) fn release_setup_memory() {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    if let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) {
        for (start, end) in droppable_mappings(&smaps, &exe.to_string_lossy()) {
            // SAFETY: a range of this process's own mapping of the binary,
            // read-only and holding no private (modified) page: dropping
            // its page-table entries loses nothing, and any later access
            // faults the same file pages back in.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
        if let Some((start, _)) = stack_mapping(&smaps) {
            // 16 KiB below this frame stay: madvise(2) itself runs there.
            let limit = (sp & !0xfff).saturating_sub(16 * 1024);
            if limit > start {
                // SAFETY: stack pages below the live frames (nothing but
                // finished calls' leftovers, no signal handler runs on
                // them); if touched again they come back zero-filled,
                // as stack growth always does.
                unsafe {
                    libc::madvise(
                        start as *mut libc::c_void,
                        limit - start,
                        libc::MADV_DONTNEED,
                    );
                }
            }
        }
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim(3) takes no pointer and is safe to call at any
    // time; the supervisor has one thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `(start, end)` of the mappings of `exe` in `smaps` (the text of
/// `/proc/<pid>/smaps`) that are not writable and hold no anonymous
/// (copied-on-write) page.
fn droppable_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some((range, perms, path)) = mapping_header(line) {
            if let Some(m) = current.take() {
                out.push(m);
            }
            if path == exe && !perms.contains('w') {
                current = range_of(range);
            }
        } else if let Some(kb) = line
            .strip_prefix("Anonymous:")
            .or_else(|| line.strip_prefix("Swap:"))
        {
            // A copied page, resident or swapped out (then it shows as
            // swap only): dropping it would bring back the file's bytes.
            if kb.trim().trim_end_matches("kB").trim() != "0" {
                current = None;
            }
        }
    }
    out.extend(current);
    out
}

/// `(start, end)` of the `[stack]` mapping in `smaps`.
fn stack_mapping(smaps: &str) -> Option<(usize, usize)> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0000-55d2000 r--p 00000000 fe:00 42                         /usr/bin/drover
Rss:                   8 kB
Anonymous:             0 kB
55d2000-55d9000 r-xp 00002000 fe:00 42                         /usr/bin/drover
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
        assert_eq!(
            droppable_mappings(SMAPS, "/usr/bin/drover"),
            [(0x55d0000, 0x55d2000), (0x55d2000, 0x55d9000)]
        );
        assert!(droppable_mappings(SMAPS, "/usr/bin/other").is_empty());
        assert_eq!(stack_mapping(SMAPS), Some((0x7ffd000, 0x7fff000)));
        // A path with spaces is kept whole.
        let spaced = "1000-2000 r-xp 00000000 fe:00 9    /opt/my tools/drover\nAnonymous: 0 kB\n";
        assert_eq!(
            droppable_mappings(spaced, "/opt/my tools/drover"),
            [(0x1000, 0x2000)]
        );
    }
}
