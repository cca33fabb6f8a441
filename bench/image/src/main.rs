//! `image-bench --image REF --ca FILE --layout DIR [--runs N] [--drover PATH]`:
//! Drover's runtime alone (no scheduler, no agent loop), starting a
//! `/bin/true` task (start + wait; removed untimed) on the image `REF` pulled from a
//! registry, against the same image from a local OCI layout and from an
//! unpacked directory. `bench/image/run.sh` builds the image and the
//! registry and calls this; it measures the whole path (`drover dev`,
//! podman, skopeo + crun) itself.
//!
//! Per run, in this order (each start needs the previous one's cache):
//! - registry, cold: the layer cache emptied first (not timed), so the
//!   start resolves the tag, downloads, verifies and unpacks every layer;
//! - registry, warm: the layers cached; the tag is still resolved (one
//!   manifest request) and the config fetched;
//! - registry, pinned (`--pinned REF@sha256:...`): the same image by the
//!   digest of its manifest, as a deployment's instances and restarts
//!   start it once the tag is pinned: manifest, config and layers come
//!   from the node's cache, no registry request;
//! - local layout (`Rootfs::Oci` with a path): the same layers cached; the
//!   layout's blobs are hashed again on every start;
//! - directory (`Rootfs::Dir`): the image's layers unpacked into one
//!   directory, as `bench/container` starts its busybox root.
//!
//! Every case starts after a `sync` (not timed), so that none waits for
//! the writeback of the layers the previous one unpacked.
//!
//! Run as root, in the private mount namespace run.sh sets up (crun
//! 1.8.1's hybrid-cgroup workaround, as bench/container).

// A report on stdout is this program's purpose.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::runtime::{Rootfs, Runtime, TaskSpec, TaskState};
use drover_bench_container::{median, ms, percentile};

/// What one start runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Cold,
    Warm,
    Pinned,
    Layout,
    Dir,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Cold,
        Case::Warm,
        Case::Pinned,
        Case::Layout,
        Case::Dir,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Cold => "registry, cold (pull + start)",
            Case::Warm => "registry, warm (layers cached)",
            Case::Pinned => "registry, pinned by digest (all cached)",
            Case::Layout => "local OCI layout (layers cached)",
            Case::Dir => "directory rootfs (bench/container's start)",
        }
    }
}

struct Args {
    runs: usize,
    drover: PathBuf,
    image: String,
    pinned: String,
    ca: PathBuf,
    layout: PathBuf,
    rootfs: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut runs = 7;
    let mut drover = std::env::current_exe()?
        .parent()
        .map(|d| d.join("drover"))
        .context("no directory for the bench binary")?;
    let (mut image, mut ca, mut layout, mut rootfs) = (None, None, None, None);
    let mut pinned = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => runs = value()?.parse()?,
            "--drover" => drover = value()?.into(),
            "--image" => image = Some(value()?),
            "--pinned" => pinned = Some(value()?),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--layout" => layout = Some(PathBuf::from(value()?)),
            "--rootfs" => rootfs = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown argument {other:?}; usage: image-bench --image REF --pinned REF@DIGEST \
                 --ca FILE --layout DIR --rootfs DIR [--runs N] [--drover PATH]"
            ),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    let drover = drover
        .canonicalize()
        .with_context(|| format!("{}: build drover or pass --drover", drover.display()))?;
    Ok(Args {
        runs,
        drover,
        image: image.context("--image REF")?,
        pinned: pinned.context("--pinned REF@DIGEST")?,
        ca: ca.context("--ca FILE")?,
        layout: layout.context("--layout DIR")?,
        rootfs: rootfs.context("--rootfs DIR")?,
    })
}

fn main() -> Result<()> {
    ensure!(nix::unistd::geteuid().is_root(), "run as root");
    let args = parse_args()?;
    let tmp = tempfile::Builder::new()
        .prefix("drover-image-bench-")
        .tempdir()
        .context("tempdir")?;
    // As `drover dev`'s data dir: the task's mapped root may traverse it.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args, tmp.path()))
}

async fn run(args: &Args, tmp: &Path) -> Result<()> {
    let registry = args
        .image
        .split('/')
        .next()
        .context("--image has no registry")?
        .to_owned();
    let mut policy = drover_agent::policy::NodePolicy {
        allowed_images: vec![PathBuf::from(format!("{registry}/")), args.layout.clone()],
        allowed_rootfs_dirs: vec![args.rootfs.clone()],
        ..Default::default()
    };
    policy.registries.ca_files.insert(registry, args.ca.clone());
    let cache = tmp.join("images");
    let runtime = Runtime::new(tmp.join("allocs"), args.drover.clone())
        .with_cgroups(
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("drover-image-bench"),
        )
        .with_image_cache(cache.clone())
        .with_policy(policy);
    let spec = |case: Case, i: usize| TaskSpec {
        alloc_id: format!("img{i}-{case:?}"),
        task: "main".to_owned(),
        hostname: "bench".to_owned(),
        command: vec!["/bin/true".to_owned()],
        kill_timeout_ms: 1_000,
        cpu_millis: 500,
        memory_mb: 64,
        pids_max: 1024,
        rootfs: Some(match case {
            Case::Cold | Case::Warm => Rootfs::Oci {
                image: PathBuf::from(&args.image),
            },
            Case::Pinned => Rootfs::Oci {
                image: PathBuf::from(&args.pinned),
            },
            Case::Layout => Rootfs::Oci {
                image: args.layout.clone(),
            },
            Case::Dir => Rootfs::Dir {
                path: args.rootfs.clone(),
            },
        }),
        ..Default::default()
    };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Case::ALL.len()];
    let mut line = String::new();
    // Run 0 is the warm-up (page cache, first-use costs), not counted.
    for i in 0..=args.runs {
        for (k, case) in Case::ALL.into_iter().enumerate() {
            if case == Case::Cold {
                empty_cache(&cache)?;
            }
            // No start pays for the previous one's writeback (an fsync
            // after a cold unpack waits for its 50 MB to reach the disk).
            nix::unistd::sync();
            let spec = spec(case, i);
            let (took, start) = once(&runtime, &spec).await?;
            if i > 0 {
                times[k].push(took);
            }
            line.push_str(&format!(
                "  {:?} {:.0} ms (start {:.0})",
                case,
                ms(took),
                ms(start)
            ));
            if case == Case::Dir {
                runtime.remove(&spec.alloc_id, "main")?;
            }
        }
        eprintln!("   run {i}:{line}");
        line.clear();
        // Removing the last task of an image collects its layers: the next
        // run's cold start finds the cache empty (and the warm one, run
        // before this, found it full).
        for case in [Case::Cold, Case::Warm, Case::Pinned, Case::Layout] {
            runtime.remove(&spec(case, i).alloc_id, "main")?;
        }
    }
    report(args.runs, &times);
    Ok(())
}

/// Prints the table of `times` (one list per [`Case::ALL`] entry).
fn report(runs: usize, times: &[Vec<Duration>]) {
    let dir_median = median(&mut times[4].clone());
    let layout_median = median(&mut times[3].clone());
    println!(
        "Drover's runtime alone: start + wait of /bin/true (removal not timed), {} runs \
         each (one warm-up first), in the order listed\n",
        runs
    );
    println!("| start | median ms | p95 ms | min ms | median / layout | median / dir |");
    println!("|---|---|---|---|---|---|");
    for (k, case) in Case::ALL.into_iter().enumerate() {
        let mut t = times[k].clone();
        let med = median(&mut t);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            case.name(),
            ms(med),
            ms(percentile(&mut t, 95)),
            ms(t[0]),
            med.as_secs_f64() / layout_median.as_secs_f64(),
            med.as_secs_f64() / dir_median.as_secs_f64(),
        );
    }
}

/// Removes every cached layer (and leftovers of interrupted unpacks).
fn empty_cache(cache: &Path) -> Result<()> {
    for sub in ["layers", "tmp"] {
        let dir = cache.join(sub);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("emptying {}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One start + wait (the task is removed later: `Runtime::remove`
/// collects the layers no task uses any more, which the next start needs);
/// returns the wall time, and that of `Runtime::start` alone (pull or
/// resolve included).
async fn once(runtime: &Runtime, spec: &TaskSpec) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    runtime
        .start(spec)
        .await
        .with_context(|| format!("starting {:?}", spec.rootfs))?;
    let start = started.elapsed();
    let state = runtime
        .wait(&spec.alloc_id, "main", Duration::from_secs(30))
        .await?;
    ensure!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(0),
                ..
            }
        ),
        "{:?}: {state:?}",
        spec.rootfs
    );
    Ok((started.elapsed(), start))
}
