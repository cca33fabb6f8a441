//! Which lower layers share one idmapped view of their parent.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;

use super::shared_parent;

#[test]
fn layers_of_one_parent_share_its_view_unless_one_is_a_link_or_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = tmp.path().join("layers");
    for d in ["a", "b", "c"] {
        fs::create_dir_all(layers.join(d)).unwrap();
    }
    fs::create_dir_all(tmp.path().join("other/d")).unwrap();
    symlink(layers.join("a"), layers.join("link")).unwrap();
    let (a, b, c) = (layers.join("a"), layers.join("b"), layers.join("c"));
    assert_eq!(
        shared_parent(&[c.clone(), b.clone(), a.clone()]),
        Some(layers.as_path())
    );
    // One layer (a directory rootfs): a view of its own.
    assert_eq!(shared_parent(std::slice::from_ref(&a)), None);
    // Parents that differ, a symlink, a missing directory: each its own.
    assert_eq!(
        shared_parent(&[a.clone(), tmp.path().join("other/d")]),
        None
    );
    assert_eq!(shared_parent(&[a.clone(), layers.join("link")]), None);
    assert_eq!(shared_parent(&[a, layers.join("gone")]), None);
}
