#!/usr/bin/env bash
# Resident memory of the long-running roles, on loopback (root):
#   - a `drover agent` idle, then with ALLOCS allocations running (default
#     100; each a host-rootfs `sleep` in its own namespaces and veth), and
#     the sum of their supervisors;
#   - the `drover scheduler` holding them, on Debian's etcd.
#   bench/memory/run.sh            # builds the release binary first
#   DROVER=path/to/drover ALLOCS=100 bench/memory/run.sh
# Everything it makes is removed on exit (job, tasks, bridge, netns, etcd).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
if [ -z "${DROVER:-}" ]; then
    cargo build --release -p drover-cli
    DROVER="$target/release/drover"
fi
ALLOCS="${ALLOCS:-100}"
work="$(mktemp -d /tmp/drover-mem.XXXXXX)"
bridge="drmem$$"
bridge="${bridge:0:15}"
pids=()

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Proportional set size: shared pages (the binary, libc) divided among the
# processes that map them.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

cleanup() {
    set +e
    if [ -n "${addr:-}" ]; then
        DROVER_ADDR="$addr" "$DROVER" job stop memory-bench --wait 60 >/dev/null 2>&1
    fi
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null
        wait "${pids[$i]}" 2>/dev/null
    done
    "$DROVER" agent --cleanup --data-dir "$work/agent" --bridge "$bridge" \
        --cgroup-parent "drover-mem-$$" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

client_port="$(free_port)"
peer_port="$(free_port)"
etcd --name mem --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "mem=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)

"$DROVER" scheduler --etcd "http://127.0.0.1:$client_port" --listen 127.0.0.1:0 \
    --addr-file "$work/scheduler.addr" --cluster-cidr 10.213.0.0/16 --log warn \
    >"$work/scheduler.log" 2>&1 &
scheduler_pid=$!
pids+=("$scheduler_pid")
for _ in $(seq 100); do [ -s "$work/scheduler.addr" ] && break; sleep 0.1; done
addr="$(cat "$work/scheduler.addr")"

"$DROVER" agent --scheduler "$addr" --data-dir "$work/agent" --bridge "$bridge" \
    --cgroup-parent "drover-mem-$$" --no-dns --cpu-millis 200000 --memory-mb 200000 \
    --log warn >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")

for _ in $(seq 100); do
    DROVER_ADDR="$addr" "$DROVER" node status 2>/dev/null | grep -q ready && break
    sleep 0.2
done
sleep 3
echo "agent idle: $(rss_kib "$agent_pid") KiB"
echo "scheduler idle: $(rss_kib "$scheduler_pid") KiB"

cat >"$work/job.toml" <<JOB
name = "memory-bench"
kind = "service"

[[group]]
name = "sleep"
count = $ALLOCS

[[group.task]]
name = "sleep"
command = ["/bin/sleep", "1000000"]
resources = { cpu_millis = 10, memory_mb = 8 }
JOB
DROVER_ADDR="$addr" "$DROVER" job run "$work/job.toml" >/dev/null
for _ in $(seq 600); do
    running="$(DROVER_ADDR="$addr" "$DROVER" job list -o json 2>/dev/null | python3 -c '
import json, sys
print(next((j["running"] for j in json.load(sys.stdin) if j["name"] == "memory-bench"), 0))' || echo 0)"
    [ "$running" -ge "$ALLOCS" ] && break
    sleep 0.5
done
echo "allocations running: $running"
sleep 5
sum=0
count=0
for pid in $(ps -eo pid=,comm=,args= | awk -v d="$work/agent" '$4 == "__supervise" && index($0, d) {print $1}'); do
    kib="$(rss_kib "$pid" 2>/dev/null || echo 0)"
    sum=$((sum + kib))
    count=$((count + 1))
done
echo "agent with $running allocations: $(rss_kib "$agent_pid") KiB"
echo "supervisors: $count, $sum KiB in all"
echo "scheduler with $running allocations: $(rss_kib "$scheduler_pid") KiB"
# The agent gives back the code pages a burst of starts mapped once the
# node has been quiet for 10 s (agent/src/memory.rs): measured again after.
sleep "${QUIET_S:-15}"
echo "agent with $running allocations, ${QUIET_S:-15} s later: $(rss_kib "$agent_pid") KiB (PSS $(pss_kib "$agent_pid") KiB)"
