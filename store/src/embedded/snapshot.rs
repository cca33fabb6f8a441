//! The snapshot file, `<data_dir>/store.snap`: the live state at one
//! log position, so that a restart reads it and the log written after it
//! instead of the whole history.
//!
//! Layout: `magic "DRVSNAP1" (8 bytes) | gen: u64 LE | len: u64 LE |
//! crc32: u32 LE | body (len bytes)`; the CRC (IEEE) covers the body, whose
//! layout is in `mvcc::snapshot`. `gen` counts the snapshots taken: the
//! log written after snapshot `gen` starts with a `LogStart { gen }`
//! record. A backup (Maintenance.Snapshot, `etcdctl snapshot save`) is
//! the same format with generation 0.
//!
//! A backup (see [`backup_image`]) is padded with zeros to a multiple of
//! 512 bytes and followed by the SHA-256 of everything before it, as
//! etcd's snapshot stream is: `etcdctl snapshot save` refuses a stream
//! whose length is not 32 more than a multiple of 512.
//!
//! A snapshot replaces the previous one atomically: written to
//! `store.snap.tmp`, fsynced, renamed over `store.snap`, then the directory
//! fsynced. A crash leaves either the old or the new file whole.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"DRVSNAP1";
const HEADER: usize = 8 + 8 + 8 + 4;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file does not start with [`MAGIC`].
    #[error("not a Drover store snapshot (no DRVSNAP1 header)")]
    Magic,
    /// The file is shorter than its header says.
    #[error("truncated: {have} bytes, the header announces {want}")]
    Truncated {
        /// Bytes present.
        have: u64,
        /// Bytes the header announces.
        want: u64,
    },
    /// The backup's trailing SHA-256 does not match.
    #[error("SHA-256 mismatch: the backup is damaged")]
    Sha256,
    /// The body fails its CRC.
    #[error("CRC mismatch on the {len}-byte body")]
    Crc {
        /// Body length.
        len: u64,
    },
}

/// A snapshot file's image: header and body.
pub(crate) fn encode(gen: u64, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + body.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&gen.to_le_bytes());
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    b.extend_from_slice(body);
    b
}

/// Checks a snapshot file's image; returns its generation and body.
pub(crate) fn decode(image: &[u8]) -> Result<(u64, &[u8]), SnapshotFileError> {
    if image.len() < HEADER || &image[..8] != MAGIC {
        return Err(SnapshotFileError::Magic);
    }
    let word = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&image[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let (gen, len) = (word(8), word(16));
    let mut c = [0u8; 4];
    c.copy_from_slice(&image[24..28]);
    let crc = u32::from_le_bytes(c);
    let image = strip_backup_trailer(image, len)?;
    let have = (image.len() - HEADER) as u64;
    if have != len {
        return Err(SnapshotFileError::Truncated {
            have: image.len() as u64,
            want: len.saturating_add(HEADER as u64),
        });
    }
    let body = &image[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err(SnapshotFileError::Crc { len });
    }
    Ok((gen, body))
}

/// `image` (a snapshot file's) as a backup stream: zero padding to a
/// multiple of 512 bytes, then the SHA-256 of the image and padding.
pub(crate) fn backup_image(mut image: Vec<u8>) -> Vec<u8> {
    use sha2::Digest;
    image.resize(image.len().div_ceil(512) * 512, 0);
    let sum = sha2::Sha256::digest(&image);
    image.extend_from_slice(&sum);
    image
}

/// The snapshot inside a backup (checking its SHA-256), or `image` itself
/// when it is a plain snapshot file of body length `len`.
fn strip_backup_trailer(image: &[u8], len: u64) -> Result<&[u8], SnapshotFileError> {
    use sha2::Digest;
    let exact = (HEADER as u64).saturating_add(len);
    if image.len() as u64 <= exact || image.len() % 512 != 32 {
        return Ok(image);
    }
    let (padded, sum) = image.split_at(image.len() - 32);
    if sha2::Sha256::digest(padded).as_slice() != sum {
        return Err(SnapshotFileError::Sha256);
    }
    let end = usize::try_from(exact)
        .unwrap_or(usize::MAX)
        .min(padded.len());
    if padded[end..].iter().any(|&b| b != 0) {
        return Err(SnapshotFileError::Sha256);
    }
    Ok(&padded[..end])
}

/// Replaces `path` by a file holding `bytes`, atomically and durably:
/// temp file (mode 0600), fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut f = super::dir::create_private(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// `path` with `.tmp` appended: where [`write_atomic`] stages it.
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}

/// Makes the directory entry of `path` durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
