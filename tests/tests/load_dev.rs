//! Bounded load on a `drover dev` cluster (README, "Bounded load"): a
//! burst of status calls is answered while a probe still answers; a
//! hundred `drover logs -f` followers of one task all stream and the next
//! one beyond the node's `[sessions] max_log_streams` is refused naming
//! it; a client that opens a follow stream of a task writing fast and
//! never reads does not grow the memory of the process that holds the
//! scheduler and the agent (one process in `drover dev`); a client past
//! `--max-streams-per-client`, and an exec session past the node's
//! `[sessions] max_exec_sessions`, are refused naming the setting.
//!
//! Timings are printed, never asserted beyond generous deadlines; memory
//! is `VmRSS` of the `drover dev` process, sampled while the load runs.
//!
//! Needs root and the binary: `cargo build -p drover-cli && cargo test -p
//! drover-tests --test load_dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use drover_proto::v1 as pb;
use drover_tests::checks::{service, str_of, wait_running, WAIT};
use drover_tests::{unique_name, DevCluster};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Calls of the burst of [`a_thousand_status_calls_are_answered_and_a_probe_too`].
const CALLS: usize = 1_000;
/// Log followers of [`a_hundred_log_followers_stream_and_the_next_is_refused`].
const FOLLOWERS: usize = 100;
/// Connections the load is spread over (a few clients).
const CHANNELS: usize = 4;
/// How long a probe may take to be answered at all under load.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on the resident memory of the `drover dev` process (scheduler,
/// agent and embedded store together) under these loads. Idle it holds
/// ~30-60 MiB; every relay queue is bounded (8 MiB per log stream at
/// most, and none fills while its reader reads), so a burst of a thousand
/// small calls or a hundred followers of a task writing a line every
/// 100 ms need a few MiB more. 512 MiB is far above that and far below
/// what unbounded buffering of the loads here reaches.
const RSS_BOUND_KIB: u64 = 512 * 1024;
/// Bound on the growth of that memory while a reader that never reads
/// follows a task that writes [`FLOOD_MIB`] or more: the scheduler queues
/// at most 8 MiB for a reader (then ends its stream), HTTP/2 windows
/// ~1-2 MiB more, and the agent's upward queue 64 chunks of 32 KiB.
const GROWTH_BOUND_KIB: u64 = 64 * 1024;
/// What the flooding task of [`a_reader_that_never_reads_cannot_grow_memory`]
/// writes at least while it is watched, in MiB: well above the growth
/// bound, so that buffering it would fail the test.
const FLOOD_MIB: u64 = 96;

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Samples the RSS of `pid` every 50 ms until dropped; `peak()` is the
/// largest seen.
struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
}

impl RssSampler {
    fn start(pid: i32) -> RssSampler {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid)));
        let stop = tokio_util::sync::CancellationToken::new();
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.is_cancelled() {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        p.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` connections to the cluster's scheduler.
async fn channels(url: &str, n: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ch = tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap();
        out.push(ch);
    }
    out
}

/// Lists the nodes on a connection of its own; returns how long the
/// answer took, or panics when none comes within [`PROBE_DEADLINE`].
async fn probe(url: &str) -> Duration {
    let ch = channels(url, 1).await.remove(0);
    let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
    let t = Instant::now();
    let answer = tokio::time::timeout(PROBE_DEADLINE, nodes.list(pb::ListNodesRequest {}))
        .await
        .unwrap_or_else(|_| panic!("the probe got no answer within {PROBE_DEADLINE:?}"));
    let listed = answer.expect("the probe was refused").into_inner();
    assert_eq!(listed.nodes.len(), 1, "the probe's answer: {listed:?}");
    t.elapsed()
}

/// Runs a service job printing a line every 100 ms; returns its
/// allocation's id.
fn ticking_job(c: &DevCluster) -> String {
    let job = unique_name("load-tick");
    let text = service(&job, 1, "while :; do echo tick; sleep 0.1; done");
    let file = c.write_file(&format!("{job}.toml"), &text);
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(c, &job, 1);
    str_of(&status["allocations"][0], "id").to_owned()
}

/// Opens a follow stream of `alloc` and waits for its first data; the
/// stream, or the status that ended it first.
async fn follow(
    ch: Channel,
    alloc: String,
) -> Result<tonic::Streaming<pb::LogChunk>, tonic::Status> {
    let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch);
    let mut stream = allocs
        .logs(pb::LogsRequest {
            alloc_id: alloc,
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Err(_) => panic!("a follow stream got nothing within {WAIT:?}"),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => panic!("a follow stream of a running task ended"),
            Ok(Ok(Some(chunk))) if !chunk.data.is_empty() => return Ok(stream),
            Ok(Ok(Some(_))) => {}
        }
    }
}

#[test]
fn a_thousand_status_calls_are_answered_and_a_probe_too() {
    let c = DevCluster::start();
    let alloc = ticking_job(&c);
    let (url, pid) = (c.url(), c.pid());
    runtime().block_on(async move {
        let chans = channels(&url, CHANNELS).await;
        let sampler = RssSampler::start(pid);
        let before = rss_kib(pid);
        let started = Instant::now();
        let mut calls = JoinSet::new();
        for i in 0..CALLS {
            let ch = chans[i % CHANNELS].clone();
            let alloc = alloc.clone();
            calls.spawn(async move {
                let t = Instant::now();
                match i % 3 {
                    0 => {
                        let mut jobs = pb::job_service_client::JobServiceClient::new(ch);
                        jobs.list(pb::ListJobsRequest::default()).await.map(drop)
                    }
                    1 => {
                        let mut nodes = pb::node_service_client::NodeServiceClient::new(ch);
                        nodes.list(pb::ListNodesRequest {}).await.map(drop)
                    }
                    _ => {
                        let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch);
                        allocs
                            .get(pb::GetAllocRequest { id: alloc })
                            .await
                            .map(drop)
                    }
                }
                .map(|()| t.elapsed())
            });
        }
        // While the burst is in flight.
        let probed = probe(&url).await;
        let mut latencies = Vec::new();
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                Ok(took) => latencies.push(took),
                Err(status) => panic!("a status call of the burst failed: {status:?}"),
            }
        }
        let total = started.elapsed();
        latencies.sort();
        let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
        let peak = sampler.peak();
        eprintln!(
            "{CALLS} status calls over {CHANNELS} connections: all answered in {total:?} \
             (p50 {:?}, p95 {:?}, max {:?}); probe during the burst: {probed:?}; \
             RSS {} KiB before, peak {} KiB",
            pct(50),
            pct(95),
            pct(100),
            before,
            peak
        );
        assert_eq!(latencies.len(), CALLS);
        assert!(
            peak < RSS_BOUND_KIB,
            "drover dev's RSS peaked at {peak} KiB during the burst, over {RSS_BOUND_KIB} KiB"
        );
    });
}

#[test]
fn a_hundred_log_followers_stream_and_the_next_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("[sessions]\nmax_log_streams = {FOLLOWERS}\n"),
    )
    .unwrap();
    let c = DevCluster::start_with(&["--policy", policy.to_str().unwrap()]);
    let alloc = ticking_job(&c);
    let (url, pid) = (c.url(), c.pid());
    runtime().block_on(async move {
        let chans = channels(&url, CHANNELS).await;
        let sampler = RssSampler::start(pid);
        let started = Instant::now();
        let mut opening = JoinSet::new();
        for i in 0..FOLLOWERS {
            opening.spawn(follow(chans[i % CHANNELS].clone(), alloc.clone()));
        }
        let mut streams = Vec::new();
        while let Some(opened) = opening.join_next().await {
            match opened.unwrap() {
                Ok(s) => streams.push(s),
                Err(status) => panic!("follower {} was refused: {status:?}", streams.len()),
            }
        }
        let opened_in = started.elapsed();
        // Every follower keeps streaming: each gets more ticks.
        let mut reading = JoinSet::new();
        for mut s in streams.drain(..) {
            reading.spawn(async move {
                let more = tokio::time::timeout(WAIT, s.message()).await;
                assert!(
                    matches!(more, Ok(Ok(Some(_)))),
                    "a follower stopped streaming: {more:?}"
                );
                s
            });
        }
        while let Some(s) = reading.join_next().await {
            streams.push(s.unwrap());
        }
        let probed = probe(&url).await;
        // One more than the node serves.
        let refused = follow(chans[0].clone(), alloc.clone())
            .await
            .map(drop)
            .expect_err("a follower beyond the node's limit was served");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        let limit = format!("{FOLLOWERS} log streams");
        for needle in [limit.as_str(), "max_log_streams"] {
            assert!(
                refused.message().contains(needle),
                "the refusal does not say {needle:?}: {refused:?}"
            );
        }
        // A follower that goes frees its slot on the node.
        drop(streams.pop());
        let deadline = Instant::now() + WAIT;
        let replaced = loop {
            match follow(chans[1].clone(), alloc.clone()).await {
                Ok(s) => break s,
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "no slot came free: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        };
        let peak = sampler.peak();
        eprintln!(
            "{FOLLOWERS} followers of one task over {CHANNELS} connections streaming after \
             {opened_in:?}; probe {probed:?}; RSS peak {peak} KiB"
        );
        assert!(
            peak < RSS_BOUND_KIB,
            "drover dev's RSS peaked at {peak} KiB with {FOLLOWERS} followers, over {RSS_BOUND_KIB} KiB"
        );
        drop(replaced);
        drop(streams);
    });
}

#[test]
fn a_reader_that_never_reads_cannot_grow_memory() {
    let c = DevCluster::start();
    let job = unique_name("load-flood");
    // About 8 MiB a second, each MiB counted on stderr; rotated so that
    // the disk stays bounded.
    let script = "i=0; while :; do head -c 4194304 /dev/zero | tr '\\0' x; \
                  i=$((i+4)); echo $i >&2; sleep 0.5; done";
    let text = service(&job, 1, script).replace(
        "kill_timeout_ms = 200",
        "kill_timeout_ms = 200\nlogs = { max_size_mb = 32, max_files = 2 }",
    );
    let file = c.write_file(&format!("{job}.toml"), &text);
    c.cli_json(&["job", "run", file.to_str().unwrap()]);
    let status = wait_running(&c, &job, 1);
    let alloc = str_of(&status["allocations"][0], "id").to_owned();
    let stderr_log = c
        .task_dirs()
        .into_iter()
        .find(|d| d.to_string_lossy().contains(&alloc))
        .expect("task directory")
        .join("stderr.log");
    let written_mib = move || -> u64 {
        std::fs::read_to_string(&stderr_log)
            .unwrap_or_default()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    };
    let (url, pid) = (c.url(), c.pid());
    runtime().block_on(async move {
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch);
        let before = rss_kib(pid);
        let sampler = RssSampler::start(pid);
        let from = written_mib();
        let stream = allocs
            .logs(pb::LogsRequest {
                alloc_id: alloc,
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Never read; the connection stays open and driven.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(40);
        while written_mib().saturating_sub(from) < FLOOD_MIB {
            assert!(
                Instant::now() < deadline,
                "the task wrote only {} MiB in 40 s",
                written_mib().saturating_sub(from)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let probed = probe(&url).await;
        let peak = sampler.peak();
        let growth = peak.saturating_sub(before);
        eprintln!(
            "a reader that never reads, while the task wrote {} MiB in {:?}: RSS {before} KiB \
             before, peak {peak} KiB (growth {growth} KiB); probe {probed:?}",
            written_mib().saturating_sub(from),
            started.elapsed()
        );
        assert!(
            growth < GROWTH_BOUND_KIB,
            "drover dev's RSS grew by {growth} KiB for a reader that never reads, over {GROWTH_BOUND_KIB} KiB"
        );
        drop(stream);
    });
}

#[test]
fn a_client_past_its_stream_limit_is_refused_naming_the_flag() {
    let c = DevCluster::start_with(&["--max-streams-per-client", "3"]);
    let alloc = ticking_job(&c);
    let url = c.url();
    runtime().block_on(async move {
        let chans = channels(&url, 2).await;
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(follow(chans[i % 2].clone(), alloc.clone()).await.unwrap());
        }
        let mut allocs = pb::alloc_service_client::AllocServiceClient::new(chans[1].clone());
        let refused = allocs
            .logs(pb::LogsRequest {
                alloc_id: alloc.clone(),
                follow: true,
                ..Default::default()
            })
            .await
            .map(drop)
            .expect_err("a fourth stream of a client limited to three was served");
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("--max-streams-per-client")
                && refused.message().contains("holds 3 open streams"),
            "{refused:?}"
        );
        // Unary calls are not streams: still answered.
        probe(&url).await;
        drop(held.pop());
        let deadline = Instant::now() + WAIT;
        loop {
            match follow(chans[0].clone(), alloc.clone()).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "no stream came free: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    });
}

/// Starts an exec session of `command` in `alloc`; its output stream once
/// the scheduler has passed the start to the node.
async fn exec_session(
    ch: Channel,
    alloc: &str,
    command: &[&str],
) -> (
    tonic::Streaming<pb::ExecResponse>,
    tokio::sync::mpsc::Sender<pb::ExecRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ExecRequest {
        start: Some(pb::ExecStart {
            alloc_id: alloc.to_owned(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut allocs = pb::alloc_service_client::AllocServiceClient::new(ch);
    let out = allocs
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (out, tx)
}

#[test]
fn an_exec_session_beyond_the_node_limit_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[sessions]\nmax_exec_sessions = 2\n").unwrap();
    let c = DevCluster::start_with(&["--policy", policy.to_str().unwrap()]);
    let alloc = ticking_job(&c);
    let url = c.url();
    runtime().block_on(async move {
        let ch = channels(&url, 1).await.remove(0);
        // Two sessions the node runs; the scheduler passed each start on
        // before answering, in order, so the third start comes after them.
        let _first = exec_session(ch.clone(), &alloc, &["sleep", "30"]).await;
        let _second = exec_session(ch.clone(), &alloc, &["sleep", "30"]).await;
        let (mut third, _input) = exec_session(ch.clone(), &alloc, &["true"]).await;
        let refused = tokio::time::timeout(WAIT, third.message())
            .await
            .expect("no answer to a third exec session")
            .map(drop)
            .expect_err("a third exec session of a node limited to two was run");
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("2 exec sessions")
                && refused.message().contains("max_exec_sessions"),
            "{refused:?}"
        );
    });
}
