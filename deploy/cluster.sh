#!/usr/bin/env bash
# A whole Drover cluster on one machine, for trying a real deployment out:
#
#   etcd      3 members (Debian's etcd-server) on loopback, TLS for clients
#             and peers, client certificates required, auth on with the
#             users and roles of deploy/etcd-rbac.sh
#   scheduler $SCHEDULERS replicas (default 2) on the cluster bridge, mutual
#             TLS, agent certificates bound to their node
#   agents    $AGENTS hosts (default 3), each a network namespace plugged
#             into the cluster bridge, with its own data dir, cgroup parent
#             and node certificate
#   dns       `drover dns` on the bridge address, reading /skydns/ as the
#             drover-dns etcd user
#
# usage: deploy/cluster.sh up|status|down
#
#   up      creates everything, then prints the `export` lines that point
#           the CLI at the cluster:  eval "$(deploy/cluster.sh up)"
#   status  every component with its pid and health, and the leader
#   down    stops everything by pid and removes the namespaces, veths,
#           bridge (and its routes), the agents' tasks, networking and
#           cgroups, mounts and the state directory
#
# Settings (environment):
#   CLUSTER_DIR   state directory (default /tmp/drover-cluster)
#   CLUSTER_NAME  short name in netns, link and cgroup names (default dc;
#                 at most 6 characters, a-z 0-9)
#   CLUSTER_NET   first three octets of the cluster bridge's /24
#                 (default 198.18.250: a range set aside for network tests)
#   TASK_CIDR     range the nodes' task subnets are cut from
#                 (default 10.250.0.0/16)
#   SCHEDULERS    scheduler replicas (default 2), AGENTS agent hosts
#                 (default 3)
#   ETCD_PORT     first etcd port on 127.0.0.1: member i serves clients on
#                 ETCD_PORT+2i and peers on ETCD_PORT+2i+1 (default 22379)
#   SCHED_PORT    first scheduler port on the bridge (default 24680)
#   DNS_PORT      `drover dns` port on the bridge (default 28600)
#   DROVER        the drover binary (default: `drover` in PATH)
#   ETCD          the etcd binary (default /usr/bin/etcd)
#
# Every setting but DROVER and ETCD is saved by `up` in CLUSTER_DIR/env,
# and read back by `status` and `down`. Needs root, iproute2, nsenter,
# etcd-server, etcd-client and dig (deploy/deps.sh installs them).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/drover-cluster}
case $CLUSTER_DIR in
    /*) ;;
    *) CLUSTER_DIR=$PWD/$CLUSTER_DIR ;;
esac
if [ -r "$CLUSTER_DIR/env" ]; then
    # shellcheck source=/dev/null
    . "$CLUSTER_DIR/env"
fi
CLUSTER_NAME=${CLUSTER_NAME:-dc}
CLUSTER_NET=${CLUSTER_NET:-198.18.250}
TASK_CIDR=${TASK_CIDR:-10.250.0.0/16}
SCHEDULERS=${SCHEDULERS:-2}
AGENTS=${AGENTS:-3}
ETCD_PORT=${ETCD_PORT:-22379}
SCHED_PORT=${SCHED_PORT:-24680}
DNS_PORT=${DNS_PORT:-28600}
DROVER=${DROVER:-$(command -v drover || echo drover)}
ETCD=${ETCD:-/usr/bin/etcd}
ETCD_MEMBERS=3

pki=$CLUSTER_DIR/pki
etcd_pki=$CLUSTER_DIR/pki/etcd
bridge=drc-$CLUSTER_NAME
gateway=$CLUSTER_NET.1

die() { echo "cluster.sh: $*" >&2; exit 1; }
netns_of() { echo "drc-$CLUSTER_NAME-h$1"; }
veth_of() { echo "drc${CLUSTER_NAME}h$1"; }
node_of() { echo "$CLUSTER_NAME-h$1"; }
host_ip() { echo "$CLUSTER_NET.$((10 + $1))"; }
cgroup_of() { echo "drover-cluster-$CLUSTER_NAME-h$1"; }
etcd_client() { echo "https://127.0.0.1:$((ETCD_PORT + 2 * $1))"; }
etcd_peer() { echo "https://127.0.0.1:$((ETCD_PORT + 2 * $1 + 1))"; }
sched_addr() { echo "$gateway:$((SCHED_PORT + $1))"; }

etcd_endpoints() {
    local i out=
    for ((i = 0; i < ETCD_MEMBERS; i++)); do out+=${out:+,}$(etcd_client "$i"); done
    echo "$out"
}

sched_list() {
    local i out=
    for ((i = 0; i < SCHEDULERS; i++)); do out+=${out:+,}$(sched_addr "$i"); done
    echo "$out"
}

# etcdctl as etcd's root user, on every member or on ENDPOINTS.
ctl() {
    ETCDCTL_API=3 etcdctl --endpoints="${ENDPOINTS:-$(etcd_endpoints)}" \
        --cacert="$etcd_pki/etcd-ca.pem" --cert="$etcd_pki/etcd-root.pem" \
        --key="$etcd_pki/etcd-root-key.pem" --command-timeout=3s "$@"
}

# The CLI with the cluster's client certificate.
cli() {
    DROVER_ADDR=$(sched_list) DROVER_TLS_CA=$pki/ca.pem DROVER_TLS_CERT=$pki/cli.pem \
        DROVER_TLS_KEY=$pki/cli-key.pem "$DROVER" "$@"
}

# Starts "$@" in a session of its own, output to logs/NAME.log, and writes
# its pid to pids/NAME (nsenter and setsid exec, so it is the program's).
spawn() {
    local name=$1
    shift
    setsid "$@" >>"$CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/pids/$name"
}

pid_of() { cat "$CLUSTER_DIR/pids/$1" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# Polls "$@" every 0.2 s for up to $1 seconds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "$what not ready within ${secs}s (logs: $CLUSTER_DIR/logs)"
        sleep 0.2
    done
}

check_settings() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces, cgroups, agents)"
    [[ $CLUSTER_NAME =~ ^[a-z0-9]{1,6}$ ]] || die "CLUSTER_NAME=$CLUSTER_NAME: 1 to 6 of a-z 0-9"
    [[ $CLUSTER_NET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CLUSTER_NET=$CLUSTER_NET: three octets, e.g. 198.18.250"
    if [ "$AGENTS" -lt 1 ] || [ "$AGENTS" -gt 200 ]; then die "AGENTS=$AGENTS: 1 to 200"; fi
    [ "$SCHEDULERS" -ge 1 ] || die "SCHEDULERS=$SCHEDULERS: at least 1"
    command -v "$DROVER" >/dev/null || die "no drover binary at '$DROVER'; set DROVER=path/to/drover"
    [ -x "$ETCD" ] || die "no etcd at $ETCD; install etcd-server (deploy/deps.sh) or set ETCD"
}

up_pki() {
    mkdir -p "$pki" "$etcd_pki"
    "$DROVER" tls init --dir "$pki" --host "$gateway" >/dev/null
    "$DROVER" tls etcd --dir "$etcd_pki" >/dev/null
    local i
    for ((i = 0; i < AGENTS; i++)); do
        "$DROVER" tls agent --dir "$pki" --node "$(node_of "$i")" >/dev/null
    done
}

up_etcd() {
    local i cluster=
    for ((i = 0; i < ETCD_MEMBERS; i++)); do cluster+=${cluster:+,}e$i=$(etcd_peer "$i"); done
    for ((i = 0; i < ETCD_MEMBERS; i++)); do
        spawn "etcd-$i" "$ETCD" --name "e$i" --data-dir "$CLUSTER_DIR/etcd/e$i" \
            --listen-client-urls "$(etcd_client "$i")" --advertise-client-urls "$(etcd_client "$i")" \
            --listen-peer-urls "$(etcd_peer "$i")" --initial-advertise-peer-urls "$(etcd_peer "$i")" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "drover-$CLUSTER_NAME" \
            --cert-file "$etcd_pki/etcd-server.pem" --key-file "$etcd_pki/etcd-server-key.pem" \
            --trusted-ca-file "$etcd_pki/etcd-ca.pem" --client-cert-auth \
            --peer-cert-file "$etcd_pki/etcd-server.pem" --peer-key-file "$etcd_pki/etcd-server-key.pem" \
            --peer-trusted-ca-file "$etcd_pki/etcd-ca.pem" --peer-client-cert-auth
    done
    wait_for 60 "etcd cluster" ctl endpoint health
    bash "$here/etcd-rbac.sh" "$(etcd_endpoints)" "$etcd_pki" >"$CLUSTER_DIR/logs/etcd-rbac.log"
}

up_network() {
    ip link add "$bridge" type bridge
    ip addr add "$gateway/24" dev "$bridge"
    ip link set "$bridge" up
    local i ns veth
    for ((i = 0; i < AGENTS; i++)); do
        ns=$(netns_of "$i") veth=$(veth_of "$i")
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$bridge" up
        ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done
}

up_schedulers() {
    local i extra
    LEADER=
    for ((i = 0; i < SCHEDULERS; i++)); do
        extra=()
        # Scheduler HA: each replica advertises the address the leader key
        # names (builds without HA have no such flag).
        if "$DROVER" scheduler --help 2>/dev/null | grep -q -- '--advertise'; then
            extra=(--advertise "$(sched_addr "$i")")
        fi
        spawn "scheduler-$i" "$DROVER" scheduler --etcd "$(etcd_endpoints)" \
            --listen "$(sched_addr "$i")" "${extra[@]}" \
            --tls-cert "$pki/scheduler.pem" --tls-key "$pki/scheduler-key.pem" \
            --tls-client-ca "$pki/ca.pem" --require-node-certs \
            --etcd-ca "$etcd_pki/etcd-ca.pem" --etcd-cert "$etcd_pki/etcd-scheduler.pem" \
            --etcd-key "$etcd_pki/etcd-scheduler-key.pem" --cluster-cidr "$TASK_CIDR"
    done
    for ((i = 0; i < SCHEDULERS; i++)); do
        wait_for 60 "scheduler $i" sched_health "$i"
    done
}

up_agents() {
    local i dir node
    for ((i = 0; i < AGENTS; i++)); do
        dir=$CLUSTER_DIR/agents/h$i node=$(node_of "$i")
        mkdir -p "$dir"
        echo "$node" >"$dir/node-id"
        spawn "agent-$i" nsenter --net="/run/netns/$(netns_of "$i")" -- \
            "$DROVER" agent --scheduler "$(sched_list)" --data-dir "$dir" \
            --address "$(host_ip "$i")" --cgroup-parent "$(cgroup_of "$i")" \
            --tls-ca "$pki/ca.pem" --tls-cert "$pki/agent-$node.pem" \
            --tls-key "$pki/agent-$node-key.pem"
    done
    wait_for 90 "$AGENTS ready agents" agents_ready
}

# Node table columns: ID HOST ADDRESS SUBNET STATUS ...
agents_ready() {
    [ "$(cli node list | awk 'NR > 1 && $5 == "ready"' | wc -l)" -ge "$AGENTS" ]
}

up_dns() {
    spawn dns "$DROVER" dns --etcd "$(etcd_endpoints)" --listen "$gateway:$DNS_PORT" \
        --etcd-ca "$etcd_pki/etcd-ca.pem" --etcd-cert "$etcd_pki/etcd-dns.pem" \
        --etcd-key "$etcd_pki/etcd-dns-key.pem"
    wait_for 30 "drover dns" dig +time=1 +tries=1 @"$gateway" -p "$DNS_PORT" drover.internal SOA
}

print_env() {
    echo "export DROVER_ADDR=$(sched_list)"
    echo "export DROVER_TLS_CA=$pki/ca.pem"
    echo "export DROVER_TLS_CERT=$pki/cli.pem"
    echo "export DROVER_TLS_KEY=$pki/cli-key.pem"
    echo "# DNS: dig @$gateway -p $DNS_PORT web.service.drover.internal"
}

cmd_up() {
    check_settings
    [ ! -e "$CLUSTER_DIR/env" ] || die "a cluster is already up in $CLUSTER_DIR (run 'down' first)"
    ! ip link show "$bridge" >/dev/null 2>&1 || die "link $bridge exists (another cluster named $CLUSTER_NAME?)"
    mkdir -p "$CLUSTER_DIR/logs" "$CLUSTER_DIR/pids"
    chmod 700 "$CLUSTER_DIR"
    local k
    for k in CLUSTER_NAME CLUSTER_NET TASK_CIDR SCHEDULERS AGENTS ETCD_PORT SCHED_PORT DNS_PORT; do
        printf '%s=%q\n' "$k" "${!k}"
    done >"$CLUSTER_DIR/env"
    # Whatever fails half-way, nothing stays behind.
    up_done=0
    trap 'if [ "$up_done" != 1 ]; then echo "cluster.sh: up failed; removing what was made" >&2; cmd_down >&2; fi' EXIT
    up_pki >&2
    up_etcd >&2
    up_network >&2
    up_schedulers >&2
    up_agents >&2
    up_dns >&2
    up_done=1
    echo "cluster $CLUSTER_NAME is up in $CLUSTER_DIR; 'deploy/cluster.sh status' shows it" >&2
    print_env
}

# pid and health of one component: NAME HEALTH-COMMAND...
row() {
    local name=$1 health
    shift
    if alive "$name"; then
        health=$("$@" 2>&1 | head -n1) || health="unhealthy: $health"
    else
        health=stopped
    fi
    printf '%-12s %-8s %s\n' "$name" "$(pid_of "$name")" "$health"
}

etcd_health() {
    local out
    out=$(ENDPOINTS=$(etcd_client "$1") ctl endpoint status -w simple 2>&1) || { echo "$out"; return 1; }
    # endpoint, id, version, db size, is leader, ...
    case $(echo "$out" | cut -d, -f5 | tr -d ' ') in
        true) echo "healthy, etcd leader" ;;
        *) echo "healthy" ;;
    esac
}

# A follower may refuse the API and name the leader (scheduler HA): that
# is health too. The row says which replica the leader key names.
sched_health() {
    local addr out role=
    addr=$(sched_addr "$1")
    case $LEADER in *"$addr"*) role=", leader" ;; esac
    if out=$(cli node list -o json --addr "$addr" 2>&1); then
        echo "serving $addr$role"
    elif echo "$out" | grep -qi leader; then
        echo "standby $addr: $(echo "$out" | head -n1)"
    else
        echo "$out" | head -n1
        return 1
    fi
}

agent_health() {
    local node table status
    node=$(node_of "$1")
    table=$(cli node list) || { echo "$table"; return 1; }
    status=$(echo "$table" | awk -v n="$node" 'NR > 1 && $1 == n { print $5 }')
    echo "node $node ${status:-not registered} on $(host_ip "$1") (netns $(netns_of "$1"))"
}

dns_health() { dig +short +time=1 +tries=1 @"$gateway" -p "$DNS_PORT" drover.internal SOA | grep -q . && echo "answering $gateway:$DNS_PORT"; }

cmd_status() {
    [ -r "$CLUSTER_DIR/env" ] || die "no cluster in $CLUSTER_DIR"
    local i leader
    LEADER=$(ctl get /drover/leader --print-value-only 2>/dev/null || true)
    printf '%-12s %-8s %s\n' COMPONENT PID HEALTH
    for ((i = 0; i < ETCD_MEMBERS; i++)); do row "etcd-$i" etcd_health "$i"; done
    for ((i = 0; i < SCHEDULERS; i++)); do row "scheduler-$i" sched_health "$i"; done
    for ((i = 0; i < AGENTS; i++)); do row "agent-$i" agent_health "$i"; done
    row dns dns_health
    if leader=$(ctl get /drover/leader --print-value-only 2>&1); then
        if [ -n "$leader" ]; then
            echo "leading scheduler: $leader"
        else
            echo "leading scheduler: none (no /drover/leader key in etcd)"
        fi
    else
        echo "leading scheduler: unknown (etcd: $(echo "$leader" | head -n1))"
    fi
}

# SIGTERM to pid file NAME's process, SIGKILL after 10 s.
stop_pid() {
    local name=$1 pid i
    pid=$(pid_of "$name")
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || { rm -f "$CLUSTER_DIR/pids/$name"; return 0; }
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$CLUSTER_DIR/pids/$name"
}

# Host $1's cgroup parent in cgroup v2 or in every v1 hierarchy.
cgroup_dirs() {
    local parent d
    parent=$(cgroup_of "$1")
    for d in "/sys/fs/cgroup/$parent" /sys/fs/cgroup/*/"$parent"; do
        [ -d "$d" ] && echo "$d"
    done
    true
}

# Pids of processes still using host I's data dir or cgroup parent (its
# supervisors and tasks once the agent is gone).
leftover_pids() {
    local dir=$CLUSTER_DIR/agents/h$1 cg p
    for cg in $(cgroup_dirs "$1"); do
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$dir/" && echo "${p#/proc/}"
    done
    true
}

# The agent's run directory for data dir $1, as drover_agent::net::wiring::
# netns_dir_for names it: /run/drover/<FNV-1a 64 of the path, hex>.
agent_run_dir() {
    local s=$1 h=$((0xcbf29ce484222325)) i c
    for ((i = 0; i < ${#s}; i++)); do
        printf -v c '%d' "'${s:i:1}"
        h=$(((h ^ c) * 0x100000001b3))
    done
    printf '/run/drover/%016x\n' "$h"
}

# Unmounts everything mounted under directory $1, deepest first.
umount_under() {
    findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r m; do
        umount -l "$m"
    done
}

down_agent() {
    local i=$1 ns pids
    ns=$(netns_of "$i")
    stop_pid "agent-$i"
    if [ -e "/run/netns/$ns" ] && [ -d "$CLUSTER_DIR/agents/h$i" ]; then
        # The agent's own cleanup: tasks, their namespaces and veths, the
        # node bridge, routes and firewall table.
        nsenter --net="/run/netns/$ns" -- "$DROVER" agent --cleanup \
            --data-dir "$CLUSTER_DIR/agents/h$i" --cgroup-parent "$(cgroup_of "$i")" \
            >>"$CLUSTER_DIR/logs/agent-$i-cleanup.log" 2>&1 || true
    fi
    pids=$(leftover_pids "$i" | sort -u | grep -vx "$$" || true)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    local cg
    for cg in $(cgroup_dirs "$i"); do
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$(veth_of "$i")" 2>/dev/null || true
    local run
    run=$(agent_run_dir "$CLUSTER_DIR/agents/h$i")
    if [ -d "$run" ]; then
        umount_under "$run"
        rm -rf "$run"
    fi
}

cmd_down() {
    set +e
    [ "$(id -u)" = 0 ] || die "needs root"
    local i
    # Agents one by one would take their stop grace each.
    # (`wait` names them: after a failed `up`, this shell's other children
    # are the cluster's processes.)
    local jobs=()
    for ((i = 0; i < AGENTS; i++)); do
        down_agent "$i" &
        jobs+=($!)
    done
    wait "${jobs[@]}"
    stop_pid dns
    for ((i = 0; i < SCHEDULERS; i++)); do stop_pid "scheduler-$i"; done
    for ((i = 0; i < ETCD_MEMBERS; i++)); do stop_pid "etcd-$i"; done
    ip link del "$bridge" 2>/dev/null
    # Anything the agents mounted under the state dir.
    if [ -d "$CLUSTER_DIR" ]; then
        umount_under "$CLUSTER_DIR"
    fi
    rm -rf "$CLUSTER_DIR"
    echo "cluster $CLUSTER_NAME removed" >&2
    set -e
}

case ${1:-} in
    up) cmd_up ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) die "usage: $0 up|status|down" ;;
esac
