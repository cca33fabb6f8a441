//! Looking a path up in a stack of unpacked layers as overlayfs will
//! merge them (whiteouts, opaque directories, symlinks resolved inside the
//! merged root), without mounting anything: the agent checks a task's
//! command before its supervisor starts.

use std::ffi::CString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;

/// One component's lookup in the directories that make up a merged
/// directory (top layer first).
enum Found {
    Missing,
    /// A directory, made of these per-layer directories.
    Dir(Vec<PathBuf>),
    /// A file, symlink or other non-directory, from the topmost layer.
    Other(PathBuf, Metadata),
}

fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 1];
    // SAFETY: NUL-terminated strings and a buffer of the length passed, all
    // alive across the call.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

fn step(dirs: &[PathBuf], name: &std::ffi::OsStr) -> Found {
    let mut merged = Vec::new();
    for dir in dirs {
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if is_whiteout(&meta) {
            break;
        }
        if meta.is_dir() {
            let opaque = is_opaque(&path);
            merged.push(path);
            if opaque {
                break;
            }
        } else {
            // A non-directory hides everything below it; below a directory
            // it is hidden itself.
            if merged.is_empty() {
                return Found::Other(path, meta);
            }
            break;
        }
    }
    if merged.is_empty() {
        Found::Missing
    } else {
        Found::Dir(merged)
    }
}

/// Whether `path` (absolute, as the task sees it) names an executable
/// regular file in the overlay of `layers` (top first).
pub(crate) fn is_executable_in_layers(layers: &[PathBuf], path: &Path) -> bool {
    find_file_in_layers(layers, path)
        .is_some_and(|(_, meta)| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The content of the regular file `path` (absolute, as the task sees it)
/// in the overlay of `layers` (top first); `None` when missing. At most
/// 4 MiB (passwd and group files).
pub(crate) fn read_in_layers(layers: &[PathBuf], path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let (file, meta) = find_file_in_layers(layers, path)?;
    if !meta.is_file() {
        return None;
    }
    let mut out = Vec::new();
    fs::File::open(file)
        .ok()?
        .take(4 << 20)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The layer file that `path` names in the merged view (symlinks resolved
/// inside it), with its metadata; `None` when missing or a directory.
fn find_file_in_layers(layers: &[PathBuf], path: &Path) -> Option<(PathBuf, Metadata)> {
    let mut pending: Vec<PathBuf> = vec![path.to_owned()];
    // The chain of merged directories from the root to the current one.
    let root: Vec<PathBuf> = layers.to_vec();
    let mut stack: Vec<Vec<PathBuf>> = vec![root.clone()];
    let mut links = 0;
    // Components still to walk, in order (reversed for popping).
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    while let Some(p) = pending.pop() {
        if p.is_absolute() {
            stack.truncate(1);
        }
        let mut comps: Vec<std::ffi::OsString> = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => comps.push(n.to_owned()),
                Component::ParentDir => comps.push("..".into()),
                _ => {}
            }
        }
        comps.reverse();
        // New components come before what remained of the previous path.
        todo.extend(comps);
        while let Some(name) = todo.pop() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let current = stack.last()?;
            match step(current, &name) {
                Found::Missing => return None,
                Found::Dir(dirs) => stack.push(dirs),
                Found::Other(file, meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    let target = fs::read_link(&file).ok()?;
                    pending.push(target);
                    break;
                }
                Found::Other(file, meta) => {
                    return todo.is_empty().then_some((file, meta));
                }
            }
        }
    }
    None
}
