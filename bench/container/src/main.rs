//! `container-bench [--runs N] [--drover PATH] [--userns on|off]`: wall time to create, start,
//! wait for and remove a container running `/bin/true`, for Drover's
//! runtime, `crun run`, `runc run` and a bare `unshare` as the floor,
//! alternating engines run by run on one busybox-static root filesystem.
//! Prints median, p95 and the ratio to crun; then the PSS of one idle
//! Drover supervisor.
//!
//! Run as root. The whole benchmark runs in a private mount namespace in
//! which an empty file hides `/sys/fs/cgroup/unified/cgroup.controllers`:
//! Debian's crun 1.8.1 refuses a hybrid cgroup layout otherwise. The host's
//! mount table is unchanged.
//!
//! What each engine does (be honest about the comparison):
//! - crun and runc: the OCI default spec (`crun spec`): PID, network, IPC,
//!   UTS and mount namespaces, pivot_root into the read-only busybox rootfs,
//!   /proc, /dev (+pts, shm, mqueue), /sys, masked and read-only paths, a
//!   capability set, the same memory/cpu/pids limits as Drover's spec.
//! - Drover: a supervisor process that creates the cgroups (memory, cpu,
//!   pids), unshares PID, mount, UTS, IPC and network namespaces, mounts an
//!   overlay over the same busybox rootfs (`Rootfs::Dir`, per-task upper
//!   dir), a minimal /dev (+pts, shm), read-only /sys, tmpfs /tmp, then the
//!   task pivots into it, mounts a fresh /proc, sets rlimits, the
//!   capability bounding set and no_new_privs and runs `/bin/true`; the
//!   spec and the final state are fsynced. Docker's masked and read-only
//!   /proc paths, as crun and runc have.
//! - drover, no rootfs: the same without a root filesystem (the rootfs's
//!   `/bin/true` run on the host's mount tree), to show what the rootfs
//!   costs.
//! - unshare: `unshare --pid --fork --mount --uts --ipc --net --mount-proc`.
//! - `--userns on` (default): Drover's default user namespace for Drover,
//!   the same `uidMappings`/`gidMappings` in crun's and runc's spec; `off`
//!   for neither. crun and runc always get a cgroup namespace, as Drover's
//!   tasks do.

// A report on stdout is this program's purpose.
#![allow(clippy::print_stdout)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::runtime::{Rootfs, Runtime, TaskSpec, TaskState};
use drover_bench_container::{median, ms, percentile};

const CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

/// Which container engine a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Drover,
    /// Drover without a root filesystem (the host's mount tree, own
    /// `/proc` only): what the rootfs costs.
    DroverHostFs,
    Crun,
    Runc,
    Unshare,
}

impl Engine {
    const ALL: [Engine; 5] = [
        Engine::Drover,
        Engine::Crun,
        Engine::Runc,
        Engine::Unshare,
        Engine::DroverHostFs,
    ];

    fn name(self) -> &'static str {
        match self {
            Engine::Drover => "drover",
            Engine::DroverHostFs => "drover, no rootfs",
            Engine::Crun => "crun run",
            Engine::Runc => "runc run",
            Engine::Unshare => "unshare (floor)",
        }
    }
}

struct Args {
    runs: usize,
    drover: PathBuf,
    /// Give every engine but the `unshare` floor a user namespace
    /// (container ids 0..65536 at host 1000000..): Drover's default.
    userns: bool,
}

/// Host id of container id 0 when `--userns on` (Drover's default policy).
const USERNS_BASE: u32 = drover_agent::policy::DEFAULT_USERNS_BASE;
/// Ids mapped when `--userns on`.
const USERNS_SIZE: u32 = drover_agent::policy::DEFAULT_USERNS_SIZE;

fn parse_args() -> Result<Args> {
    let mut runs = 50;
    let mut userns = true;
    let mut drover = std::env::current_exe()?
        .parent()
        .map(|d| d.join("drover"))
        .context("no directory for the bench binary")?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--drover" => drover = args.next().context("--drover PATH")?.into(),
            "--userns" => {
                userns = match args.next().as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    other => bail!("--userns on|off, got {other:?}"),
                }
            }
            other => bail!(
                "unknown argument {other:?}; usage: container-bench [--runs N] [--drover PATH] \
                 [--userns on|off]"
            ),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    ensure!(
        drover.is_file(),
        "{} does not exist: cargo build --release -p drover-cli, or pass --drover",
        drover.display()
    );
    // The runtime spawns supervisors with `/` as their working directory.
    let drover = drover
        .canonicalize()
        .with_context(|| format!("canonicalizing {}", drover.display()))?;
    Ok(Args {
        runs,
        drover,
        userns,
    })
}

fn main() -> Result<()> {
    ensure!(nix::unistd::geteuid().is_root(), "run as root");
    let args = parse_args()?;
    let tmp = tempfile::tempdir().context("tempdir")?;
    // Before any thread exists: unshare(CLONE_NEWNS) refuses threaded callers.
    private_mount_namespace(tmp.path())?;
    let bundle = make_bundle(tmp.path(), args.userns)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args, tmp.path(), &bundle))
}

/// Enters a private mount namespace and hides the v2 controller list from
/// crun there.
fn private_mount_namespace(tmp: &Path) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("mount(/, MS_REC|MS_PRIVATE)")?;
    if Path::new(CONTROLLERS).exists() {
        let empty = tmp.join("empty-controllers");
        std::fs::write(&empty, "").context("writing the empty controllers file")?;
        nix::mount::mount(
            Some(&empty),
            CONTROLLERS,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting over {CONTROLLERS}"))?;
    }
    Ok(())
}

/// A busybox-static rootfs and an OCI bundle for it.
fn make_bundle(tmp: &Path, userns: bool) -> Result<PathBuf> {
    // The mapped root of crun's and runc's user namespace must reach the
    // bundle (a tempdir is 0700).
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let bundle = tmp.join("bundle");
    let rootfs = bundle.join("rootfs");
    for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox not found: apt-get install -y busybox-static")?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    for applet in ["true", "sh", "sleep"] {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let out = Command::new("crun")
        .arg("spec")
        .current_dir(&bundle)
        .output()
        .context("running `crun spec`: apt-get install -y crun")?;
    ensure!(out.status.success(), "crun spec: {out:?}");
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    config["hostname"] = serde_json::json!("bench");
    // The limits Drover's spec below sets.
    config["linux"]["resources"]["memory"] =
        serde_json::json!({"limit": 64 << 20, "swap": 64 << 20});
    config["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 50_000, "period": 100_000});
    config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 1024});
    // Drover always gives a task a cgroup namespace, and by default a user
    // namespace.
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.push(serde_json::json!({"type": "cgroup"}));
        if userns {
            ns.push(serde_json::json!({"type": "user"}));
        }
    }
    if userns {
        let map =
            serde_json::json!([{"containerID": 0, "hostID": USERNS_BASE, "size": USERNS_SIZE}]);
        config["linux"]["uidMappings"] = map.clone();
        config["linux"]["gidMappings"] = map;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(bundle)
}

async fn run(args: Args, tmp: &Path, bundle: &Path) -> Result<()> {
    let mut policy = drover_agent::policy::NodePolicy::default();
    policy.user_namespace.enabled = args.userns;
    let runtime = Runtime::new(tmp.join("allocs"), args.drover.clone())
        .with_cgroups(
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("drover-bench"),
        )
        .with_policy(policy);
    // The same busybox rootfs as crun's and runc's, entered with pivot_root
    // through a per-task overlay.
    let spec = TaskSpec {
        alloc_id: "bench".to_owned(),
        task: "main".to_owned(),
        hostname: "bench".to_owned(),
        command: vec!["/bin/true".to_owned()],
        env: Default::default(),
        kill_timeout_ms: 1_000,
        cpu_millis: 500,
        memory_mb: 64,
        pids_max: 1024,
        logs: Default::default(),
        rootfs: Some(Rootfs::Dir {
            path: bundle.join("rootfs"),
        }),
        ..Default::default()
    };

    // One warm-up run each (page cache, first-use costs).
    for engine in Engine::ALL {
        once(engine, &runtime, &spec, bundle, 0).await?;
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Engine::ALL.len()];
    for i in 0..args.runs {
        // Alternate, rotating who goes first.
        for k in 0..Engine::ALL.len() {
            let e = (i + k) % Engine::ALL.len();
            let took = once(Engine::ALL[e], &runtime, &spec, bundle, i + 1).await?;
            times[e].push(took);
        }
    }

    let crun_median = median(&mut times[1].clone());
    println!(
        "{} runs each, alternating; create + start + wait + remove of /bin/true (busybox-static); \
         user namespace {} (unshare: never)\n",
        args.runs,
        if args.userns { "on" } else { "off" }
    );
    println!("| engine | median ms | p95 ms | min ms | median / crun |");
    println!("|---|---|---|---|---|");
    for (e, engine) in Engine::ALL.iter().enumerate() {
        let mut t = times[e].clone();
        let med = median(&mut t);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            engine.name(),
            ms(med),
            ms(percentile(&mut t, 95)),
            ms(t[0]),
            med.as_secs_f64() / crun_median.as_secs_f64()
        );
    }
    supervisor_pss(&runtime, bundle).await
}

/// One create + start + wait + remove; returns the wall time.
async fn once(
    engine: Engine,
    runtime: &Runtime,
    spec: &TaskSpec,
    bundle: &Path,
    i: usize,
) -> Result<Duration> {
    let id = format!("drover-bench-{}-{i}", std::process::id());
    let started = Instant::now();
    match engine {
        Engine::Drover | Engine::DroverHostFs => {
            let no_rootfs;
            let spec = if engine == Engine::DroverHostFs {
                no_rootfs = TaskSpec {
                    command: vec![bundle
                        .join("rootfs/bin/true")
                        .to_string_lossy()
                        .into_owned()],
                    rootfs: None,
                    ..spec.clone()
                };
                &no_rootfs
            } else {
                spec
            };
            runtime.start(spec).await?;
            let t_started = started.elapsed();
            let state = runtime
                .wait("bench", "main", Duration::from_secs(10))
                .await?;
            ensure!(
                matches!(
                    state,
                    TaskState::Exited {
                        exit_code: Some(0),
                        ..
                    }
                ),
                "drover: {state:?}"
            );
            let t_waited = started.elapsed();
            runtime.remove("bench", "main")?;
            if std::env::var_os("BENCH_PHASES").is_some() {
                eprintln!(
                    "drover phases: start {:.2} ms, wait {:.2} ms, remove {:.2} ms",
                    ms(t_started),
                    ms(t_waited - t_started),
                    ms(started.elapsed() - t_waited)
                );
            }
        }
        Engine::Crun | Engine::Runc => {
            let bin = if engine == Engine::Crun {
                "crun"
            } else {
                "runc"
            };
            // Foreground `run` creates, starts, waits and deletes.
            let status = Command::new(bin)
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("running {bin}"))?;
            ensure!(status.success(), "{bin} run: {status}");
        }
        Engine::Unshare => {
            let status = Command::new("unshare")
                .args([
                    "--pid",
                    "--fork",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--net",
                    "--mount-proc",
                ])
                .arg(bundle.join("rootfs/bin/true"))
                .status()
                .context("running unshare")?;
            ensure!(status.success(), "unshare: {status}");
        }
    }
    Ok(started.elapsed())
}

/// How many idle allocations the PSS figure is taken over: PSS divides
/// the shared pages of the `drover` binary among the processes mapping it,
/// so one lone supervisor would be charged all of them.
const PSS_ALLOCS: usize = 10;

/// How long after a start a supervisor counts as idle.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Starts [`PSS_ALLOCS`] long-running Drover tasks and reports their
/// supervisors' `smaps_rollup`: first one alone, then the mean over all.
async fn supervisor_pss(runtime: &Runtime, bundle: &Path) -> Result<()> {
    let spec = |i: usize| TaskSpec {
        alloc_id: format!("pss{i}"),
        task: "main".to_owned(),
        hostname: "pss".to_owned(),
        command: vec!["/bin/sleep".to_owned(), "60".to_owned()],
        env: Default::default(),
        kill_timeout_ms: 100,
        cpu_millis: 0,
        memory_mb: 0,
        pids_max: 0,
        logs: Default::default(),
        rootfs: Some(Rootfs::Dir {
            path: bundle.join("rootfs"),
        }),
        ..Default::default()
    };
    let mut started = Vec::new();
    let mut result = async {
        runtime.start(&spec(0)).await?;
        started.push(0);
        // Idle: past the point where a supervisor gives back its setup
        // memory (half a second into its task).
        tokio::time::sleep(IDLE_AFTER).await;
        let alone = read_pss(runtime, 0)?;
        if std::env::var_os("BENCH_SMAPS").is_some() {
            print_dirty_mappings(runtime, 0)?;
        }
        for i in 1..PSS_ALLOCS {
            runtime.start(&spec(i)).await?;
            started.push(i);
        }
        tokio::time::sleep(IDLE_AFTER).await;
        let mut sum = vec![0u64; alone.len()];
        for i in 0..PSS_ALLOCS {
            for (total, (_, v)) in sum.iter_mut().zip(read_pss(runtime, i)?) {
                *total += v;
            }
        }
        anyhow::Ok((alone, sum))
    }
    .await;
    for i in started {
        let id = format!("pss{i}");
        if let Err(e) = runtime.stop(&id, "main").await {
            result = Err(e.into());
        }
        runtime.remove(&id, "main")?;
    }
    let (alone, sum) = result?;
    println!("\nDrover supervisor memory (/proc/<pid>/smaps_rollup, idle, task running), kB:\n");
    println!("| field | 1 allocation | mean of {PSS_ALLOCS} allocations |");
    println!("|---|---|---|");
    for ((k, one), total) in alone.iter().zip(sum) {
        println!("| {k} | {one} | {} |", total / PSS_ALLOCS as u64);
    }
    Ok(())
}

/// With `BENCH_SMAPS=1`: where one lone supervisor's private dirty memory
/// is, mapping by mapping (`/proc/<pid>/smaps`), largest first.
fn print_dirty_mappings(runtime: &Runtime, i: usize) -> Result<()> {
    let dir = runtime.task_dir(&format!("pss{i}"), "main")?;
    let pid = std::fs::read_to_string(dir.join("supervisor.pid"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", pid.trim()))?;
    let mut rows: Vec<(u64, String)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(first) if first.contains('-') && !first.ends_with(':') => {
                current = line.to_owned();
            }
            Some("Private_Dirty:") => {
                let kb = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                if kb > 0 {
                    rows.push((kb, current.clone()));
                }
            }
            _ => {}
        }
    }
    rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.0));
    println!("\nOne supervisor's Private_Dirty by mapping, kB:\n");
    for (kb, mapping) in rows {
        println!("{kb:>6}  {mapping}");
    }
    Ok(())
}

fn read_pss(runtime: &Runtime, i: usize) -> Result<Vec<(String, u64)>> {
    let dir = runtime.task_dir(&format!("pss{i}"), "main")?;
    let pid = std::fs::read_to_string(dir.join("supervisor.pid"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", pid.trim()))?;
    let wanted = [
        "Rss:",
        "Pss:",
        "Pss_Anon:",
        "Pss_File:",
        "Private_Clean:",
        "Private_Dirty:",
    ];
    Ok(rollup
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let key = w.next()?;
            let value = w.next()?.parse().ok()?;
            wanted
                .contains(&key)
                .then(|| (key.trim_end_matches(':').to_owned(), value))
        })
        .collect())
}
