//! The node fault suite (issue #14, points 2 and 6), on the multi-host
//! harness: an agent killed and restarted 20 times under a running
//! service, a whole host killed, and a host partitioned past the grace
//! period then healed. Each case prints how long recovery took; the only
//! time limits are generous deadlines for waiting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use drover_agent::net::Ipv4Net;
use drover_tests::hosts::Options;
use drover_tests::{dig, poll_until, MultiHost};
use serde_json::Value;

/// Generous deadline for anything to happen.
const WAIT: Duration = Duration::from_secs(90);
/// Heartbeat and grace of the scheduler in the failure cases: the
/// defaults the README argues for.
const HEARTBEAT_MS: &str = "1000";
const GRACE: Duration = Duration::from_secs(4);
/// The web servers' check interval: how long DNS may lag a change.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A web server, registered as `web` while its http check passes; its
/// page names its allocation.
const WEB_JOB: &str = r#"
name = "web"

[[group]]
name = "main"
count = 2

[[group.task]]
name = "httpd"
command = ["/bin/sh", "-c", '''
mkdir -p /tmp/www
echo "from $DROVER_ALLOC_ID" > /tmp/www/index.html
exec busybox httpd -f -p 8080 -h /tmp/www
''']
resources = { cpu_millis = 50, memory_mb = 32 }

[[group.service]]
name = "web"
port = 8080

[[group.service.check]]
type = "http"
path = "/"
interval_ms = 500
timeout_ms = 400
"#;

/// A service that writes one numbered line every 50 ms.
const TICKER_JOB: &str = r#"
name = "ticker"

[[group]]
name = "main"

[[group.task]]
name = "tick"
command = ["/bin/sh", "-c", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done']
resources = { cpu_millis = 50, memory_mb = 16 }
"#;

/// A batch task that exits with code 7 on SIGTERM; never restarted nor
/// rescheduled, so its exit code is its allocation's last word.
const EXITER_JOB: &str = r#"
name = "exiter"
kind = "batch"

[[group]]
name = "main"
restart = { attempts = 0 }
reschedule = { attempts = 0 }

[[group.task]]
name = "wait"
command = ["/bin/sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]
resources = { cpu_millis = 50, memory_mb = 16 }
"#;

fn scheduler_args() -> Vec<String> {
    vec![
        "--heartbeat-ms".into(),
        HEARTBEAT_MS.into(),
        "--node-grace-ms".into(),
        GRACE.as_millis().to_string(),
    ]
}

fn run_job(mh: &MultiHost, name: &str, text: &str) {
    let file = mh.write_file(&format!("{name}.toml"), text);
    mh.cli_ok(&[
        "job".as_ref(),
        "run".as_ref(),
        "--detach".as_ref(),
        file.as_os_str(),
    ]);
}

/// `alloc list --job JOB` as JSON.
fn allocs(mh: &MultiHost, job: &str) -> Vec<Value> {
    mh.cli_json(&["alloc", "list", "--job", job])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The node's `last_seen_unix_ms`, set at each registration.
fn last_seen(mh: &MultiHost, node_id: &str) -> i64 {
    mh.nodes()
        .get(node_id)
        .and_then(|n| n["last_seen_unix_ms"].as_i64())
        .unwrap_or(0)
}

/// Waits until host `i`'s node has registered after `before` and is ready.
fn wait_registered(mh: &MultiHost, i: usize, before: i64) {
    let id = mh.host(i).node_id.clone();
    poll_until(&format!("{id} to register again"), WAIT, || {
        let n = mh.nodes().remove(&id)?;
        (n["last_seen_unix_ms"].as_i64()? > before && n["status"] == "ready").then_some(())
    });
}

/// The first task of an allocation: (pid, restarts, exit code).
fn first_task(a: &Value) -> (i64, i64, Option<i64>) {
    let t = &a["tasks"][0];
    (
        t["pid"].as_i64().unwrap_or(0),
        t["restarts"].as_i64().unwrap_or(-1),
        t["exit_code"].as_i64(),
    )
}

/// The numbers of the `tick N` lines of `log`, which must run 1, 2, 3...
/// without a gap or repeat; returns the last.
fn ticks_without_gaps(log: &str) -> u64 {
    let mut last = 0;
    for n in log
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
    {
        assert_eq!(n, last + 1, "log line after `tick {last}` is `tick {n}`");
        last = n;
    }
    last
}

#[test]
fn an_agent_killed_and_restarted_20_times_restarts_nothing_and_loses_nothing() {
    let mut mh = MultiHost::start_with(Options {
        hosts: 1,
        scheduler_args: scheduler_args(),
        ..Options::default()
    });
    run_job(&mh, "ticker", TICKER_JOB);
    run_job(&mh, "exiter", EXITER_JOB);
    mh.running_with_ips("ticker", 1);
    mh.running_with_ips("exiter", 1);
    let ticker = allocs(&mh, "ticker").remove(0);
    let ticker_id = ticker["id"].as_str().unwrap().to_string();
    let (ticker_pid, _, _) = first_task(&ticker);
    let exiter = allocs(&mh, "exiter").remove(0);
    let exiter_id = exiter["id"].as_str().unwrap().to_string();
    let (exiter_pid, _, _) = first_task(&exiter);
    assert!(ticker_pid > 0 && exiter_pid > 0, "{ticker} {exiter}");

    let node = mh.host(0).node_id.clone();
    let ticks_before = ticks_without_gaps(&mh.cli_ok(&["logs", &ticker_id]));
    let mut took = Vec::new();
    for round in 0..20 {
        let before = last_seen(&mh, &node);
        let t0 = Instant::now();
        mh.kill_agent(0);
        if round == 10 {
            // While no agent watches, the batch task exits with code 7.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(exiter_pid).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("signalling the batch task");
            poll_until("the batch task to exit", WAIT, || {
                (!std::path::Path::new(&format!("/proc/{exiter_pid}")).exists()).then_some(())
            });
        }
        mh.start_agent(0);
        wait_registered(&mh, 0, before);
        took.push(t0.elapsed());
        // Paced so that the rounds span more than the grace period: a
        // sleeper left by an early round must not take the node down
        // during a later one.
        std::thread::sleep(Duration::from_millis(300));
    }
    let ms: Vec<u128> = took.iter().map(Duration::as_millis).collect();
    println!("agent kill -9 and restart x20: re-registered after (ms) {ms:?}");

    // The exit code that happened while the agent was down arrived.
    let t0 = Instant::now();
    let ended = poll_until("the batch allocation to fail with code 7", WAIT, || {
        let a = allocs(&mh, "exiter")
            .into_iter()
            .find(|a| a["id"] == exiter_id)?;
        (a["status"] == "failed").then_some(a)
    });
    println!(
        "exit code while the agent was down reported {} ms after the last restart",
        t0.elapsed().as_millis()
    );
    assert_eq!(first_task(&ended).2, Some(7), "{ended}");
    assert_eq!(
        allocs(&mh, "exiter").len(),
        1,
        "the batch task was replaced"
    );

    // The service ran on: the same allocation, the same process, never
    // restarted, and every line it wrote is in its log.
    let now = allocs(&mh, "ticker");
    assert_eq!(now.len(), 1, "the service was replaced: {now:?}");
    let a = &now[0];
    assert_eq!(a["id"], ticker_id.as_str());
    assert_eq!(a["status"], "running", "{a}");
    let (pid, restarts, _) = first_task(a);
    assert_eq!((pid, restarts), (ticker_pid, 0), "{a}");
    let last = ticks_without_gaps(&mh.cli_ok(&["logs", &ticker_id]));
    assert!(
        last > ticks_before,
        "no line logged during the restarts: {last} lines, {ticks_before} before"
    );
    println!(
        "ticker: {last} lines ({} written during the restarts), none lost, no restart",
        last - ticks_before
    );
    mh.cli_ok(&["job", "stop", "ticker"]);
}

/// Host `i`'s bridge address: its node DNS listens there.
fn bridge_of(mh: &MultiHost, i: usize) -> Ipv4Addr {
    let node = &mh.nodes()[&mh.host(i).node_id];
    let subnet: Ipv4Net = node["subnet"].as_str().unwrap().parse().unwrap();
    subnet.first_host().unwrap()
}

/// The A records of `web` as host `i`'s node DNS answers them.
fn web_answers(mh: &MultiHost, i: usize, bridge: Ipv4Addr) -> BTreeSet<Ipv4Addr> {
    let server = SocketAddr::from((bridge, 53));
    let text = mh
        .host(i)
        .netns()
        .run(|| {
            dig(
                server,
                &[
                    "+short",
                    "+time=1",
                    "+tries=1",
                    "A",
                    "web.service.drover.internal",
                ],
            )
        })
        .expect("entering the host namespace");
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The host index of node `id`.
fn index_of(mh: &MultiHost, id: &str) -> usize {
    mh.hosts().iter().position(|h| h.node_id == id).unwrap()
}

/// Starts 3 hosts and `web` (2 instances on 2 different hosts); returns
/// the harness, the host with an instance that will fail, a host with
/// the other instance, and the instances by node.
fn web_on_three_hosts() -> (MultiHost, usize, usize) {
    let mh = MultiHost::start_with(Options {
        hosts: 3,
        scheduler_args: scheduler_args(),
        ..Options::default()
    });
    let job = WEB_JOB.replace(
        "count = 2\n",
        "count = 2\nconstraint = [{ operator = \"distinct_hosts\" }]\n",
    );
    run_job(&mh, "web", &job);
    let web = mh.running_with_ips("web", 2);
    let mut hosts = web.keys().map(|n| index_of(&mh, n));
    let (victim, survivor) = (hosts.next().unwrap(), hosts.next().unwrap());
    (mh, victim, survivor)
}

#[test]
fn a_host_killed_has_its_instance_replaced_elsewhere_and_dns_updated() {
    let (mut mh, victim, survivor) = web_on_three_hosts();
    let bridge = bridge_of(&mh, survivor);
    let before = mh.running_with_ips("web", 2);
    let dead_ip = before[&mh.host(victim).node_id].1;
    poll_until("both instances in DNS", WAIT, || {
        (web_answers(&mh, survivor, bridge).len() == 2).then_some(())
    });

    let t0 = Instant::now();
    mh.kill_host(victim);
    let victim_id = mh.host(victim).node_id.clone();
    poll_until("the host's node to be down", WAIT, || {
        (mh.nodes()[&victim_id]["status"] == "down").then_some(())
    });
    let down = t0.elapsed();
    let after = poll_until("a replacement running on another host", WAIT, || {
        let now = mh.running_with_ips("web", 2);
        (!now.contains_key(&victim_id)).then_some(now)
    });
    let replaced = t0.elapsed();
    let want: BTreeSet<Ipv4Addr> = after.values().map(|(_, ip)| *ip).collect();
    assert!(!want.contains(&dead_ip));
    poll_until(
        "DNS to answer the replacement, not the dead copy",
        WAIT,
        || (web_answers(&mh, survivor, bridge) == want).then_some(()),
    );
    println!(
        "host killed (grace {} ms): node down after {} ms, replacement running after {} ms, \
         DNS updated after {} ms",
        GRACE.as_millis(),
        down.as_millis(),
        replaced.as_millis(),
        t0.elapsed().as_millis()
    );
    mh.cli_ok(&["job", "stop", "web"]);
}

/// When each answer set was first and last seen, polling DNS.
#[derive(Debug, Default)]
struct DnsWatch {
    /// Both the stale and the replacement address answered: first and
    /// last time seen.
    both: Option<(Instant, Instant)>,
    /// The stale address answered after the link came back (the returning
    /// host's DNS keeps its last records until the scheduler's snapshot).
    stale_after_heal: Option<Instant>,
}

/// What a fast poll of the returning node's status saw.
#[derive(Debug, Default)]
struct ReadyWatch {
    /// First seen `initializing`.
    initializing: Option<Instant>,
    /// First seen `ready`.
    ready: Option<Instant>,
    /// Seen `ready` while the stale task was alive (its `/proc` entry
    /// was there after the status was read): first time.
    ready_while_stale: Option<Instant>,
}

/// Sets its flag when dropped: the watcher ends even when an assertion
/// fails (a scope waits for its threads).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Polls node `node_id`'s status every 50 ms until `stop`, noting when it
/// was first `initializing` and `ready`, and whether it was ever `ready`
/// while task `pid` was still alive.
fn watch_ready(mh: &MultiHost, node_id: &str, pid: i64, stop: &AtomicBool) -> ReadyWatch {
    let mut w = ReadyWatch::default();
    while !stop.load(Ordering::Relaxed) {
        let status = mh.nodes().get(node_id).map(|n| n["status"].clone());
        // Checked after the status: alive now means alive when it was read
        // (a zombie, exited and not yet reaped, runs nothing).
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        let now = Instant::now();
        match status.as_ref().and_then(Value::as_str) {
            Some("initializing") => {
                w.initializing.get_or_insert(now);
            }
            Some("ready") => {
                w.ready.get_or_insert(now);
                if alive {
                    w.ready_while_stale.get_or_insert(now);
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    w
}

#[test]
fn a_partitioned_host_is_replaced_and_its_stale_copy_stopped_when_it_returns() {
    let (mh, victim, survivor) = web_on_three_hosts();
    let victim_id = mh.host(victim).node_id.clone();
    let bridge = bridge_of(&mh, survivor);
    let before = mh.running_with_ips("web", 2);
    let (stale_id, stale_ip) = before[&victim_id].clone();
    let stale_pid = first_task(
        &allocs(&mh, "web")
            .into_iter()
            .find(|a| a["id"] == stale_id.as_str())
            .unwrap(),
    )
    .0;

    // A blip shorter than the grace: nothing is replaced or restarted.
    let seen = last_seen(&mh, &victim_id);
    mh.set_host_link(victim, false);
    std::thread::sleep(Duration::from_millis(1000));
    mh.set_host_link(victim, true);
    std::thread::sleep(GRACE + Duration::from_secs(2));
    let now = mh.running_with_ips("web", 2);
    assert_eq!(now[&victim_id].0, stale_id, "replaced after a 1 s blip");
    assert_eq!(mh.nodes()[&victim_id]["status"], "ready");
    let a = allocs(&mh, "web")
        .into_iter()
        .find(|a| a["id"] == stale_id.as_str())
        .unwrap();
    assert_eq!(
        first_task(&a).0,
        stale_pid,
        "restarted after a 1 s blip: {a}"
    );
    println!(
        "1 s link blip: nothing replaced or restarted (node registered again: {})",
        last_seen(&mh, &victim_id) > seen
    );

    // Cut off past the grace: down, replaced elsewhere.
    let t0 = Instant::now();
    mh.set_host_link(victim, false);
    poll_until("the partitioned node to be down", WAIT, || {
        (mh.nodes()[&victim_id]["status"] == "down").then_some(())
    });
    let down = t0.elapsed();
    let after = poll_until("a replacement running on another host", WAIT, || {
        let now = mh.running_with_ips("web", 2);
        (!now.contains_key(&victim_id)).then_some(now)
    });
    let new_ip = after
        .values()
        .map(|(_, ip)| *ip)
        .find(|ip| *ip != before[&mh.host(survivor).node_id].1)
        .unwrap();
    let want: BTreeSet<Ipv4Addr> = after.values().map(|(_, ip)| *ip).collect();
    poll_until("DNS to answer the replacement", WAIT, || {
        (web_answers(&mh, survivor, bridge) == want).then_some(())
    });
    let replaced = t0.elapsed();
    println!(
        "partition (grace {} ms): node down after {} ms, replacement in DNS after {} ms",
        GRACE.as_millis(),
        down.as_millis(),
        replaced.as_millis()
    );
    // The partitioned copy still runs, cut off.
    assert!(std::path::Path::new(&format!("/proc/{stale_pid}")).exists());

    // Healed: the stale copy is stopped, and DNS (on a survivor and on the
    // returning host) never answers it next to the replacement.
    // The returning node is watched closely meanwhile: never ready while
    // the stale copy lives.
    let stop_watch = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_ready(&mh, &victim_id, stale_pid, &stop_watch));
        let _stop_on_failure = SetOnDrop(&stop_watch);
        let healed = Instant::now();
        mh.set_host_link(victim, true);
        let victim_bridge = bridge_of(&mh, victim);
        let mut watch = DnsWatch::default();
        let mut stopped_at = None;
        let deadline = healed + WAIT;
        loop {
            let now = Instant::now();
            assert!(now < deadline, "the stale copy was not stopped: {watch:?}");
            for (host, br) in [(survivor, bridge), (victim, victim_bridge)] {
                let got = web_answers(&mh, host, br);
                if got.contains(&stale_ip) {
                    watch.stale_after_heal.get_or_insert(now);
                    if got.contains(&new_ip) {
                        let first = watch.both.map_or(now, |(f, _)| f);
                        watch.both = Some((first, now));
                    }
                }
            }
            let gone = !std::path::Path::new(&format!("/proc/{stale_pid}")).exists();
            if gone && stopped_at.is_none() {
                stopped_at = Some(now);
            }
            let ready = mh.nodes()[&victim_id]["status"] == "ready";
            if stopped_at.is_some() && ready && now > healed + 2 * GRACE {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop_watch.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        let since = |t: Option<Instant>| t.map(|t| (t - healed).as_millis());
        println!(
        "returning node: initializing seen {:?} ms, ready seen {:?} ms after the heal; stale task gone {} ms after",
        since(seen.initializing),
        since(seen.ready),
        (stopped_at.unwrap() - healed).as_millis()
    );
        assert!(
        seen.ready_while_stale.is_none(),
        "the returning node was ready while its stale copy (pid {stale_pid}) still ran: {seen:?}\nscheduler log:\n{}",
            mh.scheduler_log(60)
    );
        let stale = allocs(&mh, "web")
            .into_iter()
            .find(|a| a["id"] == stale_id.as_str())
            .unwrap();
        assert_eq!(stale["desired"], "stop", "{stale}");
        let both_for = watch.both.map(|(f, l)| l - f);
        println!(
        "healed: stale copy stopped {} ms after the link came back; DNS answered stale and \
         replacement together for {:?} (check interval {} ms); stale answered after the heal (returning host, before its snapshot): {}",
        (stopped_at.unwrap() - healed).as_millis(),
        both_for,
        CHECK_INTERVAL.as_millis(),
        watch.stale_after_heal.is_some()
    );
        // Never both on a survivor or the returning host for longer than a
        // check interval; the survivor never got the stale address back.
        assert!(
            both_for.is_none_or(|d| d <= CHECK_INTERVAL),
            "stale and replacement answered together for {both_for:?}"
        );
        let survivor_now = web_answers(&mh, survivor, bridge);
        assert!(!survivor_now.contains(&stale_ip), "{survivor_now:?}");
        assert_eq!(mh.running_with_ips("web", 2).len(), 2);
    });
    mh.cli_ok(&["job", "stop", "web"]);
}

/// A task on every host whose copies stop on a node cut off for 2 s.
const CUT_OFF_JOB: &str = r#"
name = "cutoff"
kind = "system"

[[group]]
name = "main"
disconnect = { stop_after_ms = 2000 }

[[group.task]]
name = "app"
command = ["/bin/sh", "-c", "while :; do sleep 0.1; done"]
kill_timeout_ms = 200
resources = { cpu_millis = 50, memory_mb = 16 }
"#;

/// The pid of job `job`'s task on node `node_id`.
fn pid_on(mh: &MultiHost, job: &str, node_id: &str) -> i64 {
    let a = allocs(mh, job)
        .into_iter()
        .find(|a| a["node_id"] == node_id && a["status"] == "running")
        .unwrap();
    first_task(&a).0
}

#[test]
fn a_partitioned_node_stops_the_copies_whose_group_asks_for_it() {
    let mh = MultiHost::start_with(Options {
        hosts: 2,
        scheduler_args: scheduler_args(),
        ..Options::default()
    });
    run_job(&mh, "cutoff", CUT_OFF_JOB);
    run_job(
        &mh,
        "ticker",
        &TICKER_JOB.replace("name = \"ticker\"", "name = \"ticker\"\nkind = \"system\""),
    );
    mh.running_with_ips("cutoff", 2);
    mh.running_with_ips("ticker", 2);
    let victim_id = mh.host(1).node_id.clone();
    let (cut_pid, keep_pid) = (
        pid_on(&mh, "cutoff", &victim_id),
        pid_on(&mh, "ticker", &victim_id),
    );
    let alive = |pid: i64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(cut_pid) && alive(keep_pid));

    let t0 = Instant::now();
    mh.set_host_link(1, false);
    poll_until("the cut-off node to stop its copy", WAIT, || {
        (!alive(cut_pid)).then_some(())
    });
    let stopped = t0.elapsed();
    // The group without a policy runs on.
    assert!(
        alive(keep_pid),
        "the ticker without a disconnect policy stopped too"
    );
    println!(
        "partitioned node stopped its disconnect = {{ stop_after_ms = 2000 }} copy {} ms after \
         the link went down (keepalive notices within {} ms); the other group kept running",
        stopped.as_millis(),
        4000
    );
    mh.set_host_link(1, true);
    mh.wait_ready(2);
    // The copy on the host that stayed connected was never touched.
    let h0 = mh.host(0).node_id.clone();
    let a = allocs(&mh, "cutoff")
        .into_iter()
        .find(|a| a["node_id"] == h0.as_str())
        .unwrap();
    assert_eq!(a["status"], "running", "{a}");
    for job in ["cutoff", "ticker"] {
        mh.cli_ok(&["job", "stop", job]);
    }
}
