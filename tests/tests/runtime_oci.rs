//! Root-only e2e tests of tasks on a local OCI image ([`Rootfs::Oci`]):
//! an image layout built here from a busybox layer and a second layer
//! with whiteouts, as a directory and as a tar; the cache of unpacked
//! layers; and images that must be refused (bad digest, escaping entries).
//! Build the binary first: `cargo build -p drover-cli`.
//!
//! Layers are packed with the system's `tar` and `gzip` and hashed with
//! `sha256sum`, so the test builds images the way a user's tools would.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use drover_agent::runtime::{OciError, Rootfs, RuntimeError, TaskSpec};
use drover_tests::runtime::{busybox_tree, mount_count, Harness};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::json;

/// Busybox applets linked into the base layer's `/bin`.
const APPLETS: [&str; 10] = [
    "sh", "ls", "cat", "test", "pwd", "echo", "env", "touch", "true", "grep",
];

/// The probe the image config names as its `Cmd`.
const PROBE: &str = "cat /marker; test -e /etc/doomed || echo doomed-gone; \
                     test -e /etc/kept && echo kept; ls /opq | tr '\\n' ' '; echo; \
                     pwd; echo $FROM_IMAGE $OVERRIDE";

/// What [`PROBE`] prints for the test image with `OVERRIDE=task`.
const PROBE_OUT: &str = "layer2\ndoomed-gone\nkept\nnew \n/work\nimage task\n";

/// A layer as it goes into the image: a tar file and its media type.
struct Layer {
    tar: PathBuf,
    gzip: bool,
}

/// A harness whose image cache is `<tmp>/cache`.
fn harness() -> Result<Harness> {
    Harness::builder().image_cache().build()
}

/// [`drover_tests::runtime::task_spec`] on `image`, with `OVERRIDE=task`
/// and the alloc id as hostname.
fn task_spec(alloc_id: &str, image: &Path, command: &[&str]) -> TaskSpec {
    TaskSpec {
        hostname: alloc_id.to_owned(),
        env: BTreeMap::from([("OVERRIDE".to_owned(), "task".to_owned())]),
        rootfs: Some(Rootfs::Oci {
            image: image.to_owned(),
        }),
        ..drover_tests::runtime::task_spec(alloc_id, command)
    }
}

/// The unpacked layers in the cache (hex digests, sorted) and whether
/// its temp dir is empty.
fn cached(h: &Harness) -> Result<(Vec<String>, bool)> {
    let names = |dir: PathBuf| -> Result<Vec<String>> {
        let mut out = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    out.push(e?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        }
        out.sort();
        Ok(out)
    };
    let layers = names(h.path("cache/layers"))?;
    let tmp_empty = names(h.path("cache/tmp"))?.is_empty();
    Ok((layers, tmp_empty))
}

/// Name of the file [`UnpackedOnce`] leaves in each cached layer.
const LEFT_BY_TEST: &str = ".left-by-the-test";

/// What shows that the cached layers were not unpacked again since
/// [`UnpackedOnce::record`]: an inotify watch on the cache's `tmp/` and
/// `layers/`, which sees every directory an unpack creates or renames into
/// place (also one that loses the rename to the layer already there and is
/// removed again, leaving no other trace), and each layer directory's
/// inode, mtime and a file the test left in it (a layer replaced by a new
/// unpack loses all three).
struct UnpackedOnce {
    watch: Inotify,
    /// Each layer directory with its inode and mtime (s, ns).
    layers: Vec<(PathBuf, u64, (i64, i64))>,
}

impl UnpackedOnce {
    /// Starts watching the cache of `h` and records its layers `digests`,
    /// which must be unpacked already.
    fn record(h: &Harness, digests: &[String]) -> Result<Self> {
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("inotify_init1")?;
        for dir in ["cache/tmp", "cache/layers"] {
            let dir = h.path(dir);
            watch
                .add_watch(&dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                .with_context(|| format!("inotify_add_watch {}", dir.display()))?;
        }
        let mut layers = Vec::new();
        for digest in digests {
            let dir = h.path("cache/layers").join(hex(digest));
            std::fs::write(dir.join(LEFT_BY_TEST), "")
                .with_context(|| format!("leaving a file in {}", dir.display()))?;
            let m = std::fs::metadata(&dir).with_context(|| dir.display().to_string())?;
            layers.push((dir, m.ino(), (m.mtime(), m.mtime_nsec())));
        }
        Ok(Self { watch, layers })
    }

    /// Fails, naming `after`, when anything was unpacked or put in place
    /// since [`UnpackedOnce::record`].
    fn check(&self, after: &str) -> Result<()> {
        let mut seen = Vec::new();
        loop {
            match self.watch.read_events() {
                Ok(events) => seen.extend(events.into_iter().map(|e| (e.mask, e.name))),
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e).context("reading inotify events"),
            }
        }
        ensure!(
            seen.is_empty(),
            "{after}: the cache unpacked a layer again: {seen:?}"
        );
        for (dir, ino, mtime) in &self.layers {
            let m =
                std::fs::metadata(dir).with_context(|| format!("{after}: {}", dir.display()))?;
            ensure!(
                m.ino() == *ino && (m.mtime(), m.mtime_nsec()) == *mtime,
                "{after}: {} was replaced or rewritten",
                dir.display()
            );
            ensure!(
                dir.join(LEFT_BY_TEST).exists(),
                "{after}: {} was unpacked again: the file the test left in it is gone",
                dir.display()
            );
        }
        Ok(())
    }
}

/// The busybox base layer: `/bin` with applet links, `/etc/doomed`
/// (deleted by the second layer), `/etc/kept`, `/opq/old` (hidden by
/// the second layer's opaque `/opq`).
fn base_layer(h: &Harness) -> Result<Layer> {
    let dir = h.path("src/base");
    for sub in ["etc", "opq"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    busybox_tree(&dir, &APPLETS)?;
    symlink("/bin/busybox", dir.join("bin/tr"))?;
    std::fs::write(dir.join("etc/doomed"), "doomed\n")?;
    std::fs::write(dir.join("etc/kept"), "kept\n")?;
    std::fs::write(dir.join("opq/old"), "old\n")?;
    pack(h, "base", &[(&dir, &["."])], true)
}

/// The second layer: a marker, `/work`, a whiteout for `/etc/doomed`
/// and an opaque `/opq` holding only `new`.
fn top_layer(h: &Harness) -> Result<Layer> {
    let dir = h.path("src/top");
    for sub in ["etc", "opq", "work"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("marker"), "layer2\n")?;
    std::fs::write(dir.join("etc/.wh.doomed"), "")?;
    std::fs::write(dir.join("opq/.wh..wh..opq"), "")?;
    std::fs::write(dir.join("opq/new"), "new\n")?;
    pack(h, "top", &[(&dir, &["."])], false)
}

/// Packs `(dir, members)` groups into `<tmp>/src/<name>.tar[.gz]`.
fn pack(h: &Harness, name: &str, groups: &[(&Path, &[&str])], gzip: bool) -> Result<Layer> {
    let tar = h.path(&format!("src/{name}.tar"));
    let mut cmd = Command::new("tar");
    cmd.arg("--numeric-owner").arg("-P").arg("-cf").arg(&tar);
    for (dir, members) in groups {
        cmd.arg("-C").arg(dir).args(*members);
    }
    run(&mut cmd)?;
    if !gzip {
        return Ok(Layer { tar, gzip });
    }
    run(Command::new("gzip").arg("-n").arg(&tar))?;
    Ok(Layer {
        tar: tar.with_extension("tar.gz"),
        gzip,
    })
}

/// A layout at `<tmp>/<name>` with `layers` (bottom first) and a config
/// whose `Cmd` is [`PROBE`]; returns the layout dir and the layers'
/// digests.
fn oci_image(h: &Harness, name: &str, layers: &[Layer]) -> Result<(PathBuf, Vec<String>)> {
    oci_image_in(h, name, layers, "/work")
}

/// [`oci_image`] with another `WorkingDir`.
fn oci_image_in(
    h: &Harness,
    name: &str,
    layers: &[Layer],
    working_dir: &str,
) -> Result<(PathBuf, Vec<String>)> {
    oci_image_as(h, name, layers, working_dir, "")
}

/// [`oci_image_in`] with a config `User` (empty: none).
fn oci_image_as(
    h: &Harness,
    name: &str,
    layers: &[Layer],
    working_dir: &str,
    user: &str,
) -> Result<(PathBuf, Vec<String>)> {
    let layout = h.path(name);
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for layer in layers {
        let digest = add_blob(&layout, &std::fs::read(&layer.tar)?)?;
        let media_type = if layer.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descriptors.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": std::fs::metadata(&layer.tar)?.len(),
        }));
        digests.push(digest);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Cmd": ["sh", "-c", PROBE],
            "Env": ["PATH=/bin", "FROM_IMAGE=image", "OVERRIDE=image"],
            "WorkingDir": working_dir,
            "User": user,
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    }))?;
    let config_digest = add_blob(&layout, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": descriptors,
    }))?;
    let manifest_digest = add_blob(&layout, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok((layout, digests))
}

/// The test image: base and top layers.
fn test_image(h: &Harness, name: &str) -> Result<(PathBuf, Vec<String>)> {
    let layers = [base_layer(h)?, top_layer(h)?];
    oci_image(h, name, &layers)
}

/// Expects the start to be refused with an image error naming every
/// string of `names`, and nothing to be left in the state root.
async fn refused(h: &Harness, spec: &TaskSpec, names: &[&str]) -> Result<()> {
    let err = match h.start(spec).await {
        Ok(state) => bail!("{}: started: {state:?}", spec.alloc_id),
        Err(err) => err,
    };
    ensure!(matches!(err, RuntimeError::Image(_)), "{err:?}");
    let message = err.to_string();
    eprintln!("{}: refused: {message}", spec.alloc_id);
    for name in names {
        ensure!(message.contains(name), "{message:?} does not name {name}");
    }
    ensure!(
        !h.root().join(&spec.alloc_id).exists(),
        "task dir left behind"
    );
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Stores `bytes` as a blob of `layout`; returns its `sha256:` digest.
fn add_blob(layout: &Path, bytes: &[u8]) -> Result<String> {
    let tmp = layout.join("blobs/sha256/incoming");
    std::fs::write(&tmp, bytes)?;
    let out = Command::new("sha256sum")
        .arg(&tmp)
        .output()
        .context("running sha256sum")?;
    ensure!(out.status.success(), "sha256sum failed");
    let hex = String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned();
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&hex))?;
    Ok(format!("sha256:{hex}"))
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_owned()
}

#[tokio::test]
async fn image_cmd_runs_on_its_layers_and_each_layer_is_unpacked_once() -> Result<()> {
    let h = harness()?;
    let mounts_before = mount_count()?;
    let (image, digests) = test_image(&h, "image")?;
    assert_eq!(h.probe(&task_spec("oci1", &image, &[])).await?, PROBE_OUT);
    let once = UnpackedOnce::record(&h, &digests)?;
    // The task's own command replaces Entrypoint + Cmd; a write lands in
    // its upper dir, not in the cached layer.
    let out = h
        .probe(&task_spec(
            "oci2",
            &image,
            &["sh", "-c", "echo x > /marker; cat /marker; pwd"],
        ))
        .await?;
    assert_eq!(out, "x\n/work\n");
    // The layers are idmapped into the task's user namespace (one view of
    // the cache's `layers/` serves both): their files are root's inside,
    // and root may change them (copied up).
    let out = h
        .probe_and_remove(&task_spec(
            "oci-owner",
            &image,
            &[
                "sh",
                "-c",
                "ls -ln /marker /etc/kept | while read -r _ _ u g _; do echo $u:$g; done; \
                 echo x >> /etc/kept && echo written",
            ],
        ))
        .await?;
    assert_eq!(out, "0:0\n0:0\nwritten\n");
    once.check("after the second task")?;
    let mut expected: Vec<String> = digests.iter().map(|d| hex(d)).collect();
    expected.sort();
    assert_eq!(cached(&h)?, (expected, true), "cache after two tasks");
    let top = h.path("cache/layers").join(hex(&digests[1]));
    assert_eq!(std::fs::read_to_string(top.join("marker"))?, "layer2\n");
    // A third task still sees the image's file, not the second's write.
    assert_eq!(h.probe(&task_spec("oci3", &image, &[])).await?, PROBE_OUT);
    once.check("after the third task")?;
    for alloc in ["oci1", "oci2", "oci3"] {
        h.rt.remove(alloc, "main")?;
    }
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");
    assert!(std::fs::read_dir(h.root())?.next().is_none());
    Ok(())
}

#[tokio::test]
async fn a_tar_of_the_layout_works() -> Result<()> {
    let h = harness()?;
    let (layout, _) = test_image(&h, "image")?;
    let tar = h.path("image.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .arg("."))?;
    std::fs::remove_dir_all(&layout)?;
    assert_eq!(h.probe(&task_spec("tar", &tar, &[])).await?, PROBE_OUT);
    Ok(())
}

#[tokio::test]
async fn concurrent_resolves_of_one_image_share_the_cache() -> Result<()> {
    let h = harness()?;
    let (image, digests) = test_image(&h, "image")?;
    let (a, b) = tokio::join!(h.rt.resolve_image(&image), h.rt.resolve_image(&image));
    let (a, b) = (a?, b?);
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.layers.len(), 2);
    let (layers, tmp_empty) = cached(&h)?;
    assert_eq!(layers.len(), digests.len());
    assert!(tmp_empty, "a temp unpack dir was left behind");
    // Once unpacked, concurrent resolves find the layers and unpack
    // nothing. (On a cold cache both may unpack a layer, and the rename
    // keeps the first: see `ImageCache::ensure_layer`.)
    let once = UnpackedOnce::record(&h, &digests)?;
    let (c, d) = tokio::join!(h.rt.resolve_image(&image), h.rt.resolve_image(&image));
    let (c, d) = (c?, d?);
    assert_eq!(c.layers, a.layers);
    assert_eq!(d.layers, a.layers);
    once.check("after concurrent resolves of a cached image")?;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_before_anything_starts() -> Result<()> {
    let h = harness()?;
    let (image, digests) = test_image(&h, "image")?;
    let blob = image.join("blobs/sha256").join(hex(&digests[1]));
    let mut bytes = std::fs::read(&blob)?;
    bytes.push(b'!');
    std::fs::write(&blob, bytes)?;
    let spec = task_spec("corrupt", &image, &[]);
    refused(&h, &spec, &[&digests[1], &image.display().to_string()]).await?;
    assert!(!h.root().exists() || std::fs::read_dir(h.root())?.next().is_none());
    let (layers, tmp_empty) = cached(&h)?;
    assert!(!layers.contains(&hex(&digests[1])), "corrupt layer cached");
    assert!(tmp_empty);
    Ok(())
}

#[tokio::test]
async fn layers_that_escape_their_root_are_refused() -> Result<()> {
    let h = harness()?;
    let base = base_layer(&h)?;
    let src = h.path("src/evil");
    std::fs::create_dir_all(src.join("real/evil"))?;
    std::fs::create_dir_all(src.join("links"))?;
    std::fs::write(src.join("escape"), "escaped\n")?;
    std::fs::write(src.join("real/evil/pwned"), "pwned\n")?;
    let outside = h.path("outside");
    std::fs::create_dir_all(&outside)?;
    symlink(&outside, src.join("links/evil"))?;
    symlink("../../../..", src.join("links/up"))?;

    // `../escape`: GNU tar keeps it with -P and --transform.
    let dotdot = h.path("src/dotdot.tar");
    run(Command::new("tar")
        .args(["-P", "--transform", "s,^escape,../escape,", "-cf"])
        .arg(&dotdot)
        .arg("-C")
        .arg(&src)
        .arg("escape"))?;
    // A symlink to a host directory, then a file written through it.
    let through = pack(
        &h,
        "through",
        &[
            (&src.join("links"), &["evil"]),
            (&src.join("real"), &["evil/pwned"]),
        ],
        true,
    )?;
    // A hard link whose target goes through a symlink to a host file
    // (`outside/x`, created below so that linking would succeed).
    std::fs::create_dir_all(src.join("hl"))?;
    std::fs::write(src.join("hl/a"), "a\n")?;
    std::fs::hard_link(src.join("hl/a"), src.join("hl/b"))?;
    symlink(&outside, src.join("hl/dirlink"))?;
    let hardlink = h.path("src/hardlink.tar");
    run(Command::new("tar")
        .args(["-P", "--transform", "s,^a$,dirlink/x,RSh", "-cf"])
        .arg(&hardlink)
        .arg("-C")
        .arg(src.join("hl"))
        .args(["dirlink", "a", "b"]))?;
    // A relative symlink climbing above the layer root.
    let up = pack(&h, "up", &[(&src.join("links"), &["up"])], false)?;

    let cases = [
        (
            "dotdot",
            Layer {
                tar: dotdot,
                gzip: false,
            },
            "../escape",
        ),
        ("through", through, "evil/pwned"),
        ("up", up, "up"),
        (
            "hardlink",
            Layer {
                tar: hardlink,
                gzip: false,
            },
            "dirlink/x",
        ),
    ];
    let base_hex = {
        let (_, digests) = oci_image(&h, "probe-base", std::slice::from_ref(&base))?;
        hex(&digests[0])
    };
    for (name, layer, entry) in cases {
        let (image, digests) = oci_image(
            &h,
            &format!("img-{name}"),
            &[
                Layer {
                    tar: base.tar.clone(),
                    gzip: true,
                },
                layer,
            ],
        )?;
        let spec = task_spec(name, &image, &[]);
        refused(&h, &spec, &[entry, &digests[1]])
            .await
            .with_context(|| name.to_owned())?;
        let (layers, tmp_empty) = cached(&h)?;
        assert_eq!(
            layers,
            std::slice::from_ref(&base_hex),
            "{name}: only the base is cached"
        );
        assert!(tmp_empty, "{name}: temp unpack dir left behind");
    }
    for path in [
        h.path("escape"),
        h.path("cache/escape"),
        h.path("cache/tmp/escape"),
    ] {
        assert!(!path.exists(), "{} was written", path.display());
    }
    let host_file = outside.join("x");
    std::fs::write(&host_file, "host\n")?;
    let (image, _) = oci_image(
        &h,
        "img-hardlink-again",
        &[Layer {
            tar: h.path("src/hardlink.tar"),
            gzip: false,
        }],
    )?;
    refused(
        &h,
        &task_spec("hardlink-again", &image, &["/b"]),
        &["dirlink/x"],
    )
    .await?;
    let entries: Vec<_> = std::fs::read_dir(&outside)?.collect::<Result<_, _>>()?;
    assert_eq!(entries.len(), 1, "a file was written through the symlink");
    let meta = std::fs::metadata(&host_file)?;
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&meta),
        1,
        "the host file was hard-linked into the cache"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_command_or_image_is_refused_naming_it() -> Result<()> {
    let h = harness()?;
    let (image, _) = test_image(&h, "image")?;
    let spec = task_spec("nocmd", &image, &["/bin/bash"]);
    let err = h.start(&spec).await.err().context("/bin/bash accepted")?;
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&image.display().to_string()),
        "{err}"
    );
    assert!(!h.root().join("nocmd").exists());

    let missing = h.path("no-such-image");
    let err = h
        .start(&task_spec("noimage", &missing, &[]))
        .await
        .err()
        .context("a missing image was accepted")?;
    assert!(
        matches!(err, RuntimeError::Image(OciError::Read { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()));
    assert!(!h.root().join("noimage").exists());
    Ok(())
}

#[tokio::test]
async fn a_missing_working_dir_is_created_in_the_upper_dir() -> Result<()> {
    let h = harness()?;
    let (image, digests) = oci_image_in(&h, "image", &[base_layer(&h)?], "/srv/app")?;
    let spec = task_spec("wd", &image, &["sh", "-c", "pwd"]);
    assert_eq!(h.probe(&spec).await?, "/srv/app\n");
    let layer = h.path("cache/layers").join(hex(&digests[0]));
    assert!(!layer.join("srv").exists(), "the cached layer was written");
    assert!(h.root().join("wd/main/rootfs/upper/srv/app").is_dir());
    Ok(())
}

#[tokio::test]
async fn the_image_user_is_the_default_and_unused_layers_are_collected() -> Result<()> {
    let h = harness()?;
    // A layer with the image's own /etc/passwd and busybox's `id`.
    let dir = h.path("src/users");
    std::fs::create_dir_all(dir.join("etc"))?;
    std::fs::create_dir_all(dir.join("bin"))?;
    symlink("busybox", dir.join("bin/id"))?;
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nimg:x:4242:4343::/:/bin/sh\n",
    )?;
    let users = pack(&h, "users", &[(&dir, &["."])], false)?;
    let (image, digests) = oci_image_as(&h, "image", &[base_layer(&h)?, users], "/", "img")?;
    let spec = task_spec("user", &image, &["sh", "-c", "id -u; id -g"]);
    assert_eq!(h.probe(&spec).await?, "4242\n4343\n", "the image's User");
    let mut own = task_spec("own", &image, &["sh", "-c", "id -u"]);
    own.user = Some("0".to_owned());
    assert_eq!(h.probe(&own).await?, "0\n", "the task's user wins");

    // Layers stay while a task dir names them, and go with the last one.
    let layers: Vec<PathBuf> = digests
        .iter()
        .map(|d| h.path("cache/layers").join(hex(d)))
        .collect();
    h.rt.remove("user", "main")?;
    assert!(layers.iter().all(|l| l.is_dir()), "in use by task own");
    h.rt.remove("own", "main")?;
    assert!(
        layers.iter().all(|l| !l.exists()),
        "unused layers left in the cache"
    );
    assert!(h.rt.collect_image_garbage()?.is_empty());
    Ok(())
}
