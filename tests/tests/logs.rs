//! End-to-end tests of task logs with size-based rotation: the supervisor
//! copies the task's output into `stdout.log`, rotated into bounded files of
//! which a bounded number is kept, without losing or repeating a line;
//! `drover logs` reads them oldest first and `drover logs -f` follows across
//! a rotation; an agent killed with SIGKILL loses no line.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test logs`. Every process a test starts is SIGKILLed by
//! pid if it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_agent::runtime::logs::{rotated_path, LogLimits, LogReader};
use drover_agent::runtime::{Runtime, TaskSpec, TaskState};
use drover_tests::checks::{service, str_of, wait_running, WAIT};
use drover_tests::dev::DEV_LOG;
use drover_tests::{drover_bin, poll_until, unique_name, DevCluster};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Kills the recorded pids (supervisor, task, CLI) on drop.
#[derive(Default)]
struct Pids(Vec<i32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in self.0.iter().rev() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// Checks that `text` is whole lines `first..=last` of consecutive numbers
/// and returns `(first, last)`.
fn contiguous(text: &str) -> (u64, u64) {
    assert!(text.ends_with('\n'), "output ends mid-line");
    let mut first = None;
    let mut prev: Option<u64> = None;
    for (i, line) in text.lines().enumerate() {
        let n: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("line {i} is not a number: {line:?}"));
        if let Some(p) = prev {
            assert_eq!(
                n,
                p + 1,
                "line {i}: {n} follows {p}: a line was lost or repeated"
            );
        }
        first.get_or_insert(n);
        prev = Some(n);
    }
    (first.expect("no lines"), prev.expect("no lines"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn rotation_bounds_size_and_count_and_keeps_lines_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = unique_name("drover-logs-test");
    let rt = Runtime::new(tmp.path().join("allocs"), drover_bin())
        .with_cgroups(PathBuf::from("/sys/fs/cgroup"), PathBuf::from(&parent));
    let limits = LogLimits {
        max_size_bytes: 64 * 1024,
        max_files: 4,
    };
    let spec = TaskSpec {
        alloc_id: "rot".to_owned(),
        task: "main".to_owned(),
        hostname: "rot".to_owned(),
        command: vec!["seq".to_owned(), "1".to_owned(), "200000".to_owned()],
        kill_timeout_ms: 300,
        memory_mb: 64,
        logs: limits,
        ..Default::default()
    };
    let mut pids = Pids::default();
    let state = rt.start(&spec).await.expect("start");
    if let TaskState::Running { pid, .. } = state {
        pids.0.push(pid);
    }
    let state = rt
        .wait("rot", "main", Duration::from_secs(30))
        .await
        .expect("wait");
    assert!(
        matches!(
            state,
            TaskState::Exited {
                exit_code: Some(0),
                ..
            }
        ),
        "{state:?}"
    );
    let dir = rt.task_dir("rot", "main").unwrap();
    let current = dir.join("stdout.log");
    let files: Vec<PathBuf> = [3, 2, 1]
        .iter()
        .map(|n| rotated_path(&current, *n))
        .chain([current.clone()])
        .collect();
    assert!(
        !rotated_path(&current, 4).exists(),
        "more than max_files files kept"
    );
    let mut kept = String::new();
    for f in &files {
        let text = read(f);
        assert!(
            text.len() as u64 <= limits.max_size_bytes,
            "{} has {} bytes",
            f.display(),
            text.len()
        );
        assert!(!text.is_empty(), "{} is empty", f.display());
        kept.push_str(&text);
    }
    // Older lines were deleted with the oldest files; what is kept is the
    // contiguous tail, whose first line may be the end of a deleted one
    // (a line is split where the task's writes and the file size say).
    let tail = &kept[kept.find('\n').unwrap() + 1..];
    let (first, last) = contiguous(tail);
    assert_eq!(last, 200_000);
    assert!(first > 1, "nothing was rotated away");
    // The reader returns the same, oldest first.
    let mut reader = LogReader::open(&current, true).unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8(all).unwrap(), kept);
    rt.remove("rot", "main").expect("remove");
}

/// A CLI process writing its stdout to a file.
fn spawn_cli(c: &DevCluster, args: &[&str], out: &Path) -> Child {
    Command::new(drover_bin())
        .args(args)
        .args(["--addr", c.addr()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .expect("spawning drover")
}

#[test]
fn logs_follow_across_rotation_and_read_rotated_files_oldest_first() {
    let c = DevCluster::start();
    let job = unique_name("rotate");
    // 22.9 MB (21.8 MiB) of numbered lines: two rotations at the default 10 MiB, and
    // nothing deleted with the default 3 files.
    let file = c.write_file(
        &format!("{job}.toml"),
        &service(&job, 1, "sleep 2; seq 1 3000000; exec sleep 3600"),
    );
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let mut pids = Pids::default();
    let followed = c.data_dir().join("followed.txt");
    let follower = spawn_cli(&c, &["logs", "-f", &job], &followed);
    pids.0.push(i32::try_from(follower.id()).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut follower = follower;
    loop {
        let text = std::fs::read_to_string(&followed).unwrap_or_default();
        if text.ends_with("\n3000000\n") {
            break;
        }
        let err = std::fs::read_to_string(followed.with_extension("err")).unwrap_or_default();
        let exited = follower.try_wait().unwrap();
        assert!(
            err.is_empty() && exited.is_none() && std::time::Instant::now() < deadline,
            "drover logs -f stopped short (exit {exited:?}, stderr {err:?}) after {} bytes ending {:?}",
            text.len(),
            &text[text.len().saturating_sub(40)..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(pids);
    let (first, last) = contiguous(&read(&followed));
    assert_eq!((first, last), (1, 3_000_000));

    let dir = c
        .task_dirs()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(&alloc))
        .expect("task directory");
    let current = dir.join("stdout.log");
    for n in [1, 2] {
        let p = rotated_path(&current, n);
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 0 && len <= 10 * 1024 * 1024, "{}: {len}", p.display());
    }
    assert!(!rotated_path(&current, 3).exists());

    let out = c.cli_ok(&["logs", &job]);
    assert_eq!(contiguous(&out), (1, 3_000_000));
}

#[test]
fn a_job_file_sets_the_rotation_limits() {
    let c = DevCluster::start();
    let job = unique_name("logcfg");
    // About 2.7 MB of numbered lines against 1 MiB x 2 files: two rotations,
    // the oldest file deleted, never more than 2 files of at most 1 MiB.
    let text = service(&job, 1, "seq 1 400000; exec sleep 3600").replace(
        "kill_timeout_ms = 200",
        "kill_timeout_ms = 200\nlogs = { max_size_mb = 1, max_files = 2 }",
    );
    let file = c.write_file(&format!("{job}.toml"), &text);
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let dir = c
        .task_dirs()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(&alloc))
        .expect("task directory");
    let current = dir.join("stdout.log");
    poll_until("the task to write its last line", WAIT, || {
        read(&current).ends_with("\n400000\n").then_some(())
    });
    for p in [current.clone(), rotated_path(&current, 1)] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 0 && len <= 1024 * 1024, "{}: {len}", p.display());
    }
    assert!(!rotated_path(&current, 2).exists());
    // The oldest file kept may begin mid-line (pipe reads end anywhere):
    // whole lines from the first line end on.
    let out = c.cli_ok(&["logs", &job]);
    let whole = out.split_once('\n').map_or("", |(_, rest)| rest);
    let (first, last) = contiguous(whole);
    assert!(first > 1, "nothing was deleted: lines start at {first}");
    assert_eq!(last, 400_000);
    // Out-of-range limits are refused by name before anything is placed.
    let bad = text.replace("max_files = 2", "max_files = 0");
    let bad_file = c.write_file(&format!("{job}-bad.toml"), &bad.replace(&job, "logcfg-bad"));
    let out = c.cli(&["job", "run", bad_file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("logs.max_files must be > 0, got 0"), "{err}");
    c.cli_ok(&["job", "stop", &job]);
}

#[test]
fn agent_kill9_loses_no_log_line() {
    let mut c = DevCluster::start();
    let job = unique_name("steady");
    let file = c.write_file(
        &format!("{job}.toml"),
        &service(
            &job,
            1,
            "i=0; while :; do i=$((i+1)); echo $i; [ $((i % 200)) -eq 0 ] && sleep 0.02; done",
        ),
    );
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    wait_running(&c, &job, 1);
    let count = |c: &DevCluster| -> u64 {
        let out = c.cli_ok(&["logs", &job]);
        out.lines().count() as u64
    };
    poll_until("some output", WAIT, || (count(&c) > 2000).then_some(()));
    let before = count(&c);
    c.kill9_and_restart();
    poll_until("more output after the restart", WAIT, || {
        (count(&c) > before + 2000).then_some(())
    });
    let out = c.cli_ok(&["logs", &job]);
    // The last line may be mid-write; everything before it is whole.
    let whole = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
    let (first, last) = contiguous(whole);
    assert_eq!(first, 1);
    assert!(last > before + 2000);
}

/// Bytes the task of [`a_log_reader_that_falls_behind_gets_an_error_not_a_hang`]
/// writes: far more than can sit between the node and a reader that does
/// not read. The scheduler queues 256 chunks of at most 32 KiB (the
/// agent's read size) per reader, 8 MiB; HTTP/2 sends no more than the
/// reader's stream window (1 MiB, set below; kernel socket buffers are
/// inside it) and hyper buffers at most 400 KiB per stream waiting for it.
const FLOOD: usize = 64 << 20;
/// More than the scheduler may queue for one reader, by the sum above
/// with room to spare; less than [`FLOOD`] by far.
const HELD_FOR_A_READER: usize = 16 << 20;

#[test]
fn a_log_reader_that_falls_behind_gets_an_error_not_a_hang() {
    let c = DevCluster::start();
    let job = unique_name("flood");
    // One file, never rotated: the whole flood stays readable.
    let text = service(
        &job,
        1,
        &format!("yes drover-flood | head -c {FLOOD}; exec sleep 3600"),
    )
    .replace(
        "kill_timeout_ms = 200",
        "kill_timeout_ms = 200\nlogs = { max_size_mb = 128, max_files = 1 }",
    );
    let file = c.write_file(&format!("{job}.toml"), &text);
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let log = c
        .task_dirs()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(&alloc))
        .expect("task directory")
        .join("stdout.log");
    poll_until("the whole flood to be logged", WAIT, || {
        let len = std::fs::metadata(&log).ok()?.len();
        (len == FLOOD as u64).then_some(())
    });
    let dev_log = c.data_dir().join(DEV_LOG);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = c.url();
    let (received, end) = rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(1 << 20)
            .connect()
            .await
            .unwrap();
        let mut allocs = drover_proto::v1::alloc_service_client::AllocServiceClient::new(channel);
        let mut stream = allocs
            .logs(drover_proto::v1::LogsRequest {
                alloc_id: alloc,
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Not reading while the node sends the flood: the scheduler's
        // queue for us fills up and it gives up on us. (The connection is
        // still driven while this waits, as a live client's would be.)
        let deadline = tokio::time::Instant::now() + WAIT;
        while !std::fs::read_to_string(&dev_log)
            .unwrap_or_default()
            .contains("log reader too slow")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scheduler did not end the stream of a reader {FLOOD} bytes behind"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut received = Vec::new();
        let end = tokio::time::timeout(WAIT, async {
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => received.extend_from_slice(&chunk.data),
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
        .expect("the log stream neither finished nor failed: it hangs");
        (received, end)
    });
    let status = end.unwrap_or_else(|| {
        panic!(
            "a follow stream {FLOOD} bytes behind ended without an error after {} bytes",
            received.len()
        )
    });
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too slow"), "{status:?}");
    // What was queued before the end arrives first, in order.
    assert!(
        !received.is_empty() && received.len() <= HELD_FOR_A_READER,
        "{} bytes reached the reader before the error",
        received.len()
    );
    let head = std::fs::read(&log).unwrap();
    assert!(
        head.starts_with(&received),
        "the reader got something other than the start of the log"
    );
}
