//! The leader `drover scheduler` SIGKILLed under load, end to end: two
//! replicas in the control namespace of a [`MultiHost`] with one agent host
//! given both addresses (as is the CLI).

use super::*;

/// The leader lease's TTL in these tests (`--leader-ttl-ms`): takeover in
/// about two seconds instead of the default five.
const TTL_MS: &str = "2000";
/// Generous bound on a takeover and the agent's return.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);
/// Bound on allocations settling after a takeover.
const SETTLE_WAIT: Duration = Duration::from_secs(120);

fn two_schedulers() -> MultiHost {
    MultiHost::start_with(Options {
        hosts: 1,
        schedulers: 2,
        scheduler_args: vec![
            "--leader-ttl-ms".into(),
            TTL_MS.into(),
            "--heartbeat-ms".into(),
            "500".into(),
        ],
        ..Options::default()
    })
}

/// The leader, once exactly one replica leads.
fn wait_leader(mh: &MultiHost) -> usize {
    poll_until("one leading scheduler", TAKEOVER_WAIT, || mh.leader())
}

/// A small service job: `count` instances of a sleeping task.
fn service(name: &str, count: u32, version: &str, update: &str) -> String {
    format!(
        r#"name = "{name}"
[[group]]
name = "g"
count = {count}
network = "none"
{update}
[[group.task]]
name = "t"
command = ["/bin/sh", "-c", "exec sleep 3600"]
env = {{ VERSION = "{version}" }}
kill_timeout_ms = 200
resources = {{ cpu_millis = 10, memory_mb = 8 }}
"#
    )
}

/// Every allocation, from `alloc list -o json`.
fn allocs(mh: &MultiHost) -> Vec<Value> {
    arr(&mh.cli_json(&["alloc", "list"])).clone()
}

/// The live allocations (desired run) per instance `(job, group, index)`.
fn live_per_instance(all: &[Value]) -> BTreeMap<(String, String, u64), Vec<Value>> {
    let mut out: BTreeMap<(String, String, u64), Vec<Value>> = BTreeMap::new();
    for a in all.iter().filter(|a| str_of(a, "desired") == "run") {
        let k = (
            str_of(a, "job").to_string(),
            str_of(a, "group").to_string(),
            a["index"].as_u64().unwrap(),
        );
        out.entry(k).or_default().push(a.clone());
    }
    out
}

/// Kills the leader; returns how long until the other replica led, and
/// until the agent's node was ready again under it.
fn kill_leader(mh: &mut MultiHost, leader: usize) -> (Duration, Duration) {
    let other = 1 - leader;
    let node = mh.host(0).node_id.clone();
    let seen_before = mh.nodes()[&node]["last_seen_unix_ms"].as_i64().unwrap();
    let killed = Instant::now();
    mh.kill_scheduler(leader);
    poll_until("the other replica to lead", TAKEOVER_WAIT, || {
        (mh.ask_scheduler(other) == Answer::Leader).then_some(())
    });
    let takeover = killed.elapsed();
    poll_until(
        "the agent to register with the new leader",
        TAKEOVER_WAIT,
        || {
            let n = mh.nodes().remove(&node)?;
            (n["status"] == "ready" && n["last_seen_unix_ms"].as_i64()? > seen_before).then_some(())
        },
    );
    (takeover, killed.elapsed())
}

/// The ids of job `job`'s running allocations.
fn running_ids(all: &[Value], job: &str) -> BTreeSet<String> {
    all.iter()
        .filter(|a| str_of(a, "job") == job && str_of(a, "status") == "running")
        .map(|a| str_of(a, "id").to_string())
        .collect()
}

/// Submits `jobs` one after the other (`job run --detach`) from a thread
/// and SIGKILLs replica `leader` once 10 are sent. Returns the jobs
/// acknowledged, how long after the kill the other replica led, and when
/// the burst was done.
fn burst_and_kill(
    mh: &MultiHost,
    leader: usize,
    jobs: &[(String, std::path::PathBuf)],
) -> (Vec<String>, Duration, Duration) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (sent, acked) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
    let (takeover, done) = std::thread::scope(|s| {
        let burst = s.spawn(|| {
            for (name, file) in jobs {
                let out = mh.cli(&["job", "run", "--detach", file.to_str().unwrap()]);
                sent.fetch_add(1, Ordering::SeqCst);
                if out.status.success() {
                    acked.lock().unwrap().push(name.clone());
                } else {
                    println!(
                        "{name} not acknowledged: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        });
        poll_until("10 submissions sent", TAKEOVER_WAIT, || {
            (sent.load(Ordering::SeqCst) >= 10).then_some(())
        });
        // The harness is shared with the burst: kill by pid (reaped later).
        let pid = mh.scheduler_pid(leader).unwrap();
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        poll_until("the other replica to lead", TAKEOVER_WAIT, || {
            (mh.ask_scheduler(1 - leader) == Answer::Leader).then_some(())
        });
        let takeover = killed.elapsed();
        burst.join().unwrap();
        (takeover, killed.elapsed())
    });
    (acked.into_inner().unwrap(), takeover, done)
}

#[test]
fn leader_killed_during_a_burst_of_submissions() {
    let mut mh = two_schedulers();
    let leader = wait_leader(&mh);
    let follower = 1 - leader;
    let leader_addr = mh.scheduler_addr(leader);
    assert_eq!(
        mh.ask_scheduler(follower),
        Answer::Follower {
            message: format!("not the leader; the leader is at {leader_addr}"),
            leader: Some(leader_addr.clone()),
        }
    );

    // A service placed before the burst must keep its allocations.
    let steady = unique_name("steady");
    let file = mh.write_file("steady.toml", &service(&steady, 2, "1", ""));
    mh.cli_ok(&["job", "run", file.to_str().unwrap()]);
    let before = running_ids(&allocs(&mh), &steady);
    assert_eq!(before.len(), 2);

    const BURST: usize = 50;
    let prefix = unique_name("burst");
    let files: Vec<(String, std::path::PathBuf)> = (0..BURST)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let file = mh.write_file(&format!("{name}.toml"), &service(&name, 1, "1", ""));
            (name, file)
        })
        .collect();
    let (acked, takeover, done) = burst_and_kill(&mh, leader, &files);
    mh.kill_scheduler(leader); // reaps it
    println!(
        "leader SIGKILLed during a burst of {BURST} submissions: takeover after {takeover:?} \
         (leader TTL {TTL_MS} ms); burst done {done:?} after the kill; {} of {BURST} acknowledged",
        acked.len()
    );
    assert!(
        acked.len() >= BURST - 5,
        "most submissions must be acknowledged: {}",
        acked.len()
    );

    // Every acknowledged job is there with exactly one live allocation per
    // instance, running; no instance anywhere has two.
    let settled = poll_until("every acknowledged job running once", SETTLE_WAIT, || {
        let all = allocs(&mh);
        let live = live_per_instance(&all);
        let running = |job: &str| {
            live.get(&(job.to_string(), "g".to_string(), 0))
                .is_some_and(|v| v.len() == 1 && str_of(&v[0], "status") == "running")
        };
        (acked.iter().all(|j| running(j)) && running(&steady)).then_some(all)
    });
    let live = live_per_instance(&settled);
    let doubled: Vec<_> = live.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "instances with two live allocations: {doubled:?}"
    );
    for name in &acked {
        let job = mh.cli_json(&["job", "status", name]);
        assert_eq!(job["name"], name.as_str(), "acknowledged job {name} lost");
    }
    // The agent kept the tasks it ran before the kill.
    assert_eq!(
        running_ids(&settled, &steady),
        before,
        "allocations placed before the kill were replaced"
    );
    let node = mh.host(0).node_id.clone();
    assert_eq!(mh.nodes()[&node]["status"], "ready");
}

#[test]
fn leader_killed_during_a_rolling_update() {
    let mut mh = two_schedulers();
    let leader = wait_leader(&mh);
    let name = unique_name("roll");
    let update = "update = { max_parallel = 1, min_healthy_time_ms = 1500, \
        healthy_deadline_ms = 60000, progress_deadline_ms = 120000 }";
    let v1 = mh.write_file("v1.toml", &service(&name, 4, "1", update));
    mh.cli_ok(&["job", "run", v1.to_str().unwrap()]);
    let v2 = mh.write_file("v2.toml", &service(&name, 4, "2", update));
    mh.cli_ok(&["job", "run", "--detach", v2.to_str().unwrap()]);
    // Kill the leader once the update has replaced at least one instance,
    // and before it is done.
    poll_until("the rolling update under way", TAKEOVER_WAIT, || {
        let d = mh.cli_json(&["deployment", "status", &name]);
        let all = allocs(&mh);
        let new = all
            .iter()
            .filter(|a| str_of(a, "job") == name && a["job_version"] == 2)
            .count();
        (d["version"] == 2 && d["status"] == "running" && new >= 1).then_some(())
    });
    let (takeover, rejoined) = kill_leader(&mut mh, leader);
    println!(
        "leader SIGKILLed during a rolling update: takeover after {takeover:?} (leader TTL \
         {TTL_MS} ms), agent registered with the new leader after {rejoined:?}"
    );
    let d = poll_until(
        "the deployment to succeed under the new leader",
        SETTLE_WAIT,
        || {
            let d = mh.cli_json(&["deployment", "status", &name]);
            assert_ne!(d["status"], "failed", "the deployment failed: {d}");
            (d["status"] == "successful").then_some(d)
        },
    );
    assert_eq!(d["version"], 2);
    let all = allocs(&mh);
    let live = live_per_instance(&all);
    let mine: Vec<_> = live.iter().filter(|((j, _, _), _)| *j == name).collect();
    assert_eq!(mine.len(), 4, "4 instances live: {mine:?}");
    for ((_, _, index), v) in mine {
        assert_eq!(
            v.len(),
            1,
            "instance {index} has {} live allocations: {v:?}",
            v.len()
        );
        assert_eq!(
            v[0]["job_version"], 2,
            "instance {index} not updated: {v:?}"
        );
        assert_eq!(str_of(&v[0], "status"), "running");
    }
}
