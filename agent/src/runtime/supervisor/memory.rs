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
    crate::memory::release_binary_text();
    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
        if let Some((start, _)) = crate::memory::stack_mapping(&smaps) {
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
    crate::memory::trim_heap();
}
