//! The harness of the root-only runtime tests (`tests/runtime*.rs`): a
//! [`Runtime`] over a temp dir driving real supervisors (the `drover`
//! binary), with a guard that SIGKILLs by pid every process it started and
//! removes its cgroups, so a failing test leaves nothing behind; plus
//! helpers those tests share (specs, busybox trees, mount counts).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use drover_agent::cgroup::{self, Cgroups};
use drover_agent::policy::NodePolicy;
use drover_agent::runtime::{Rootfs, Runtime, RuntimeError, TaskSpec, TaskState};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::drover_bin;

/// Where the tests' cgroups go, whichever version the host has.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One test's temp dir (state root `allocs/`, and whatever the test puts
/// beside it), its [`Runtime`], and every process it started; on drop the
/// processes are SIGKILLed by pid, the harness's cgroup parent (if any) is
/// removed, then the temp dir goes.
pub struct Harness {
    tmp: TempDir,
    /// The runtime under test.
    pub rt: Runtime,
    cgroups: Option<CgroupParent>,
    pids: Mutex<Vec<i32>>,
}

/// The cgroup parent a harness puts its tasks under, in every hierarchy.
struct CgroupParent {
    parent: PathBuf,
    cgroups: Box<dyn Cgroups>,
}

/// Options of a [`Harness`]; see [`Harness::builder`].
#[derive(Default)]
pub struct HarnessBuilder {
    cgroups: Option<String>,
    policy: Option<NodePolicy>,
    image_cache: bool,
}

impl HarnessBuilder {
    /// Puts tasks' cgroups under `drover-test-<pid>-<name>` in each
    /// hierarchy of [`CGROUP_ROOT`]; the guard removes that parent.
    pub fn cgroups(mut self, name: &str) -> Self {
        self.cgroups = Some(name.to_owned());
        self
    }

    /// Enforces `policy` instead of [`NodePolicy::default`].
    pub fn policy(mut self, policy: NodePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Caches image layers in `<tmp>/cache` (else `<tmp>/images`).
    pub fn image_cache(mut self) -> Self {
        self.image_cache = true;
        self
    }

    /// Makes the temp dir and the runtime; fails unless run as root.
    pub fn build(self) -> Result<Harness> {
        ensure!(
            nix::unistd::geteuid().is_root(),
            "the runtime e2e tests need root (namespaces, mounts, cgroups)"
        );
        let tmp = tempfile::tempdir().context("tempdir")?;
        let mut rt = Runtime::new(tmp.path().join("allocs"), drover_bin());
        if self.image_cache {
            rt = rt.with_image_cache(tmp.path().join("cache"));
        }
        // Every harness has a cgroup parent of its own, also when the test
        // does not look at cgroups: the runtime's default (`drover`) is
        // shared, and a supervisor killed by the guard before it removed
        // its task's cgroup would leave that behind.
        static ANONYMOUS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = self.cgroups.unwrap_or_else(|| {
            let n = ANONYMOUS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("h{n}")
        });
        let parent = PathBuf::from(format!("drover-test-{}-{name}", std::process::id()));
        rt = rt.with_cgroups(PathBuf::from(CGROUP_ROOT), parent.clone());
        let cgroups = cgroup::detect(Path::new(CGROUP_ROOT)).context("detecting cgroups")?;
        let cgroups = Some(CgroupParent { parent, cgroups });
        if let Some(policy) = self.policy {
            rt = rt.with_policy(policy);
        }
        Ok(Harness {
            tmp,
            rt,
            cgroups,
            pids: Mutex::new(Vec::new()),
        })
    }
}

impl Harness {
    /// A harness with a cgroup parent of its own, the default policy and
    /// image cache.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A harness with options.
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder::default()
    }

    /// The temp dir everything of this test lives in.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// `rel` in the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The runtime's state root.
    pub fn root(&self) -> PathBuf {
        self.path("allocs")
    }

    /// The task directory of `alloc_id`'s task `main`.
    pub fn dir(&self, alloc_id: &str) -> PathBuf {
        self.root().join(alloc_id).join("main")
    }

    /// Where a test builds its root filesystem tree.
    pub fn rootfs(&self) -> PathBuf {
        self.path("rootfs")
    }

    /// [`Harness::rootfs`] as a task's root.
    pub fn dir_rootfs(&self) -> Rootfs {
        Rootfs::Dir {
            path: self.rootfs(),
        }
    }

    /// The cgroup parent, relative to each hierarchy.
    ///
    /// # Panics
    ///
    /// When the harness was built without [`HarnessBuilder::cgroups`].
    pub fn cgroup_parent(&self) -> &Path {
        &self.cgroup().parent
    }

    /// The host's cgroup hierarchies.
    ///
    /// # Panics
    ///
    /// When the harness was built without [`HarnessBuilder::cgroups`].
    pub fn cgroups(&self) -> &dyn Cgroups {
        self.cgroup().cgroups.as_ref()
    }

    fn cgroup(&self) -> &CgroupParent {
        self.cgroups
            .as_ref()
            .expect("the harness was built without .cgroups(name)")
    }

    /// The task's cgroup path relative to each hierarchy.
    pub fn cg_path(&self, alloc_id: &str) -> PathBuf {
        self.cgroup_parent().join(alloc_id).join("main")
    }

    /// Whether any hierarchy still has a directory for `rel`.
    pub fn cgroup_exists(&self, rel: &Path) -> bool {
        self.cgroups()
            .procs_files(rel)
            .iter()
            .any(|f| f.parent().is_some_and(Path::is_dir))
    }

    /// Every directory below the cgroup parent, in every hierarchy (the
    /// parent itself included); empty without cgroups.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Some(cg) = &self.cgroups else {
            return out;
        };
        for file in cg.cgroups.procs_files(&cg.parent) {
            if let Some(dir) = file.parent() {
                collect_dirs(dir, &mut out);
            }
        }
        out
    }

    /// Whether a directory of the cgroup parent exists in any hierarchy.
    pub fn any_cgroup_left(&self) -> bool {
        !self.cgroup_dirs().is_empty()
    }

    /// Starts the task and records its supervisor and task pids for cleanup.
    pub async fn start(&self, spec: &TaskSpec) -> Result<TaskState, RuntimeError> {
        let result = self.rt.start(spec).await;
        self.track(&spec.alloc_id, &spec.task);
        result
    }

    /// Records the supervisor and (if running) task pids of a task started
    /// by other means for cleanup.
    pub fn track(&self, alloc_id: &str, task: &str) {
        let dir = self.root().join(alloc_id).join(task);
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(pid) = read_pid_file(&dir.join("supervisor.pid")) {
            pids.push(pid);
        }
        if let Ok(TaskState::Running { pid, .. }) = self.rt.state(alloc_id, task) {
            pids.push(pid);
        }
    }

    /// The pids recorded for cleanup so far.
    pub fn tracked(&self) -> Vec<i32> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the pids recorded so far (their processes are known gone,
    /// and the numbers may be reused).
    pub fn forget_tracked(&self) {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The pid in the task's `supervisor.pid`.
    pub fn supervisor_pid(&self, alloc_id: &str) -> Result<i32> {
        read_pid_file(&self.dir(alloc_id).join("supervisor.pid"))
    }

    /// The task's log file `name` (`stdout.log`, `supervisor.pid`, ...).
    pub fn log(&self, alloc_id: &str, name: &str) -> Result<String> {
        let path = self.dir(alloc_id).join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Polls until the task's state is terminal.
    pub async fn wait_terminal(&self, alloc_id: &str, timeout: Duration) -> Result<TaskState> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.rt.state(alloc_id, "main")?;
            if state.is_terminal() {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                bail!("{alloc_id}: still {state:?} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `stdout.log` contains `needle`.
    pub async fn wait_stdout(&self, alloc_id: &str, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.log(alloc_id, "stdout.log")?.contains(needle) {
            ensure!(
                Instant::now() < deadline,
                "{alloc_id}: no {needle:?} on stdout after {timeout:?}; state {:?}, stderr {:?}",
                self.rt.state(alloc_id, "main"),
                self.log(alloc_id, "stderr.log")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Runs a probe to completion; returns its stdout, failing with its
    /// logs unless it exited 0.
    pub async fn probe(&self, spec: &TaskSpec) -> Result<String> {
        self.start(spec).await?;
        let state = self
            .rt
            .wait(&spec.alloc_id, "main", Duration::from_secs(10))
            .await?;
        let stdout = self.log(&spec.alloc_id, "stdout.log")?;
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
            self.log(&spec.alloc_id, "stderr.log").unwrap_or_default(),
            self.log(&spec.alloc_id, "supervisor.log")
                .unwrap_or_default()
        );
        Ok(stdout)
    }

    /// [`Harness::probe`], then removes the task.
    pub async fn probe_and_remove(&self, spec: &TaskSpec) -> Result<String> {
        let stdout = self.probe(spec).await?;
        self.rt.remove(&spec.alloc_id, "main")?;
        Ok(stdout)
    }

    /// Starts a long-running probe and waits until its stdout has a line
    /// `ready`; returns its host pid and stdout so far.
    pub async fn start_until_ready(&self, spec: &TaskSpec) -> Result<(i32, String)> {
        let state = self.start(spec).await?;
        let TaskState::Running { pid, .. } = state else {
            bail!("{}: expected running, got {state:?}", spec.alloc_id);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.log(&spec.alloc_id, "stdout.log").unwrap_or_default();
            if out.lines().any(|l| l == "ready") {
                return Ok((pid, out));
            }
            ensure!(
                Instant::now() < deadline,
                "{}: never ready; stdout {out:?} stderr {:?}",
                spec.alloc_id,
                self.log(&spec.alloc_id, "stderr.log")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        // Tasks first (their PID namespace dies with them), then supervisors.
        for pid in pids.iter().rev() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        // Deepest first; the kernel may need a moment to empty a cgroup.
        let mut dirs = self.cgroup_dirs();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A spec of task `main` of `alloc_id` running `command`, with hostname
/// `<alloc_id>-host`, a 300 ms kill timeout, 1024 pids and otherwise
/// [`TaskSpec::default`]; each test file adjusts it with `..task_spec(..)`.
pub fn task_spec(alloc_id: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        alloc_id: alloc_id.to_owned(),
        task: "main".to_owned(),
        hostname: format!("{alloc_id}-host"),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        kill_timeout_ms: 300,
        pids_max: 1024,
        ..Default::default()
    }
}

/// Copies the host's busybox (static: `apt-get install busybox-static`) to
/// `<root>/bin/busybox` and links each of `applets` to it in `<root>/bin`.
pub fn busybox_tree(root: &Path, applets: &[&str]) -> Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("mkdir {}", bin.display()))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox not found: apt-get install -y busybox-static")?;
    std::fs::copy(busybox, bin.join("busybox")).context("copying busybox")?;
    for applet in applets {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("linking {applet}"))?;
    }
    Ok(())
}

/// How many mounts of this process's mount namespace count for leak
/// checks (see [`counted_mount`]).
pub fn mount_count() -> Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")
        .context("reading /proc/self/mountinfo")?
        .lines()
        .filter(|l| counted_mount(l))
        .count())
}

/// Whether a `/proc/self/mountinfo` line counts for leak checks: network
/// namespace files (`nsfs`) and the directories holding them (`.../netns`,
/// bound onto themselves as `ip netns` does) are skipped, because other
/// tests on this shared host create and remove them at any time, and the
/// container runtime never mounts either in the host's namespace.
pub fn counted_mount(line: &str) -> bool {
    let mount_point = line.split(' ').nth(4).unwrap_or("");
    let nsfs = line
        .split(" - ")
        .nth(1)
        .is_some_and(|fs| fs.starts_with("nsfs "));
    !nsfs && !mount_point.split('/').any(|c| c == "netns")
}

fn read_pid_file(path: &Path) -> Result<i32> {
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_owned());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}
