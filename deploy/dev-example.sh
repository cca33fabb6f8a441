#!/usr/bin/env bash
# Brings up `drover dev` (scheduler + agent + embedded store, loopback only)
# in the background and runs the example job. Leaves drover dev running and
# says how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/deps.sh
drover_install_deps

cargo build --release --locked -p drover-cli
# Where cargo put it (CARGO_TARGET_DIR, when set, moves it).
bin=${CARGO_TARGET_DIR:-target}/release/drover
data=${DROVER_DATA_DIR:-/var/lib/drover/dev}
log=${DROVER_LOG_FILE:-/var/log/drover-dev.log}
# The data directory (every job's spec and environment, task logs, the
# store) and the log are root's alone.
umask 077
mkdir -p "$data" "$(dirname "$log")"
chmod 700 "$data"
touch "$log" && chmod 600 "$log"
export DROVER_ADDR=${DROVER_ADDR:-http://127.0.0.1:4680}

if ! "$bin" node list >/dev/null 2>&1; then
  setsid "$bin" dev --data-dir "$data" >>"$log" 2>&1 < /dev/null &
  echo $! > "$data/dev.pid"
  echo "started drover dev (pid $(cat "$data/dev.pid"), log $log)"
fi

# Wait (at most 30 s) for the node to register.
for _ in $(seq 150); do
  if "$bin" node list -o json 2>/dev/null | grep -q '"status":"ready"'; then break; fi
  sleep 0.2
done
"$bin" node list
echo
"$bin" job run examples/hello.toml
echo
# Two services: web (two instances behind an http check) and a client
# that fetches http://web:8080/ by name every second.
"$bin" job run examples/web.toml
"$bin" job run examples/client.toml
echo
dns=$(cat "$data/dns.addr" 2>/dev/null || echo 127.0.0.1:8600)
# Wait (at most 20 s) for both web instances to pass their check.
for _ in $(seq 100); do
  [ "$(dig +short @"${dns%:*}" -p "${dns##*:}" web.service.drover.internal A | wc -l)" -ge 2 ] && break
  sleep 0.2
done
echo "\$ dig @${dns%:*} -p ${dns##*:} web.service.drover.internal"
dig +noall +answer @"${dns%:*}" -p "${dns##*:}" web.service.drover.internal A
echo "\$ dig @${dns%:*} -p ${dns##*:} _web._tcp.service.drover.internal SRV"
dig +noall +answer +additional @"${dns%:*}" -p "${dns##*:}" _web._tcp.service.drover.internal SRV
# A line of the client's log once it has fetched a page by name.
for _ in $(seq 50); do
  "$bin" logs client 2>/dev/null | grep -q "hello from" && break
  sleep 0.2
done
echo "\$ drover logs client | tail -n 1"
"$bin" logs client | tail -n 1
echo
echo "drover dev keeps running. Try: $bin logs <alloc-id>, $bin job status web, $bin job stop hello"
echo "Status page: http://$(cat "$data/http.addr" 2>/dev/null || echo 127.0.0.1:4681)/"
echo "Tasks outlive drover dev (as a node's outlive its agent). To stop everything and remove the"
echo "tasks and the node's networking (bridge drover0, namespaces, firewall table):"
echo "  kill \$(cat $data/dev.pid); $bin dev --cleanup --data-dir $data"
