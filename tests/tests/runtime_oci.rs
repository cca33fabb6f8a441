//! Root-only e2e tests of tasks on a local OCI image ([`Rootfs::Oci`]):
//! an image layout built here from a busybox layer and a second layer
//! with whiteouts, as a directory and as a tar; the cache of unpacked
//! layers; and images that must be refused (bad digest, escaping entries).
//! Build the binary first: `cargo build -p drover-cli`.
//!
//! Layers are packed with the system's `tar` and `gzip` and hashed with
//! `sha256sum`, so the test builds images the way a user's tools would.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use drover_agent::runtime::{OciError, Rootfs, Runtime, RuntimeError, TaskSpec, TaskState};
use drover_tests::drover_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tempfile::TempDir;

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

/// One test's temp dir (state root, image cache, images), and every
/// process it started, SIGKILLed by pid on drop.
struct Harness {
    tmp: TempDir,
    rt: Runtime,
    pids: Mutex<Vec<i32>>,
}

/// A layer as it goes into the image: a tar file and its media type.
struct Layer {
    tar: PathBuf,
    gzip: bool,
}

impl Harness {
    fn new() -> Result<Self> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the OCI e2e tests need root (namespaces, mounts)"
        );
        let tmp = tempfile::tempdir().context("tempdir")?;
        let rt = Runtime::new(tmp.path().join("allocs"), drover_bin())
            .with_image_cache(tmp.path().join("cache"));
        Ok(Self {
            tmp,
            rt,
            pids: Mutex::new(Vec::new()),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("allocs")
    }

    /// The unpacked layers in the cache (hex digests, sorted) and whether
    /// its temp dir is empty.
    fn cached(&self) -> Result<(Vec<String>, bool)> {
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
        let layers = names(self.path("cache/layers"))?;
        let tmp_empty = names(self.path("cache/tmp"))?.is_empty();
        Ok((layers, tmp_empty))
    }

    /// The busybox base layer: `/bin` with applet links, `/etc/doomed`
    /// (deleted by the second layer), `/etc/kept`, `/opq/old` (hidden by
    /// the second layer's opaque `/opq`).
    fn base_layer(&self) -> Result<Layer> {
        let dir = self.path("src/base");
        for sub in ["bin", "etc", "opq"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .context("busybox not found: apt-get install -y busybox-static")?;
        std::fs::copy(busybox, dir.join("bin/busybox")).context("copying busybox")?;
        for applet in APPLETS {
            symlink("busybox", dir.join("bin").join(applet))?;
        }
        symlink("/bin/busybox", dir.join("bin/tr"))?;
        std::fs::write(dir.join("etc/doomed"), "doomed\n")?;
        std::fs::write(dir.join("etc/kept"), "kept\n")?;
        std::fs::write(dir.join("opq/old"), "old\n")?;
        self.pack("base", &[(&dir, &["."])], true)
    }

    /// The second layer: a marker, `/work`, a whiteout for `/etc/doomed`
    /// and an opaque `/opq` holding only `new`.
    fn top_layer(&self) -> Result<Layer> {
        let dir = self.path("src/top");
        for sub in ["etc", "opq", "work"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("marker"), "layer2\n")?;
        std::fs::write(dir.join("etc/.wh.doomed"), "")?;
        std::fs::write(dir.join("opq/.wh..wh..opq"), "")?;
        std::fs::write(dir.join("opq/new"), "new\n")?;
        self.pack("top", &[(&dir, &["."])], false)
    }

    /// Packs `(dir, members)` groups into `<tmp>/src/<name>.tar[.gz]`.
    fn pack(&self, name: &str, groups: &[(&Path, &[&str])], gzip: bool) -> Result<Layer> {
        let tar = self.path(&format!("src/{name}.tar"));
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
    fn image(&self, name: &str, layers: &[Layer]) -> Result<(PathBuf, Vec<String>)> {
        self.image_in(name, layers, "/work")
    }

    /// [`Harness::image`] with another `WorkingDir`.
    fn image_in(
        &self,
        name: &str,
        layers: &[Layer],
        working_dir: &str,
    ) -> Result<(PathBuf, Vec<String>)> {
        self.image_as(name, layers, working_dir, "")
    }

    /// [`Harness::image_in`] with a config `User` (empty: none).
    fn image_as(
        &self,
        name: &str,
        layers: &[Layer],
        working_dir: &str,
        user: &str,
    ) -> Result<(PathBuf, Vec<String>)> {
        let layout = self.path(name);
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
    fn test_image(&self, name: &str) -> Result<(PathBuf, Vec<String>)> {
        let layers = [self.base_layer()?, self.top_layer()?];
        self.image(name, &layers)
    }

    fn spec(&self, alloc_id: &str, image: &Path, command: &[&str]) -> TaskSpec {
        TaskSpec {
            alloc_id: alloc_id.to_owned(),
            task: "main".to_owned(),
            hostname: alloc_id.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::from([("OVERRIDE".to_owned(), "task".to_owned())]),
            kill_timeout_ms: 300,
            cpu_millis: 0,
            memory_mb: 0,
            pids_max: 1024,
            rootfs: Some(Rootfs::Oci {
                image: image.to_owned(),
            }),
            network: None,
            logs: Default::default(),
            ..Default::default()
        }
    }

    /// Starts the task, recording its supervisor and task pids for cleanup.
    async fn start(&self, spec: &TaskSpec) -> Result<TaskState, RuntimeError> {
        let result = self.rt.start(spec).await;
        let dir = self.root().join(&spec.alloc_id).join(&spec.task);
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = std::fs::read_to_string(dir.join("supervisor.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            pids.push(pid);
        }
        if let Ok(TaskState::Running { pid, .. }) = self.rt.state(&spec.alloc_id, &spec.task) {
            pids.push(pid);
        }
        result
    }

    /// Runs a probe to completion; returns its stdout, failing with its
    /// logs unless it exited 0.
    async fn probe(&self, spec: &TaskSpec) -> Result<String> {
        self.start(spec).await?;
        let state = self
            .rt
            .wait(&spec.alloc_id, "main", Duration::from_secs(10))
            .await?;
        let dir = self.root().join(&spec.alloc_id).join("main");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let stdout = read("stdout.log");
        ensure!(
            matches!(
                state,
                TaskState::Exited {
                    exit_code: Some(0),
                    ..
                }
            ),
            "{}: {state:?}\nstdout:\n{stdout}\nstderr:\n{}\nsupervisor:\n{}",
            spec.alloc_id,
            read("stderr.log"),
            read("supervisor.log"),
        );
        Ok(stdout)
    }

    /// Expects the start to be refused with an image error naming every
    /// string of `names`, and nothing to be left in the state root.
    async fn refused(&self, spec: &TaskSpec, names: &[&str]) -> Result<()> {
        let err = match self.start(spec).await {
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
            !self.root().join(&spec.alloc_id).exists(),
            "task dir left behind"
        );
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        for pid in pids.iter().rev() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
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

fn mount_count() -> Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")
        .context("reading /proc/self/mountinfo")?
        .lines()
        .filter(|l| counted_mount(l))
        .count())
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_owned()
}

#[tokio::test]
async fn image_cmd_runs_on_its_layers_and_each_layer_is_unpacked_once() -> Result<()> {
    let h = Harness::new()?;
    let mounts_before = mount_count()?;
    let (image, digests) = h.test_image("image")?;
    assert_eq!(h.probe(&h.spec("oci1", &image, &[])).await?, PROBE_OUT);
    // The task's own command replaces Entrypoint + Cmd; a write lands in
    // its upper dir, not in the cached layer.
    let out = h
        .probe(&h.spec(
            "oci2",
            &image,
            &["sh", "-c", "echo x > /marker; cat /marker; pwd"],
        ))
        .await?;
    assert_eq!(out, "x\n/work\n");
    let mut expected: Vec<String> = digests.iter().map(|d| hex(d)).collect();
    expected.sort();
    assert_eq!(h.cached()?, (expected, true), "cache after two tasks");
    let top = h.path("cache/layers").join(hex(&digests[1]));
    assert_eq!(std::fs::read_to_string(top.join("marker"))?, "layer2\n");
    // A third task still sees the image's file, not the second's write.
    assert_eq!(h.probe(&h.spec("oci3", &image, &[])).await?, PROBE_OUT);
    for alloc in ["oci1", "oci2", "oci3"] {
        h.rt.remove(alloc, "main")?;
    }
    assert_eq!(mount_count()?, mounts_before, "host mount table changed");
    assert!(std::fs::read_dir(h.root())?.next().is_none());
    Ok(())
}

#[tokio::test]
async fn a_tar_of_the_layout_works() -> Result<()> {
    let h = Harness::new()?;
    let (layout, _) = h.test_image("image")?;
    let tar = h.path("image.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .arg("."))?;
    std::fs::remove_dir_all(&layout)?;
    assert_eq!(h.probe(&h.spec("tar", &tar, &[])).await?, PROBE_OUT);
    Ok(())
}

#[tokio::test]
async fn concurrent_resolves_of_one_image_share_the_cache() -> Result<()> {
    let h = Harness::new()?;
    let (image, digests) = h.test_image("image")?;
    let (a, b) = tokio::join!(h.rt.resolve_image(&image), h.rt.resolve_image(&image));
    let (a, b) = (a?, b?);
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.layers.len(), 2);
    let (layers, tmp_empty) = h.cached()?;
    assert_eq!(layers.len(), digests.len());
    assert!(tmp_empty, "a temp unpack dir was left behind");
    Ok(())
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_before_anything_starts() -> Result<()> {
    let h = Harness::new()?;
    let (image, digests) = h.test_image("image")?;
    let blob = image.join("blobs/sha256").join(hex(&digests[1]));
    let mut bytes = std::fs::read(&blob)?;
    bytes.push(b'!');
    std::fs::write(&blob, bytes)?;
    let spec = h.spec("corrupt", &image, &[]);
    h.refused(&spec, &[&digests[1], &image.display().to_string()])
        .await?;
    assert!(!h.root().exists() || std::fs::read_dir(h.root())?.next().is_none());
    let (layers, tmp_empty) = h.cached()?;
    assert!(!layers.contains(&hex(&digests[1])), "corrupt layer cached");
    assert!(tmp_empty);
    Ok(())
}

#[tokio::test]
async fn layers_that_escape_their_root_are_refused() -> Result<()> {
    let h = Harness::new()?;
    let base = h.base_layer()?;
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
    let through = h.pack(
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
    let up = h.pack("up", &[(&src.join("links"), &["up"])], false)?;

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
        let (_, digests) = h.image("probe-base", std::slice::from_ref(&base))?;
        hex(&digests[0])
    };
    for (name, layer, entry) in cases {
        let (image, digests) = h.image(
            &format!("img-{name}"),
            &[
                Layer {
                    tar: base.tar.clone(),
                    gzip: true,
                },
                layer,
            ],
        )?;
        let spec = h.spec(name, &image, &[]);
        h.refused(&spec, &[entry, &digests[1]])
            .await
            .with_context(|| name.to_owned())?;
        let (layers, tmp_empty) = h.cached()?;
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
    let (image, _) = h.image(
        "img-hardlink-again",
        &[Layer {
            tar: h.path("src/hardlink.tar"),
            gzip: false,
        }],
    )?;
    h.refused(&h.spec("hardlink-again", &image, &["/b"]), &["dirlink/x"])
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
    let h = Harness::new()?;
    let (image, _) = h.test_image("image")?;
    let spec = h.spec("nocmd", &image, &["/bin/bash"]);
    let err = h.start(&spec).await.err().context("/bin/bash accepted")?;
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&image.display().to_string()),
        "{err}"
    );
    assert!(!h.root().join("nocmd").exists());

    let missing = h.path("no-such-image");
    let err = h
        .start(&h.spec("noimage", &missing, &[]))
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
    let h = Harness::new()?;
    let (image, digests) = h.image_in("image", &[h.base_layer()?], "/srv/app")?;
    let spec = h.spec("wd", &image, &["sh", "-c", "pwd"]);
    assert_eq!(h.probe(&spec).await?, "/srv/app\n");
    let layer = h.path("cache/layers").join(hex(&digests[0]));
    assert!(!layer.join("srv").exists(), "the cached layer was written");
    assert!(h.root().join("wd/main/rootfs/upper/srv/app").is_dir());
    Ok(())
}

/// Whether a `/proc/self/mountinfo` line counts for leak checks: network
/// namespace files (`nsfs`) and the directories holding them (`.../netns`,
/// bound onto themselves as `ip netns` does) are skipped, because other
/// tests on this shared host create and remove them at any time, and the
/// container runtime never mounts either in the host's namespace.
fn counted_mount(line: &str) -> bool {
    let mount_point = line.split(' ').nth(4).unwrap_or("");
    let nsfs = line
        .split(" - ")
        .nth(1)
        .is_some_and(|fs| fs.starts_with("nsfs "));
    !nsfs && !mount_point.split('/').any(|c| c == "netns")
}

#[tokio::test]
async fn the_image_user_is_the_default_and_unused_layers_are_collected() -> Result<()> {
    let h = Harness::new()?;
    // A layer with the image's own /etc/passwd and busybox's `id`.
    let dir = h.path("src/users");
    std::fs::create_dir_all(dir.join("etc"))?;
    std::fs::create_dir_all(dir.join("bin"))?;
    symlink("busybox", dir.join("bin/id"))?;
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nimg:x:4242:4343::/:/bin/sh\n",
    )?;
    let users = h.pack("users", &[(&dir, &["."])], false)?;
    let (image, digests) = h.image_as("image", &[h.base_layer()?, users], "/", "img")?;
    let spec = h.spec("user", &image, &["sh", "-c", "id -u; id -g"]);
    assert_eq!(h.probe(&spec).await?, "4242\n4343\n", "the image's User");
    let mut own = h.spec("own", &image, &["sh", "-c", "id -u"]);
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
