//! Unit tests that need neither root nor a supervisor; unpacking with
//! whiteouts and running tasks on images is in `tests/tests/runtime_oci.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::lookup::is_executable_in_layers;
use super::{ImageCache, ImageDefaults, OciError};
use crate::runtime::{Rootfs, RuntimeError, TaskSpec};

fn spec(command: &[&str], image: &str) -> TaskSpec {
    TaskSpec {
        alloc_id: "a1".to_owned(),
        task: "web".to_owned(),
        hostname: "web-1".to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::from([("B".to_owned(), "task".to_owned())]),
        kill_timeout_ms: 100,
        cpu_millis: 0,
        memory_mb: 0,
        pids_max: 0,
        rootfs: Some(Rootfs::Oci {
            image: image.into(),
        }),
        network: None,
        logs: Default::default(),
        ..Default::default()
    }
}

#[test]
fn oci_rootfs_json_shape_and_validation() {
    let oci = Rootfs::Oci {
        image: "/srv/img.tar".into(),
    };
    let json = serde_json::json!({"type": "oci", "image": "/srv/img.tar"});
    assert_eq!(serde_json::to_value(&oci).expect("serialize"), json);
    assert_eq!(serde_json::from_value::<Rootfs>(json).expect("parse"), oci);
    // An empty command is left to the image; a relative path that is no
    // registry reference is refused (`img` is docker.io/library/img).
    assert!(spec(&[], "/srv/img").validate().is_ok());
    assert!(spec(&[], "img").validate().is_ok());
    let err = spec(&[], "../img").validate().expect_err("relative image");
    assert!(
        err.to_string()
            .contains("../img must be an absolute path or an image reference"),
        "{err}"
    );
}

#[test]
fn image_defaults_fill_the_command_and_lie_under_the_env() {
    let defaults = ImageDefaults {
        entrypoint: vec!["/bin/app".into()],
        cmd: vec!["--serve".into()],
        env: vec!["A=image".into(), "B=image".into(), "junk".into()],
        working_dir: Some("/srv".into()),
        user: Some("app".into()),
    };
    let image = Path::new("/img");
    let applied = spec(&[], "/img")
        .with_image_defaults(image, &defaults)
        .expect("defaults");
    assert_eq!(applied.command, ["/bin/app", "--serve"]);
    assert_eq!(applied.user.as_deref(), Some("app"), "the image's User");
    let mut own_user = spec(&[], "/img");
    own_user.user = Some("0".into());
    let applied_own = own_user
        .with_image_defaults(image, &defaults)
        .expect("defaults");
    assert_eq!(
        applied_own.user.as_deref(),
        Some("0"),
        "the task's user wins"
    );
    let env: Vec<(&str, &str)> = applied
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "image"), ("B", "task")]);
    // The task's own command replaces Entrypoint + Cmd.
    let own = spec(&["/bin/sh"], "/img")
        .with_image_defaults(image, &defaults)
        .expect("defaults");
    assert_eq!(own.command, ["/bin/sh"]);
    let err = spec(&[], "/img")
        .with_image_defaults(image, &ImageDefaults::default())
        .expect_err("no command anywhere");
    assert!(matches!(err, RuntimeError::InvalidSpec { .. }));
    assert!(
        err.to_string().contains("/img has no Entrypoint or Cmd"),
        "{err}"
    );
}

fn executable(path: &Path) {
    std::fs::write(path, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn layered_lookup_follows_symlinks_across_layers_inside_the_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
    for dir in [top.join("bin"), bottom.join("bin"), bottom.join("usr/bin")] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    executable(&bottom.join("usr/bin/tool"));
    std::fs::write(bottom.join("usr/bin/data"), "x").expect("write");
    // Absolute and relative links in the top layer into the bottom one.
    symlink("/usr/bin/tool", top.join("bin/abs")).expect("symlink");
    symlink("../usr/bin/tool", top.join("bin/rel")).expect("symlink");
    // Climbing above the root stays at the root, as in the task.
    symlink("../../../../usr/bin/tool", top.join("bin/up")).expect("symlink");
    symlink("loop", top.join("bin/loop")).expect("symlink");
    // A host path that exists only outside the layers.
    symlink(tmp.path(), top.join("bin/host")).expect("symlink");
    let layers: Vec<PathBuf> = vec![top, bottom];
    for found in [
        "/usr/bin/tool",
        "/bin/abs",
        "/bin/rel",
        "/bin/up",
        "/bin/../usr/bin/tool",
    ] {
        assert!(
            is_executable_in_layers(&layers, Path::new(found)),
            "{found}"
        );
    }
    for missing in [
        "/usr/bin/data",
        "/usr/bin",
        "/bin/loop",
        "/bin/nope",
        "/bin/host/bottom/usr/bin/tool",
    ] {
        assert!(
            !is_executable_in_layers(&layers, Path::new(missing)),
            "{missing}"
        );
    }
}

fn add_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    format!("sha256:{hex}")
}

/// A layout whose index points to `manifest`; returns its path.
fn layout(dir: &Path, manifest: &[u8], manifest_digest: Option<&str>) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    let digest = add_blob(&layout, manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.unwrap_or(&digest),
            "size": manifest.len(),
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    layout
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let claimed = format!("sha256:{}", "ab".repeat(32));
    let layout = layout(tmp.path(), b"{}", Some(&claimed));
    std::fs::write(
        layout.join("blobs/sha256").join("ab".repeat(32)),
        b"{\"tampered\":1}",
    )
    .expect("write");
    let cache = ImageCache::new(tmp.path().join("cache"));
    let err = cache.resolve(&layout).expect_err("tampered manifest");
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&claimed), "{err}");
}

#[test]
fn bad_digests_media_types_and_missing_layouts_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = ImageCache::new(tmp.path().join("cache"));
    let layout_dir = layout(tmp.path(), b"{}", Some("sha512:00"));
    let err = cache.resolve(&layout_dir).expect_err("sha512");
    assert!(err.to_string().contains("sha512:00"), "{err}");

    let config = add_blob(&layout_dir, br#"{"config":{"Cmd":["/x"]}}"#);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config},
        "layers": [{"mediaType": "application/vnd.example.layer.v1.tar+lz4",
                    "digest": format!("sha256:{}", "cd".repeat(32))}],
    });
    std::fs::remove_dir_all(&layout_dir).expect("rm");
    let layout_dir = layout(tmp.path(), manifest.to_string().as_bytes(), None);
    add_blob(&layout_dir, br#"{"config":{"Cmd":["/x"]}}"#);
    let err = cache.resolve(&layout_dir).expect_err("lz4");
    assert!(err.to_string().contains("tar+lz4"), "{err}");

    let missing = tmp.path().join("nothing-here");
    let err = cache.resolve(&missing).expect_err("missing");
    assert!(matches!(err, OciError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing-here"), "{err}");
}

#[test]
fn garbage_collection_keeps_layers_in_use_and_waits_for_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = ImageCache::new(tmp.path().join("images"));
    let (used, unused) = (cache.layer_dir("aa"), cache.layer_dir("bb"));
    for dir in [&used, &unused] {
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc/file"), "x").expect("write");
    }
    let in_use = || Some(std::collections::BTreeSet::from([used.clone()]));
    // A start holds a pin: nothing is collected meanwhile.
    let pin = cache.pin().expect("pin");
    assert!(cache.collect_garbage(&in_use).expect("collect").is_empty());
    assert!(unused.is_dir());
    drop(pin);
    // Unreadable task records: everything is kept.
    assert!(cache.collect_garbage(&|| None).expect("collect").is_empty());
    assert!(unused.is_dir());
    assert_eq!(
        cache.collect_garbage(&in_use).expect("collect"),
        vec!["bb".to_owned()]
    );
    assert!(used.join("etc/file").is_file());
    assert!(!unused.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("images/tmp"))
            .expect("collect")
            .count(),
        0
    );
}
