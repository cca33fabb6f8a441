//! End-to-end tests of `drover exec` against a real `drover dev`: the
//! command runs in all of the task's namespaces and its cgroup, gets its
//! environment, stdin and exit status through, refuses what cannot be run
//! with a clear message and exit code, dies with the CLI, and works on a
//! pseudo-terminal (`tty`, `stty size`, resizes, raw mode restored).
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test exec`. Each test has its own `drover dev`; every CLI
//! process a test starts is SIGKILLed by pid if the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_tests::checks::{service, str_of, task_pids, wait_running, WAIT};
use drover_tests::procs::{cmdline, namespace, pid_alive};
use drover_tests::{drover_bin, poll_until, unique_name, DevCluster};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long one exec CLI may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A `drover` CLI process started by a test; SIGKILLed on drop.
struct Cli {
    child: Option<Child>,
}

impl Cli {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// Waits (bounded) and returns its output.
    fn wait(mut self) -> Output {
        let child = self.child.take().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(out) => out.expect("waiting for drover"),
            Err(_) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                panic!("drover exec ran longer than {CLI_TIMEOUT:?}");
            }
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `drover ARGS` against cluster `c` (through `DROVER_ADDR`: `exec` takes
/// everything after `--` as the command), with `stdin` piped in.
fn spawn(c: &DevCluster, args: &[&str], stdin: Option<Vec<u8>>) -> Cli {
    let mut child = Command::new(drover_bin())
        .args(args)
        .env("DROVER_ADDR", c.addr())
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning drover");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    Cli { child: Some(child) }
}

fn exec(c: &DevCluster, alloc: &str, command: &[&str]) -> Output {
    let mut args = vec!["exec", alloc, "--"];
    args.extend_from_slice(command);
    spawn(c, &args, None).wait()
}

/// A `drover exec` whose stdin the test writes and whose stdout it reads
/// line by line while the session runs.
struct Session {
    cli: Cli,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Session {
    /// Starts `drover exec ALLOC -- COMMAND...` with stdin and stdout piped.
    fn start(c: &DevCluster, alloc: &str, command: &[&str]) -> Session {
        let mut args = vec!["exec", alloc, "--"];
        args.extend_from_slice(command);
        let mut child = Command::new(drover_bin())
            .args(&args)
            .env("DROVER_ADDR", c.addr())
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning drover exec");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            cli: Cli { child: Some(child) },
            stdin,
            lines,
        }
    }

    /// The next line of the command's output, waiting at most [`WAIT`].
    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no output line from drover exec: {e}"))
    }

    /// Writes `text` to the command's stdin and closes it. A session that
    /// already ended (wrongly) refuses the write: what it printed tells.
    fn finish_input(&mut self, text: &str) {
        let mut stdin = self.stdin.take().expect("stdin still open");
        if let Err(e) = stdin.write_all(text.as_bytes()) {
            eprintln!("writing to drover exec's stdin: {e}");
        }
    }

    /// Waits for the CLI; returns its output, stdout holding the lines not
    /// read yet.
    fn wait(self) -> Output {
        let mut out = self.cli.wait();
        // The reader thread may not have taken the last lines off the pipe
        // yet when the CLI has exited: read until it has seen the end.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            rest.push(line);
        }
        out.stdout = rest
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes();
        out
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "drover exec failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// A cluster running one long-lived allocation; returns it, the job name,
/// the allocation id and the task's host pid.
fn running() -> (DevCluster, String, String, i32) {
    let c = DevCluster::start();
    let job = unique_name("exec");
    let file = c.write_file(&format!("{job}.toml"), &service(&job, 1, "exec sleep 3600"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let pid = task_pids(&status)[0];
    (c, job, alloc, pid)
}

/// Host pids whose argv is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if cmdline(pid) == argv && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn status_line(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn exec_runs_in_the_task_namespaces_with_its_environment_and_exit_status() {
    let (c, job, alloc, task_pid) = running();

    // UTS: the allocation's host name.
    let host = ok(&exec(&c, &alloc, &["hostname"]));
    assert_eq!(host.trim(), format!("{job}-main-0"));
    // PID: Drover's init is PID 1 of what the command sees (showing no
    // host path), the task its first child.
    let init = ok(&exec(&c, &alloc, &["cat", "/proc/1/cmdline"]));
    assert_eq!(init, "drover-init\u{0}");
    let cmd = ok(&exec(&c, &alloc, &["cat", "/proc/2/cmdline"]));
    assert_eq!(cmd, "sleep\u{0}3600\u{0}");
    // Every namespace is the task's, as the host sees it.
    let kinds = ["mnt", "pid", "uts", "ipc", "net", "cgroup", "user"];
    let script = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}"))
        .collect::<Vec<_>>()
        .join("; ");
    let inside = ok(&exec(&c, &alloc, &["sh", "-c", &script]));
    let inside: Vec<&str> = inside.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{inside:?}");
    for (kind, seen) in kinds.iter().zip(&inside) {
        let host_view = namespace(&task_pid.to_string(), kind).unwrap();
        assert_eq!(
            *seen,
            host_view.to_str().unwrap(),
            "{kind} namespace of the exec'd command differs from the task's"
        );
    }
    // The task's environment, plus -e.
    let out = spawn(
        &c,
        &[
            "exec",
            &alloc,
            "-e",
            "EXTRA=given",
            "--",
            "sh",
            "-c",
            "echo $DROVER_ALLOC_ID $DROVER_TASK $EXTRA; pwd; id -u",
        ],
        None,
    )
    .wait();
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("{alloc} app given"));
    assert_eq!(lines[1], "/");
    assert_eq!(lines[2], "0", "root inside the task");
    // Nothing of the agent's or the helper's leaks into the command.
    let fds = ok(&exec(&c, &alloc, &["sh", "-c", "ls /proc/$$/fd"]));
    assert_eq!(fds, "0\n1\n2\n");
    // Exit codes and signals come back as the CLI's exit status.
    let out = exec(&c, &alloc, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    let out = exec(&c, &alloc, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
}

#[test]
fn exec_joins_the_task_cgroup_and_dies_with_the_cli() {
    let (c, _job, alloc, task_pid) = running();
    // A distinctive argv to find the command from the host.
    let cli = spawn(&c, &["exec", &alloc, "--", "sleep", "987"], None);
    let pid = poll_until("the exec'd sleep to run", WAIT, || {
        pids_running(&["sleep", "987"]).first().copied()
    });
    let cgroups = |p: i32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    let relevant = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("memory") || l.contains("pids") || l.contains(":cpu"))
            .map(str::to_owned)
            .collect()
    };
    let want = relevant(cgroups(task_pid));
    assert!(!want.is_empty(), "task cgroups: {}", cgroups(task_pid));
    assert_eq!(
        relevant(cgroups(pid)),
        want,
        "exec'd process is not in the task's cgroups"
    );
    // Same credentials on the host as the task: with a user namespace,
    // its mapped root, not the host's.
    assert_eq!(status_line(pid, "Uid:"), status_line(task_pid, "Uid:"));
    let uid_map = std::fs::read_to_string(format!("/proc/{task_pid}/uid_map")).unwrap();
    let map: Vec<u64> = uid_map
        .split_whitespace()
        .take(3)
        .map(|w| w.parse().unwrap())
        .collect();
    if map[..2] != [0, 0] {
        // A user namespace: root inside is `host_base` outside.
        let host_uid = status_line(pid, "Uid:");
        let real: u64 = host_uid.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(real, map[1], "exec'd root is not the mapped uid: {uid_map}");
    }
    // The CLI going away kills the command.
    let cli_pid = cli.pid();
    kill(Pid::from_raw(cli_pid), Signal::SIGKILL).unwrap();
    drop(cli);
    poll_until("the exec'd sleep to die with its CLI", WAIT, || {
        (!pid_alive(pid)).then_some(())
    });
    assert!(pid_alive(task_pid), "the task must survive an exec session");

    // What the command started in the background ends with the session:
    // seen running while the session is open, gone once it ended.
    let mut session = Session::start(
        &c,
        &alloc,
        &["sh", "-c", "sleep 986 & echo started; read x"],
    );
    assert_eq!(session.line(), "started");
    let background = poll_until("the background sleep to run", WAIT, || {
        pids_running(&["sleep", "986"]).first().copied()
    });
    session.finish_input("done\n");
    let out = session.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    poll_until("the background sleep to end with its session", WAIT, || {
        (!pid_alive(background)).then_some(())
    });
    assert!(pids_running(&["sleep", "986"]).is_empty());
    assert!(pid_alive(task_pid), "the task must survive an exec session");
}

#[test]
fn exec_runs_as_the_task_user_unless_told_otherwise() {
    let c = DevCluster::start();
    let job = unique_name("execuser");
    let file = c.write_file(
        &format!("{job}.toml"),
        &service(&job, 1, "exec sleep 3600").replace(
            "kill_timeout_ms = 200",
            "kill_timeout_ms = 200\nuser = \"1234:2345\"",
        ),
    );
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let task_pid = task_pids(&status)[0];
    let probe = [
        "sh",
        "-c",
        "id -u; id -g; id -G; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    ];

    // As `docker exec`: the task's user, with its groups only, no
    // capabilities and no_new_privs, as the task has.
    let out = ok(&exec(&c, &alloc, &probe));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["1234", "2345", "2345"], "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(
        status_line(task_pid, "Uid:").split_whitespace().nth(1),
        Some("1001234"),
        "the task itself runs as 1234 inside"
    );

    // -u: a number, a name from the task's own /etc/passwd (the host view
    // here: root and nobody exist), or root inside.
    let as_user = |user: &str| {
        let mut args = vec!["exec", "-u", user, alloc.as_str(), "--"];
        args.extend_from_slice(&probe[..]);
        spawn(&c, &args, None).wait()
    };
    let out = ok(&as_user("0"));
    assert_eq!(&out.lines().collect::<Vec<_>>()[..2], ["0", "0"], "{out}");
    let out = ok(&as_user("nobody"));
    assert_eq!(out.lines().next(), Some("65534"), "{out}");
    let out = ok(&as_user("4321:99"));
    assert_eq!(
        &out.lines().collect::<Vec<_>>()[..2],
        ["4321", "99"],
        "{out}"
    );

    // Refused before anything runs, naming what was wrong.
    for (user, says) in [
        ("70000", "outside the mapped range"),
        ("no-such-user", "not in the task's /etc/passwd"),
        ("a:b:c", "user"),
    ] {
        let out = as_user(user);
        assert_eq!(out.status.code(), Some(125), "-u {user}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(says) && stderr(&out).contains("--user"),
            "-u {user}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn exec_forwards_stdin_and_refuses_what_cannot_run() {
    let (c, job, alloc, _task_pid) = running();
    let out = spawn(&c, &["exec", &alloc, "--", "cat"], Some(b"hi\n".to_vec())).wait();
    assert_eq!(ok(&out), "hi\n");
    // A megabyte through the pipes, more than any buffer on the way.
    let big = vec![b'x'; 1 << 20];
    let out = spawn(&c, &["exec", &job, "--", "wc", "-c"], Some(big)).wait();
    assert_eq!(ok(&out).trim(), (1 << 20).to_string());

    let out = exec(&c, &alloc, &["no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-command-here") && stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
    let out = exec(&c, &alloc, &["/etc/hostname"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));

    let out = exec(&c, "no-such-alloc", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no-such-alloc"), "{}", stderr(&out));
    let out = spawn(&c, &["exec", &alloc, "--task", "nope", "--", "true"], None).wait();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));

    // A finished allocation is refused, naming it.
    let done = unique_name("done");
    let file = c.write_file(
        &format!("{done}.toml"),
        &service(&done, 1, "exit 0").replace("kind = \"service\"", "kind = \"batch\""),
    );
    c.cli_json(&["job", "run", file.to_str().unwrap(), "--detach"]);
    let finished = poll_until("the batch allocation to complete", WAIT, || {
        let s = c.cli_json(&["job", "status", &done]);
        let a = s["allocations"].as_array()?.first()?.clone();
        (a["status"] == "complete").then(|| str_of(&a, "id").to_owned())
    });
    let out = exec(&c, &finished, &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&finished) && stderr(&out).contains("not running"),
        "{}",
        stderr(&out)
    );
}

/// Reads everything the pty master yields into a shared buffer, until the
/// master is closed.
fn collect(master: &OwnedFd) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut file = std::fs::File::from(master.try_clone().unwrap());
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = file.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text_of(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[test]
fn exec_with_a_terminal() {
    let (c, _job, alloc, _task_pid) = running();
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).unwrap();
    let before = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    let slave = pty.slave.as_raw_fd();
    let mut command = Command::new(drover_bin());
    command
        .args([
            "exec",
            &alloc,
            "--",
            "sh",
            "-c",
            "tty; stty size; echo ready; read x; stty size; echo got $x",
        ])
        .env("DROVER_ADDR", c.addr())
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe; `slave` is open in
    // the parent until after the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    let cli = Cli { child: Some(child) };
    let out = collect(&pty.master);
    poll_until("the command to be ready on its terminal", WAIT, || {
        text_of(&out).contains("ready").then_some(())
    });
    let first = text_of(&out);
    assert!(first.contains("/dev/pts/"), "{first:?}");
    assert!(first.contains("40 100"), "{first:?}");
    // The CLI's terminal is raw while the session runs.
    let during = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert!(
        !during
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON),
        "the local terminal is not in raw mode"
    );
    // A resize reaches the command's terminal (SIGWINCH -> resize frame).
    let bigger = libc::winsize {
        ws_row: 50,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through a valid pointer.
    unsafe {
        libc::ioctl(
            pty.master.as_raw_fd(),
            libc::TIOCSWINSZ,
            &bigger as *const libc::winsize,
        )
    };
    // The resize and the input travel different paths (a control pipe and
    // stdin); nothing shows when the resize has arrived, so give it a
    // moment before the input that makes the command look.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::File::from(pty.master.try_clone().unwrap())
        .write_all(b"hello\r")
        .unwrap();
    let output = cli.wait();
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        text_of(&out)
    );
    poll_until("the rest of the output", WAIT, || {
        text_of(&out).contains("got hello").then_some(())
    });
    assert!(text_of(&out).contains("50 120"), "{}", text_of(&out));
    // Raw mode is undone on the way out.
    let after = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
}

/// Kills a daemon by pid when dropped, even if the test fails.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exec_under_mutual_tls_needs_a_cli_certificate() {
    use drover_store::embedded::{CancellationToken, EmbeddedEtcd};

    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let file = |name: &str| pki.join(name).display().to_string();
    let init = Command::new(drover_bin())
        .args(["tls", "init", "--dir", pki.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let _stop_store = stop.clone().drop_guard();
    let store_url = rt.block_on(async {
        let etcd = EmbeddedEtcd::open(&dir.path().join("store")).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(etcd.serve(l, stop.clone()));
        url
    });
    let addr_file = dir.path().join("addr");
    let _scheduler = Daemon(
        Command::new(drover_bin())
            .args(["scheduler", "--etcd", &store_url, "--listen", "127.0.0.1:0"])
            .args(["--addr-file", addr_file.to_str().unwrap()])
            .args(["--tls-cert", &file("scheduler.pem")])
            .args(["--tls-key", &file("scheduler-key.pem")])
            .args(["--tls-client-ca", &file("ca.pem")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = poll_until("the scheduler's address", WAIT, || {
        let s = std::fs::read_to_string(&addr_file).ok()?;
        s.ends_with('\n').then(|| s.trim().to_owned())
    });
    let exec_as = |role: &str| {
        Command::new(drover_bin())
            .args(["exec", "some-alloc", "--addr", &format!("https://{addr}")])
            .args(["--tls-ca", &file("ca.pem")])
            .args(["--tls-cert", &file(&format!("{role}.pem"))])
            .args(["--tls-key", &file(&format!("{role}-key.pem"))])
            .args(["--", "true"])
            .env_remove("DROVER_ADDR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // An agent's certificate may not call Exec itself (not just List).
    let code = rt.block_on(async {
        let channel = drover_tests::mtls_channel(&format!("https://{addr}"), &pki, "agent").await;
        let mut allocs = drover_proto::v1::alloc_service_client::AllocServiceClient::new(channel);
        let start = drover_proto::v1::ExecRequest {
            start: Some(drover_proto::v1::ExecStart {
                alloc_id: "some-alloc".into(),
                command: vec!["true".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        allocs
            .exec(tokio_stream::iter(vec![start]))
            .await
            .unwrap_err()
    });
    assert_eq!(code.code(), tonic::Code::PermissionDenied, "{code:?}");
    assert!(code.message().contains("drover-agent"), "{code:?}");
    let out = exec_as("agent");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("needs the viewer role; drover-agent is an agent certificate"),
        "{}",
        stderr(&out)
    );
    // A CLI certificate gets through to the lookup.
    let out = exec_as("cli");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no job or allocation named \"some-alloc\""),
        "{}",
        stderr(&out)
    );
}

/// Another node's agent cannot write into, or end, an exec session it
/// does not serve: the scheduler routes output by session and node.
#[test]
fn another_nodes_agent_cannot_inject_into_an_exec_session() {
    // A cluster CIDR with room for a second node; this test's own range.
    let subnet = format!("10.251.{}.0/24", 1 + std::process::id() % 200);
    let c = DevCluster::start_with(&["--cluster-cidr", "10.251.0.0/16", "--subnet", &subnet]);
    let job = unique_name("exec");
    let file = c.write_file(&format!("{job}.toml"), &service(&job, 1, "exec sleep 3600"));
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    // The session is known to exist (its first output came through the
    // scheduler) before anything is injected, and stays open until the
    // injection is over.
    let mut session = Session::start(&c, &alloc, &["sh", "-c", "echo ready; read x; echo real"]);
    assert_eq!(session.line(), "ready");
    // A second "node" connects and sends output, and an end, for every
    // session id a scheduler is likely to have handed out.
    let url = c.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use drover_proto::v1 as pb;
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut agents = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(1100);
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Register(pb::Register {
                node: Some(pb::Node {
                    // No address: the real agent makes no route to it.
                    id: "intruder".into(),
                    cpu_millis: 1,
                    memory_mb: 1,
                    ..Default::default()
                }),
                running: vec![],
                partial_assignments: false,
                partial_peers: false,
            })),
        })
        .await
        .unwrap();
        let mut down = agents
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let _registered = down.message().await.unwrap();
        for request_id in 0..1000 {
            tx.send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::ExecOutput(pb::ExecOutput {
                    request_id,
                    response: Some(pb::ExecResponse {
                        stdout: b"INJECTED\n".to_vec(),
                        exit_code: Some(0),
                        ..Default::default()
                    }),
                    done: true,
                    limit_reached: false,
                })),
            })
            .await
            .unwrap();
        }
        // Let the scheduler read them all before the stream goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    session.finish_input("go\n");
    let out = session.wait();
    assert_eq!(ok(&out), "real\n", "stderr: {}", stderr(&out));
}
