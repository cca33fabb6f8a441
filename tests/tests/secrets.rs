//! End-to-end: the node's secrets and state are kept from tasks and from
//! other users of the host.
//!
//! `drover dev` runs as the README has it: its data directory below
//! `/var/lib`, made beforehand by `mkdir -p` under the usual umask (0755),
//! and a `drover tls init` certificate directory next to it. A service
//! holds a secret in its environment, its log and its `/tmp`. Then:
//!
//! - a second task (default `host` root) looks for the secret everywhere
//!   it can, for the node's data and certificate directories, `/root`,
//!   `/home`, `/srv`, `/var/lib`, and for `/etc/shadow`'s content;
//! - the host user `nobody` (through `setpriv`) tries to list or read every
//!   path below the data and certificate directories (walked as root) and
//!   the environment of the `drover dev` process and of the service;
//! - the host user `nobody` asks the scheduler, the embedded store and
//!   the status page on loopback for the job, every key and the page: all
//!   refuse, naming its uid;
//! - every state file, log and key below them is 0600, the data directory
//!   0700.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use drover_tests::checks::{batch, edit, service, str_of, task_pids, wait_running, WAIT};
use drover_tests::{poll_until, run_drover, unique_name, DevCluster};

/// Where the README puts `drover dev`'s data (`/var/lib/drover/dev`).
const VAR_LIB: &str = "/var/lib";
/// The unprivileged host user the test acts as.
const NOBODY: &str = "65534";

/// Every path below `root` (itself included), walked as root.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if let (true, Ok(entries)) = (is_dir, std::fs::read_dir(&p)) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// Runs `script` with `sh` as the host user `nobody`, `stdin` on its
/// standard input; returns its standard output.
fn as_nobody(script: &str, stdin: &str) -> String {
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writing the path list");
    let out = child.wait_with_output().expect("setpriv");
    assert!(
        out.status.success(),
        "the probe as nobody failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of `out` that report something seen.
fn findings(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| {
            [
                "VISIBLE:", "FOUND:", "READ:", "LISTED:", "ENVIRON:", "PRIVATE:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect()
}

#[test]
fn tasks_and_host_users_read_nothing_of_the_cluster() {
    // As a shell started by the README's command would have it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let pki_parent = tempfile::Builder::new()
        .prefix("drover-e2e-pki-")
        .tempdir_in(VAR_LIB)
        .expect("tempdir");
    std::fs::set_permissions(
        pki_parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let pki = pki_parent.path().join("pki");
    let init = run_drover(&["tls", "init", "--dir", pki.to_str().expect("utf-8")]);
    assert!(init.status.success(), "{init:?}");

    let c = DevCluster::start_in(Path::new(VAR_LIB), 0o755, &[]);
    let data = c.data_dir().to_path_buf();
    let secret = unique_name("s3cr3t");

    // The victim: the secret in its environment, its log and its /tmp.
    let victim = unique_name("victim");
    let job = edit(
        &service(
            &victim,
            1,
            "echo \"$SECRET\"; echo \"$SECRET\" > /tmp/secret; exec sleep 3600",
        ),
        "kill_timeout_ms = 200\n",
        &format!("kill_timeout_ms = 200\nenv = {{ SECRET = {secret:?} }}\n"),
    );
    let file = c.write_file(&format!("{victim}.toml"), &job);
    c.cli_ok(&["job", "run", file.to_str().expect("utf-8")]);
    let status = wait_running(&c, &victim, 1);
    let victim_pid = task_pids(&status)[0];
    poll_until("the secret in the victim's log", WAIT, || {
        c.cli_ok(&["logs", &victim]).contains(&secret).then_some(())
    });

    let out = snoop_as_task(&c, &pki, &secret);
    assert_eq!(findings(&out), Vec::<&str>::new(), "a task saw: {out}");
    let shadow = std::fs::metadata("/etc/shadow").map_or(0, |m| m.len());
    if shadow > 0 {
        assert!(out.contains("SHADOW:0\n"), "/etc/shadow showed: {out}");
    }

    // The host user nobody, on every path below the data and certificate
    // directories, and on the environment of drover dev and the victim.
    let mut paths = walk(&data);
    paths.extend(walk(&pki));
    let out = probe_as_nobody(&paths, &[c.pid(), victim_pid]);
    assert_eq!(findings(&out), Vec::<&str>::new(), "nobody could: {out}");

    // Nor through the APIs on loopback: the scheduler and the embedded
    // store refuse every user but root (and their own), naming the uid.
    let out = api_as_nobody(&c, &victim);
    assert!(
        !out.contains(&secret),
        "nobody read the secret through an API: {out}"
    );
    for api in ["SCHEDULER", "STORE", "PAGE"] {
        assert!(
            out.contains(&format!("{api}-REFUSED")) && !out.contains(&format!("{api}-ANSWERED")),
            "the {api} answered nobody: {out}"
        );
    }
    assert!(out.contains("the caller is uid 65534"), "{out}");

    // And the modes themselves, whatever umask drover was started with.
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    assert_eq!(mode(&pki), 0o700, "{}", pki.display());
    let loose: Vec<String> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        // The job files are the test's own, written with its umask.
        .filter(|p| !task_readable(p) && !is_cert(p) && p.extension().is_none_or(|e| e != "toml"))
        .filter(|p| mode(p) & 0o077 != 0)
        .map(|p| format!("{} {:o}", p.display(), mode(p)))
        .collect();
    assert_eq!(loose, Vec::<String>::new(), "state files others may read");
}

/// Runs a task with the default root that looks for the secret everywhere
/// it can, for the node's data and certificate directories (`pki`),
/// `/root`, `/home`, `/srv`, `/var/lib`, and for the content of
/// `/etc/shadow` and `/etc/ssl/private`; returns its output.
fn snoop_as_task(c: &DevCluster, pki: &Path, secret: &str) -> String {
    // The secret is split in the script so that it holds no copy of it.
    let (head, tail) = secret.split_at(secret.len() / 2);
    let (d, p) = (c.data_dir().display(), pki.display());
    let script = format!(
        "s={head}; s=\"$s\"{tail}; \
         for x in /root /home /srv /var/lib /var {d} {p}; do [ -e $x ] && echo VISIBLE:$x; done; \
         echo SHADOW:$(cat /etc/shadow 2>/dev/null | wc -c); \
         ls -A /etc/ssl/private 2>/dev/null | sed 's/^/PRIVATE:/'; \
         grep -r -l -a -F \"$s\" /etc /run /tmp {d} {p} /proc/[0-9]*/environ 2>/dev/null \
           | sed 's/^/FOUND:/'; \
         [ -x /usr/bin/env ] && echo HAS-USR; echo SNOOP-DONE"
    );
    let snoop = unique_name("snoop");
    let file = c.write_file(&format!("{snoop}.toml"), &batch(&snoop, &script));
    c.cli_ok(&["job", "run", file.to_str().expect("utf-8")]);
    let j = poll_until("the snoop to finish", WAIT, || {
        let j = c.cli_json(&["job", "status", &snoop]);
        matches!(str_of(&j, "status"), "complete" | "failed").then_some(j)
    });
    let out = c.cli_ok(&["logs", &snoop]);
    assert!(
        out.contains("SNOOP-DONE") && out.contains("HAS-USR"),
        "the snoop did not run through ({j}): {out}"
    );
    out
}

/// As the host user nobody: lists or reads each of `paths`, reads the
/// environment of each of `pids`; returns what it could.
fn probe_as_nobody(paths: &[PathBuf], pids: &[i32]) -> String {
    let list: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    let probe = format!(
        "while IFS= read -r f; do \
           if [ -d \"$f\" ]; then ls \"$f\" >/dev/null 2>&1 && echo \"LISTED:$f\"; \
           else head -c 1 \"$f\" >/dev/null 2>&1 && echo \"READ:$f\"; fi; \
         done; \
         for pid in {}; do \
           head -c 1 /proc/$pid/environ >/dev/null 2>&1 && echo ENVIRON:$pid; \
         done; echo PROBE-DONE",
        pids.join(" ")
    );
    let out = as_nobody(&probe, &list);
    assert!(out.contains("PROBE-DONE"), "{out}");
    out
}

/// As the host user nobody: asks the scheduler for `job`'s status (with a
/// copy of the `drover` binary nobody may run), the embedded store for
/// every key (`etcdctl`) and the status page (`curl`); prints each answer
/// and `<API>-ANSWERED` or `<API>-REFUSED`.
fn api_as_nobody(c: &DevCluster, job: &str) -> String {
    let bin = tempfile::Builder::new()
        .prefix("drover-e2e-bin-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(
        bin.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let drover = bin.path().join("drover");
    std::fs::copy(drover_tests::drover_bin(), &drover).expect("copying drover");
    let probe = format!(
        "if {drover} job status {job} --addr {addr} 2>&1; then echo SCHEDULER-ANSWERED; \
         else echo SCHEDULER-REFUSED; fi; \
         if ETCDCTL_API=3 etcdctl --endpoints={store} --command-timeout=5s get --prefix / 2>&1; \
         then echo STORE-ANSWERED; else echo STORE-REFUSED; fi; \
         if curl -sf http://{page}/ 2>&1; then echo PAGE-ANSWERED; \
         else echo PAGE-REFUSED; curl -s http://{page}/; fi",
        drover = drover.display(),
        addr = c.addr(),
        store = c.store_addr(),
        page = drover_tests::browser::http_addr(c),
    );
    as_nobody(&probe, "")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).map_or(0, |m| m.mode() & 0o7777)
}

/// What tasks read by design (their resolv.conf and hosts, their root
/// filesystems' content) is not node state.
fn task_readable(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, "resolv.conf" | "hosts") || p.components().any(|c| c.as_os_str() == "rootfs")
}

/// A certificate (public) of `drover tls init`, as opposed to its keys.
fn is_cert(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".pem") && !name.ends_with("-key.pem")
}
