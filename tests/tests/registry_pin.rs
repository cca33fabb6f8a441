//! End-to-end: a registry image's tag is resolved once per deployment.
//! The same loopback `docker-registry` (TLS, basic auth) and busybox
//! layouts as `registry_pull.rs` ([`drover_tests::registry`]); a service
//! whose task prints its image's `/marker` and sleeps. After the tag is
//! moved on the registry, a scale-up, a restart and a replacement of the
//! same deployment still run the first digest; a new deployment (a job
//! version that changes the task, or a stopped job run again) resolves
//! the tag anew; an instance running another digest than its
//! deployment's pin (what a tag moved while the first instances started
//! leaves, staged) is restarted on the pin. Build the binary first:
//! `cargo build -p drover-cli`.

use std::path::{Path, PathBuf};

use drover_tests::checks::{arr, int_of, str_of, WAIT};
use drover_tests::registry::{write_layout, Layer, TestRegistry};
use drover_tests::{poll_until, unique_name, DevCluster};
use serde_json::Value;

/// The store prefix of the deployments' pins.
const PINS: &str = "/drover/image-pins/";

/// A registry with layouts `a`, `b` and `c` (a shared busybox base plus
/// a `/marker` layer each) built but not pushed, and a `drover dev` that
/// may pull `<registry>/drover/`.
struct Setup {
    work: tempfile::TempDir,
    reg: TestRegistry,
    c: DevCluster,
}

impl Setup {
    fn new() -> Setup {
        let work = tempfile::tempdir().expect("tempdir");
        let reg = TestRegistry::start().expect("registry");
        let base = Layer::busybox(work.path(), &["sh", "cat", "echo", "sleep"]).expect("busybox");
        for m in ["a", "b", "c"] {
            let marker = Layer::marker(work.path(), m, m).expect("marker layer");
            write_layout(&work.path().join(format!("layout-{m}")), &[&base, &marker])
                .expect("layout");
        }
        let c = cluster(&reg, work.path());
        Setup { work, reg, c }
    }

    /// Pushes layout `marker` as `repo:v1`; returns the reference pinned
    /// to the digest the tag now names.
    fn tag(&self, repo: &str, marker: &str) -> String {
        let layout = self.work.path().join(format!("layout-{marker}"));
        let digest = self
            .reg
            .push(&layout, &format!("{repo}:v1"), false)
            .expect("push");
        format!("{}/{repo}@{digest}", self.reg.addr())
    }

    /// A service of `count` instances of `<registry>/<repo>:v1` that
    /// prints its `/marker` at each start; `deploy` goes into its
    /// environment (a new value is a new deployment).
    fn service(&self, name: &str, repo: &str, count: u32, deploy: &str) -> PathBuf {
        self.c.write_file(
            &format!("{name}.toml"),
            &format!(
                r#"name = "{name}"
kind = "service"
[[group]]
name = "main"
count = {count}
restart = {{ attempts = 1, delay_ms = 200 }}
reschedule = {{ delay_ms = 300, max_delay_ms = 1200, attempts = 4, interval_ms = 3600000 }}
[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "cat /marker; echo; exec sleep 3600"]
env = {{ DEPLOY = "{deploy}" }}
kill_timeout_ms = 200
resources = {{ cpu_millis = 20, memory_mb = 16 }}
rootfs = {{ type = "oci", image = "{}/{repo}:v1" }}
"#,
                self.reg.addr()
            ),
        )
    }

    fn run(&self, file: &Path) {
        self.c
            .cli_ok(&["job", "run", "--detach", file.to_str().expect("utf-8 path")]);
    }

    /// The pins recorded in the store.
    fn pins(&self) -> Vec<String> {
        self.c
            .store_keys(PINS)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

/// A `drover dev` whose policy allows `<registry>/drover/` and trusts the
/// registry's CA and credentials.
fn cluster(reg: &TestRegistry, dir: &Path) -> DevCluster {
    reg.dev_cluster(dir, reg.addr(), "", &[]).0
}

/// The allocations the job wants running.
fn wanted(j: &Value) -> Vec<Value> {
    arr(&j["allocations"])
        .iter()
        .filter(|a| str_of(a, "desired") == "run")
        .cloned()
        .collect()
}

/// The first task's state (`Null` before the node reported any).
fn task(a: &Value) -> &Value {
    &a["tasks"][0]
}

/// `field` of the first task, empty when it is not there yet.
fn task_str<'a>(a: &'a Value, field: &str) -> &'a str {
    task(a)[field].as_str().unwrap_or_default()
}

/// What allocation `id`'s task printed: one marker line per start.
fn markers(c: &DevCluster, id: &str, want: usize) -> Vec<String> {
    // A task just started may not have written its marker yet: read again
    // until `want` lines are there (or the wait is over, then as it is).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = c
            .cli_ok(&["logs", id])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if lines.len() >= want || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Polls until `n` allocations of `name` are wanted, running, and pinned
/// to `pinned`; returns the job's status.
fn wait_pinned(c: &DevCluster, name: &str, n: usize, pinned: &str) -> Value {
    poll_until(
        &format!("{n} allocations of {name} running {pinned}"),
        WAIT * 3,
        || {
            let j = c.cli_json(&["job", "status", name]);
            let w = wanted(&j);
            let ok = w.len() == n
                && w.iter().all(|a| {
                    str_of(a, "status") == "running"
                        && task_str(a, "state") == "running"
                        && task_str(a, "image_digest") == pinned
                });
            ok.then_some(j)
        },
    )
}

/// SIGKILLs the running task of allocation `id` of job `name` (by its
/// host pid: a process this test's cluster started).
fn kill_task(c: &DevCluster, name: &str, id: &str) {
    let j = c.cli_json(&["job", "status", name]);
    let a = arr(&j["allocations"])
        .iter()
        .find(|a| str_of(a, "id") == id)
        .expect("the allocation")
        .clone();
    let pid = i32::try_from(int_of(task(&a), "pid")).expect("pid");
    assert!(pid > 0, "task not running: {a}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[test]
fn a_moved_tag_leaves_the_deployment_on_its_first_digest() {
    let s = Setup::new();
    let c = &s.c;
    let first = s.tag("drover/pinned", "a");
    let name = unique_name("pinned");
    let file = s.service(&name, "drover/pinned", 2, "1");
    s.run(&file);
    wait_pinned(c, &name, 2, &first);
    poll_until("the deployment's pin to be recorded", WAIT, || {
        (s.pins().len() == 1).then_some(())
    });

    // The tag moves on the registry.
    let moved = s.tag("drover/pinned", "b");
    assert_ne!(moved, first, "the tag did not move");

    // A scale-up (a new job version with the same instances): the new
    // instance runs the deployment's digest, not the moved tag.
    s.run(&s.service(&name, "drover/pinned", 3, "1"));
    let j = wait_pinned(c, &name, 3, &first);
    let newest = wanted(&j)
        .into_iter()
        .max_by_key(|a| int_of(a, "created_unix_ms"))
        .expect("an allocation");
    let newest_id = str_of(&newest, "id").to_owned();
    assert_eq!(markers(c, &newest_id, 1), ["a"], "{newest}");
    let table = c.cli_ok(&["alloc", "status", &newest_id]);
    assert!(
        table.contains(&first),
        "alloc status shows no digest: {table}"
    );

    // A restart of a task: the same digest.
    let old = wanted(&j)
        .into_iter()
        .find(|a| str_of(a, "id") != newest_id)
        .expect("an older allocation");
    let old_id = str_of(&old, "id").to_owned();
    kill_task(c, &name, &old_id);
    poll_until("the killed task to run again", WAIT * 2, || {
        let j = c.cli_json(&["job", "status", &name]);
        let a = wanted(&j).into_iter().find(|a| str_of(a, "id") == old_id)?;
        let t = task(&a);
        (t["restarts"] == 1 && t["state"] == "running").then_some(())
    });
    wait_pinned(c, &name, 3, &first);
    assert_eq!(markers(c, &old_id, 2), ["a", "a"]);

    // A replacement (the task killed past its restarts, the allocation
    // rescheduled): a new allocation, a new task directory, the same
    // digest.
    kill_task(c, &name, &newest_id);
    poll_until("the newest task to run again", WAIT * 2, || {
        let j = c.cli_json(&["job", "status", &name]);
        let a = wanted(&j)
            .into_iter()
            .find(|a| str_of(a, "id") == newest_id)?;
        let t = task(&a);
        (t["restarts"] == 1 && t["state"] == "running").then_some(())
    });
    kill_task(c, &name, &newest_id);
    let running = poll_until("a replacement to run", WAIT * 3, || {
        let j = c.cli_json(&["job", "status", &name]);
        let running: Vec<Value> = wanted(&j)
            .into_iter()
            .filter(|a| task_str(a, "state") == "running")
            .collect();
        let replaced = running.len() == 3 && running.iter().all(|a| str_of(a, "id") != newest_id);
        replaced.then_some(running)
    });
    for a in &running {
        assert_eq!(str_of(task(a), "image_digest"), first, "{a}");
    }
    let replacement = running
        .into_iter()
        .max_by_key(|a| int_of(a, "created_unix_ms"))
        .expect("an allocation");
    assert_eq!(
        markers(c, str_of(&replacement, "id"), 1),
        ["a"],
        "{replacement}"
    );
    assert_eq!(s.pins().len(), 1, "{:?}", s.pins());
    c.cli_ok(&["job", "stop", &name]);
}

#[test]
fn a_new_deployment_resolves_the_moved_tag_again() {
    let s = Setup::new();
    let c = &s.c;
    let first = s.tag("drover/redeploy", "a");
    let name = unique_name("redeploy");
    s.run(&s.service(&name, "drover/redeploy", 2, "1"));
    wait_pinned(c, &name, 2, &first);
    poll_until("the deployment's pin to be recorded", WAIT, || {
        (s.pins().len() == 1).then_some(())
    });

    // A new job version that changes the task: a new deployment, which
    // runs what the tag names now.
    let moved = s.tag("drover/redeploy", "b");
    let file = s.service(&name, "drover/redeploy", 2, "2");
    s.run(&file);
    let j = wait_pinned(c, &name, 2, &moved);
    for a in wanted(&j) {
        assert_eq!(markers(c, str_of(&a, "id"), 1), ["b"], "{a}");
    }

    // Stopped and run again (the same spec): a new deployment too.
    c.cli_ok(&["job", "stop", &name]);
    poll_until("the stopped job's pins to be forgotten", WAIT, || {
        s.pins().is_empty().then_some(())
    });
    let again = s.tag("drover/redeploy", "c");
    s.run(&file);
    let j = wait_pinned(c, &name, 2, &again);
    for a in wanted(&j) {
        assert_eq!(markers(c, str_of(&a, "id"), 1), ["c"], "{a}");
    }
    c.cli_ok(&["job", "stop", &name]);
}

/// The race a deployment's first instances can run into, staged: one
/// instance runs a digest its deployment's pin does not name (instances
/// started side by side, the tag moved between their resolutions, and
/// another instance's report made the pin). The store's pin is rewritten
/// by hand to what that race leaves; a count-only change then sends the
/// node the assignments with the pin, and the agent restarts the
/// instance on the deployment's digest (not counted as a restart of its
/// policy, told as an event).
#[test]
fn an_instance_on_another_digest_than_its_deployments_pin_is_restarted_on_the_pin() {
    let s = Setup::new();
    let c = &s.c;
    let first = s.tag("drover/drift", "a");
    let name = unique_name("drift");
    s.run(&s.service(&name, "drover/drift", 1, "1"));
    let j = wait_pinned(c, &name, 1, &first);
    let id = str_of(&wanted(&j)[0], "id").to_owned();
    assert_eq!(markers(c, &id, 1), ["a"]);
    let key = poll_until("the deployment's pin to be recorded", WAIT, || {
        s.pins().into_iter().next()
    });

    // The tag moves, and the deployment's pin names the moved digest.
    let moved = s.tag("drover/drift", "b");
    assert_ne!(moved, first, "the tag did not move");
    let mut pin: Value =
        serde_json::from_slice(&c.store_get(&key).expect("the pin")).expect("a pin record");
    pin["pinned"] = Value::String(moved.clone());
    c.store_put(&key, serde_json::to_vec(&pin).expect("json"));

    s.run(&s.service(&name, "drover/drift", 2, "1"));
    let j = wait_pinned(c, &name, 2, &moved);
    let a = wanted(&j)
        .into_iter()
        .find(|a| str_of(a, "id") == id)
        .expect("the first allocation, kept");
    assert_eq!(markers(c, &id, 2), ["a", "b"], "{a}");
    assert_eq!(int_of(task(&a), "restarts"), 0, "{a}");
    let status = c.cli_ok(&["alloc", "status", &id]);
    assert!(
        status.contains("restarting on the deployment's image") && status.contains(&first),
        "no event tells the restart: {status}"
    );
    c.cli_ok(&["job", "stop", &name]);
}
