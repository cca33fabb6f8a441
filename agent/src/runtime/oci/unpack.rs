//! Unpacking one layer tar into a fresh directory, refusing entries that
//! would escape it and converting OCI whiteouts to overlayfs ones.
//!
//! Nothing here follows a symlink on the host: the target directory is new
//! and private to this unpack, every parent of an entry is checked with
//! `lstat` to be a real directory (not a symlink) before anything is
//! created in it, and files are created with `O_EXCL | O_NOFOLLOW`.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tar::EntryType;
use tracing::warn;

use super::layout::Descriptor;
use super::OciError;

/// How the layer blob is compressed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The layer media types the node unpacks, as named in errors.
pub(super) const SUPPORTED_LAYERS: &str = "tar, tar+gzip or tar+zstd";

impl Compression {
    /// The compression of a layer of `media_type` (OCI or Docker v2
    /// schema 2); `None` for a media type that is not a layer we unpack.
    pub(super) fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// OCI whiteout prefix: `.wh.<name>` deletes `<name>` of lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque marker: the directory hides everything of lower layers.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A failure while unpacking, naming the entry when one is involved.
#[derive(Debug)]
pub(super) struct UnpackError {
    entry: String,
    reason: String,
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {:?} refused: {}", self.entry, self.reason)
    }
}

impl UnpackError {
    fn new(entry: &str, reason: impl Into<String>) -> Self {
        Self {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn into_oci(self, image: &Path, desc: &Descriptor) -> OciError {
        OciError::BadEntry {
            image: image.to_owned(),
            digest: desc.digest.clone(),
            entry: self.entry,
            reason: self.reason,
        }
    }
}

/// Unpacks the layer read from `reader` into `root`, an empty directory.
pub(super) fn unpack(
    reader: Box<dyn Read + Send>,
    compression: Compression,
    root: &Path,
) -> Result<(), UnpackError> {
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => reader,
        Compression::Gzip => Box::new(GzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| UnpackError::new("", format!("starting the zstd decoder: {e}")))?,
        ),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| UnpackError::new("", format!("reading the layer tar: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| UnpackError::new("", format!("reading the layer tar: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = relative(&raw)? else {
            continue; // The layer root itself.
        };
        unpack_entry(&mut entry, &raw, &rel, root)?;
    }
    Ok(())
}

/// The entry path as components below the root; `None` for the root.
/// Absolute paths and `..` are refused.
fn relative(raw: &str) -> Result<Option<PathBuf>, UnpackError> {
    let mut rel = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnpackError::new(raw, "it contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::new(raw, "it is an absolute path"))
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Makes sure every directory of `rel`'s parent exists below `root` as a
/// real directory (creating missing ones, refusing symlinks and files);
/// returns the parent's path.
fn ensure_parents(
    root: &Path,
    rel: &Path,
    raw: &str,
    create: bool,
) -> Result<PathBuf, UnpackError> {
    let mut path = root.to_owned();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            path.push(c);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::new(
                        raw,
                        format!("its parent {} is a symlink", display_rel(root, &path)),
                    ))
                }
                Ok(_) => {
                    return Err(UnpackError::new(
                        raw,
                        format!("its parent {} is not a directory", display_rel(root, &path)),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    // A parent the tar does not list: 0755 as under the
                    // usual umask (the agent's is 0077), so that the
                    // task's users may enter it.
                    fs::create_dir(&path)
                        .and_then(|()| {
                            fs::set_permissions(
                                &path,
                                std::os::unix::fs::PermissionsExt::from_mode(0o755),
                            )
                        })
                        .map_err(|e| {
                            UnpackError::new(raw, format!("mkdir {}: {e}", path.display()))
                        })?;
                }
                Err(e) => {
                    return Err(UnpackError::new(
                        raw,
                        format!("lstat {}: {e}", path.display()),
                    ))
                }
            }
        }
    }
    Ok(path)
}

fn display_rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Removes whatever is at `path` (never following a symlink), unless it is
/// a directory and `keep_dir`.
fn clear(path: &Path, keep_dir: bool, raw: &str) -> Result<(), UnpackError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| UnpackError::new(raw, format!("replacing {}: {e}", path.display())))
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &str,
    rel: &Path,
    root: &Path,
) -> Result<(), UnpackError> {
    let parent = ensure_parents(root, rel, raw, true)?;
    let name = rel
        .file_name()
        .ok_or_else(|| UnpackError::new(raw, "it has no file name"))?;
    let name_str = name.to_string_lossy();
    if name_str == OPAQUE_MARKER {
        return set_opaque(&parent, raw);
    }
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(UnpackError::new(raw, "malformed whiteout"));
        }
        let path = parent.join(hidden);
        clear(&path, false, raw)?;
        // overlayfs's whiteout: a character device 0:0.
        return mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| UnpackError::new(raw, format!("mknod {} 0:0: {e}", path.display())));
    }
    let path = parent.join(name);
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
    let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
    let io_fail =
        |op: &str, e: io::Error| UnpackError::new(raw, format!("{op} {}: {e}", path.display()));
    match header.entry_type() {
        EntryType::Directory => {
            clear(&path, true, raw)?;
            if !path.is_dir() {
                fs::create_dir(&path).map_err(|e| io_fail("mkdir", e))?;
            }
            chown_chmod(&path, uid, gid, Some(mode)).map_err(|e| io_fail("chown/chmod", e))?;
        }
        EntryType::Regular | EntryType::Continuous => {
            clear(&path, false, raw)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| io_fail("create", e))?;
            io::copy(entry, &mut file).map_err(|e| io_fail("write", e))?;
            drop(file);
            chown_chmod(&path, uid, gid, Some(mode)).map_err(|e| io_fail("chown/chmod", e))?;
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| UnpackError::new(raw, "symlink without a target"))?;
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
            check_symlink_target(rel, &target, raw)?;
            clear(&path, false, raw)?;
            std::os::unix::fs::symlink(&target, &path).map_err(|e| io_fail("symlink", e))?;
            chown_chmod(&path, uid, gid, None).map_err(|e| io_fail("lchown", e))?;
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| UnpackError::new(raw, "hard link without a target"))?;
            let target_path = hard_link_target(&target, root, raw)?;
            clear(&path, false, raw)?;
            // link(2) does not follow a symlink at the target.
            fs::hard_link(&target_path, &path).map_err(|e| io_fail("link", e))?;
        }
        EntryType::Fifo => {
            clear(&path, false, raw)?;
            mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(mode), 0)
                .map_err(|e| UnpackError::new(raw, format!("mkfifo {}: {e}", path.display())))?;
            chown_chmod(&path, uid, gid, Some(mode)).map_err(|e| io_fail("chown/chmod", e))?;
        }
        EntryType::Char | EntryType::Block => {
            // A device node from an image could open a host device; the
            // task's /dev is built by the runtime instead.
            warn!(entry = %raw, "skipping device node in image layer");
        }
        other => {
            warn!(entry = %raw, kind = ?other, "skipping unsupported tar entry type");
        }
    }
    Ok(())
}

/// Where a hard link entry's `target` (relative to the layer root) is,
/// checked: inside the layer, not a directory, existing.
fn hard_link_target(target: &[u8], root: &Path, raw: &str) -> Result<PathBuf, UnpackError> {
    let target_raw = String::from_utf8_lossy(target).into_owned();
    let target_rel = relative(&target_raw)
        .map_err(|e| {
            UnpackError::new(
                raw,
                format!("hard link target {target_raw:?}: {}", e.reason),
            )
        })?
        .ok_or_else(|| UnpackError::new(raw, "hard link to the layer root"))?;
    let target_parent = ensure_parents(root, &target_rel, raw, false).map_err(|e| {
        UnpackError::new(
            raw,
            format!("hard link target {target_raw:?}: {}", e.reason),
        )
    })?;
    let target_path = target_parent.join(target_rel.file_name().unwrap_or_default());
    match fs::symlink_metadata(&target_path) {
        Ok(m) if !m.is_dir() => Ok(target_path),
        Ok(_) => Err(UnpackError::new(raw, "hard link to a directory")),
        Err(e) => Err(UnpackError::new(
            raw,
            format!("hard link target {target_raw:?}: {e}"),
        )),
    }
}

/// A relative symlink target may not climb above the layer root from where
/// the link sits (absolute targets are resolved inside the task's root at
/// runtime, and nothing on the host follows them).
fn check_symlink_target(rel: &Path, target: &Path, raw: &str) -> Result<(), UnpackError> {
    if target.is_absolute() {
        return Ok(());
    }
    let mut depth = rel.parent().map_or(0, |p| p.components().count());
    for c in target.components() {
        match c {
            Component::ParentDir if depth == 0 => {
                return Err(UnpackError::new(
                    raw,
                    format!("symlink target {} escapes the layer root", target.display()),
                ))
            }
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

fn chown_chmod(
    path: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> io::Result<()> {
    lchown(path, uid, gid)?;
    // After chown, which clears set-id bits.
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Marks `dir` opaque for overlayfs (`trusted.overlay.opaque=y`).
fn set_opaque(dir: &Path, raw: &str) -> Result<(), UnpackError> {
    let c_path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| UnpackError::new(raw, "path contains NUL"))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated and the value buffer is valid
    // for the 1 byte passed; all outlive the call.
    let rc = unsafe { libc::lsetxattr(c_path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(UnpackError::new(
            raw,
            format!(
                "lsetxattr({}, trusted.overlay.opaque=y): {}",
                dir.display(),
                io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, content).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn zstd_layers_unpack_and_media_types_map() {
        let blob = zstd::encode_all(&tar_of("hello", b"zstd layer")[..], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        unpack(
            Box::new(std::io::Cursor::new(blob)),
            Compression::Zstd,
            &root,
        )
        .unwrap();
        assert_eq!(fs::read(root.join("hello")).unwrap(), b"zstd layer");
        // Gzip bytes are not zstd: refused, not unpacked as garbage.
        let root2 = dir.path().join("root2");
        fs::create_dir(&root2).unwrap();
        let err = unpack(
            Box::new(std::io::Cursor::new(b"\x1f\x8b not zstd".to_vec())),
            Compression::Zstd,
            &root2,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("layer tar") || err.to_string().contains("zstd"),
            "{err}"
        );
        assert!(matches!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        ));
        assert!(matches!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        ));
        assert!(Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+lz4").is_none());
    }
}
