//! What the log-like records the scheduler keeps (the audit trail, the
//! allocation events) share: names that sort in time order, so that the
//! store's [`drover_store::Store::keep_last`] and `delete_before` drop the
//! oldest first, and texts clipped to a bounded size.

/// The record name of an entry at `time_unix_ms`: the time in 16 digits,
/// so that names sort in time order, then `suffix` in 16 hex digits
/// (random, or a hash of the entry so that the same entry written twice
/// lands on one key).
pub fn time_name(time_unix_ms: i64, suffix: u64) -> String {
    format!("{:016}-{suffix:016x}", time_unix_ms.max(0))
}

/// The name bound below which every record is older than `time_unix_ms`.
pub fn time_bound(time_unix_ms: i64) -> String {
    format!("{:016}", time_unix_ms.max(0))
}

/// `s` cut to at most `max` bytes on a char boundary, with `…` when cut.
pub fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A stable 64-bit FNV-1a hash of `parts` (each followed by a 0 byte, so
/// that `("ab", "c")` and `("a", "bc")` differ): the same on every
/// scheduler and every run, unlike `std`'s `DefaultHasher`.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_time_order() {
        let (a, b) = (time_name(999, u64::MAX), time_name(1000, 0));
        assert!(a < b, "{a} {b}");
        assert!(time_name(5_000, 7).starts_with(&time_bound(5_000)));
        assert!(time_bound(4_999) < time_name(5_000, 0));
    }

    #[test]
    fn long_texts_are_clipped_on_a_char_boundary() {
        let s = clip("é".repeat(100), 51);
        assert!(s.len() <= 51 + '…'.len_utf8());
        assert!(s.ends_with('…'));
        assert_eq!(clip("short".into(), 51), "short");
    }

    #[test]
    fn hashes_are_stable_and_separate_their_parts() {
        assert_eq!(stable_hash(&[b"a"]), stable_hash(&[b"a"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        // FNV-1a of "a\0": fixed, whatever the platform.
        assert_eq!(stable_hash(&[b"a"]), 0x089b_e207_b544_f1e4);
    }
}
