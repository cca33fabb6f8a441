#!/usr/bin/env bash
# Pull and first start of a ~50 MB image in 5 layers from a registry on
# loopback, side by side in one run (root):
#   bench/image/run.sh [--runs N]      (default 7 runs per engine)
#   BENCH_BIN_DIR=DIR bench/image/run.sh  (release binaries already built in DIR)
#   BENCH_RUNTIME_ONLY=1 ...           (only image-bench and container-bench)
# Engines: Drover (`drover dev`, `drover job run` of a batch job), `skopeo
# copy` + `umoci unpack` + `crun run`, and `podman pull` + `podman run`.
# Then the warm start (image cached) of each, Drover's runtime alone
# (image-bench) and bench/container's own figures. See README.md.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")/../.."
RUNS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: bench/image/run.sh [--runs N]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in docker-registry skopeo umoci crun podman busybox python3 gzip; do
  command -v "$t" >/dev/null || {
    echo "needs $t: bash -c '. deploy/deps.sh; drover_install_bench_deps'" >&2
    exit 1
  }
done

# Everything below runs in a private mount namespace in which an empty file
# hides the v2 controller list: Debian's crun 1.8.1 (crun's and podman's
# runtime) refuses this host's hybrid cgroup layout otherwise, as in
# bench/container. The host's mount table is unchanged.
if [ -z "${DROVER_IMAGE_BENCH_NS:-}" ]; then
  # BENCH_BIN_DIR: a directory holding release builds of drover,
  # image-bench and container-bench (no cargo build then).
  if [ -z "${BENCH_BIN_DIR:-}" ]; then
    cargo build --release -p drover-cli -p drover-bench-container -p drover-bench-image
    BENCH_BIN_DIR=${CARGO_TARGET_DIR:-target}/release
  fi
  export DROVER_IMAGE_BENCH_NS=1 DROVER_IMAGE_BENCH_BIN
  DROVER_IMAGE_BENCH_BIN=$(cd "$BENCH_BIN_DIR" && pwd)
  exec unshare --mount --propagation private "$script" --runs "$RUNS"
fi
bin=$DROVER_IMAGE_BENCH_BIN
work=$(mktemp -d /tmp/drover-image-bench.XXXXXX)
# crun's mapped root must reach the bundles (a mktemp dir is 0700).
chmod 755 "$work"
controllers=/sys/fs/cgroup/unified/cgroup.controllers
if [ -e "$controllers" ]; then
  : > "$work/empty-controllers"
  mount --bind "$work/empty-controllers" "$controllers"
fi

reg_pid="" dev_pid="" dev_flags=()
pm=(podman --root "$work/podman/root" --runroot "$work/podman/run" --tmpdir "$work/podman/tmp"
    --storage-driver overlay --cgroup-manager cgroupfs --events-backend file --runtime crun)
# Podman raises RLIMIT_NOFILE and RLIMIT_NPROC by default, above what
# this VM's root may (it lacks CAP_SYS_RESOURCE): the rlimits of crun's
# default spec instead (nofile 1024; nproc as the 1024 pids of the others).
pm_limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
cleanup() {
  set +e
  if [ -n "$dev_pid" ]; then
    kill "$dev_pid" 2>/dev/null; wait "$dev_pid" 2>/dev/null
    "$bin/drover" dev --cleanup --data-dir "$work/dev" "${dev_flags[@]}" >/dev/null 2>&1
  fi
  [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; }
  [ -d "$work/podman/root" ] && "${pm[@]}" system reset -f >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
# `stats FILE`: median, p95 and min (ms) of the numbers (ns) in FILE.
stats() {
  sort -n "$1" | awk '{ v[NR] = $1 / 1e6 } END {
    m = int((NR * 50 + 99) / 100); p = int((NR * 95 + 99) / 100);
    printf "%.0f %.0f %.0f\n", v[m], v[p], v[1] }'
}

echo "== building the image (5 layers, ~50 MB of random data + busybox-static)" >&2
python3 - "$work" <<'EOF'
import gzip, hashlib, io, json, os, platform, shutil, sys, tarfile
work = sys.argv[1]
layout = os.path.join(work, "layout")
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return "sha256:" + h
def add(tar, name, data=None, link=None, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = 0, mode
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
busybox = shutil.which("busybox")
layers, diff_ids = [], []
for n in range(5):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        d = tarfile.TarInfo("data"); d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        if n == 0:
            for dname in ("bin", "proc", "dev", "sys", "tmp", "etc"):
                d = tarfile.TarInfo(dname); d.type, d.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(d)
            add(tar, "bin/busybox", open(busybox, "rb").read(), mode=0o755)
            for applet in ("true", "sh", "cat", "sleep"):
                add(tar, "bin/" + applet, link="busybox")
        # Incompressible: gzip cannot make the transfer smaller.
        add(tar, "data/layer%d" % n, os.urandom(10_000_000 - (900_000 if n == 0 else 0)))
    raw = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": put(gz), "size": len(gz)})
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = json.dumps({"architecture": arch, "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/true"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": put(config), "size": len(config)},
    "layers": layers}).encode()
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": put(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": "1"},
    "platform": {"architecture": arch, "os": "linux"}}]}
json.dump(index, open(os.path.join(layout, "index.json"), "w"))
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
print("layers (compressed bytes):", [l["size"] for l in layers], file=sys.stderr)
EOF

echo "== starting docker-registry (TLS, CA from drover tls init) on loopback" >&2
"$bin/drover" tls init --dir "$work/tls" >/dev/null
mkdir -p "$work/certs" && cp "$work/tls/ca.pem" "$work/certs/ca.crt"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $addr
  tls:
    certificate: $work/tls/scheduler.pem
    key: $work/tls/scheduler-key.pem
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 </dev/null &
reg_pid=$!
for _ in $(seq 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
image=$addr/bench/img:1
skopeo --insecure-policy copy --quiet --dest-cert-dir "$work/certs" "oci:$work/layout:1" "docker://$image"
# The image pinned to its manifest's digest, as a deployment's instances
# and restarts start it once the tag is pinned; and unpacked into one
# directory (bench/container's kind of rootfs).
digest=$(skopeo inspect --raw --cert-dir "$work/certs" "docker://$image" | sha256sum | cut -d' ' -f1)
pinned=${image%:*}@sha256:$digest
umoci unpack --image "$work/layout:1" "$work/dir" >/dev/null
chmod 755 "$work/dir"

echo "== starting drover dev" >&2
cat > "$work/policy.toml" <<EOF
allowed_images = ["$addr/bench/", "$work/layout"]
allowed_rootfs_dirs = ["$work/dir/rootfs"]
[registries.ca_files]
"$addr" = "$work/tls/ca.pem"
EOF
mkdir -p "$work/dev"
second=$((200 + $$ % 50)) third=$(( ($$ / 50) % 256 ))
dev_flags=(--bridge "drvimg$(( $$ % 100000 ))" --subnet "10.$second.$third.0/24"
           --cgroup-parent "drover-image-bench-$$")
DROVER_LOG=info "$bin/drover" dev --data-dir "$work/dev" --policy "$work/policy.toml" \
  --listen 127.0.0.1:0 --store-listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "${dev_flags[@]}" \
  >"$work/dev.log" 2>&1 </dev/null &
dev_pid=$!
for _ in $(seq 300); do [ -s "$work/dev/scheduler.addr" ] && break; sleep 0.1; done
DROVER_ADDR="http://$(cat "$work/dev/scheduler.addr")"
export DROVER_ADDR
for _ in $(seq 300); do
  "$bin/drover" node list -o json 2>/dev/null | grep -q '"status":"ready"' && break
  sleep 0.1
done
cache=$work/dev/agent/images
# `job N ROOTFS`: a batch job file running /bin/true on ROOTFS, no network.
job() {
  cat > "$work/job-$1.toml" <<EOF
name = "$1"
kind = "batch"
[[group]]
name = "main"
network = "none"
[[group.task]]
name = "app"
command = ["/bin/true"]
kill_timeout_ms = 200
rootfs = $2
EOF
  echo "$work/job-$1.toml"
}

# crun's config: bench/container's (`crun spec`, /bin/true, the same limits,
# cgroup namespace, user namespace mapped at 1000000 as Drover's default).
(cd "$work" && crun spec && python3 - <<'EOF'
import json
c = json.load(open("config.json"))
c["process"]["args"], c["process"]["terminal"], c["hostname"] = ["/bin/true"], False, "bench"
c["linux"]["resources"].update({"memory": {"limit": 64 << 20, "swap": 64 << 20},
    "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 1024}})
c["linux"]["namespaces"] += [{"type": "cgroup"}, {"type": "user"}]
m = [{"containerID": 0, "hostID": 1000000, "size": 65536}]
c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = m
json.dump(c, open("crun-config.json", "w"))
EOF
)

# One cold pull-and-start per engine; each prints nothing, fails loudly.
# `timed_job NAME ROOTFS`: `drover job run` of batch job NAME on ROOTFS
# until it completes; prints the nanoseconds it took.
timed_job() {
  local f; f=$(job "$1" "$2")
  local t0; t0=$(now_ns)
  "$bin/drover" job run "$f" >/dev/null
  echo $(( $(now_ns) - t0 ))
}
cold_drover() { # $1: run id
  rm -rf "$cache/layers" "$cache/tmp"
  timed_job "cold-$1" "{ type = \"oci\", image = \"$image\" }"
}
cold_crun() {
  rm -rf "$work/crun"; mkdir -p "$work/crun"
  local t0 t1 t2; t0=$(now_ns)
  skopeo --insecure-policy copy --quiet --src-cert-dir "$work/certs" "docker://$image" "oci:$work/crun/layout:1"
  t1=$(now_ns)
  umoci unpack --image "$work/crun/layout:1" "$work/crun/bundle" >/dev/null
  t2=$(now_ns)
  echo $(( t1 - t0 )) >> "$work/split-skopeo.ns"; echo $(( t2 - t1 )) >> "$work/split-umoci.ns"
  cp "$work/crun-config.json" "$work/crun/bundle/config.json"
  # umoci makes the bundle 0700; the mapped root must reach rootfs/.
  chmod 755 "$work/crun/bundle"
  crun run --bundle "$work/crun/bundle" "bimg-$$-$1" </dev/null >/dev/null
  echo $(( $(now_ns) - t0 ))
}
cold_podman() {
  "${pm[@]}" system reset -f >/dev/null 2>&1 || true
  local t0 t1; t0=$(now_ns)
  "${pm[@]}" pull --quiet --cert-dir "$work/certs" "$image" >/dev/null
  t1=$(now_ns); echo $(( t1 - t0 )) >> "$work/split-podman-pull.ns"
  "${pm[@]}" run --rm --network none "${pm_limits[@]}" "$image" /bin/true
  echo $(( $(now_ns) - t0 ))
}
warm_drover() { timed_job "warm-$1" "{ type = \"oci\", image = \"$image\" }"; }
warm_drover_pinned() { timed_job "pinned-$1" "{ type = \"oci\", image = \"$pinned\" }"; }
warm_drover_layout() { timed_job "layout-$1" "{ type = \"oci\", path = \"$work/layout\" }"; }
warm_drover_dir() { timed_job "dir-$1" "{ type = \"dir\", path = \"$work/dir/rootfs\" }"; }
warm_crun() {
  local t0; t0=$(now_ns)
  crun run --bundle "$work/crun/bundle" "bimg-$$-w$1" </dev/null >/dev/null
  echo $(( $(now_ns) - t0 ))
}
warm_podman() {
  local t0; t0=$(now_ns)
  "${pm[@]}" run --rm --network none "${pm_limits[@]}" "$image" /bin/true
  echo $(( $(now_ns) - t0 ))
}

if [ -z "${BENCH_RUNTIME_ONLY:-}" ]; then
cold=(drover crun podman) warm=(drover drover_pinned drover_layout drover_dir crun podman)
echo "== warm-up (one of each, not counted)" >&2
for e in "${cold[@]}"; do "cold_$e" 0 >/dev/null; done
for e in "${warm[@]}"; do "warm_$e" 0 >/dev/null; done
rm -f "$work"/split-*.ns
echo "== $RUNS cold runs per engine, alternating (rotating which goes first)" >&2
for i in $(seq "$RUNS"); do
  for k in 0 1 2; do
    e=${cold[$(( (i + k) % 3 ))]}
    sync  # no engine waits for the previous one's writeback
    "cold_$e" "$i" >> "$work/cold-$e.ns"
  done
  echo "   run $i: $(for e in "${cold[@]}"; do printf '%s %d ms  ' "$e" $(( $(tail -1 "$work/cold-$e.ns") / 1000000 )); done)" >&2
done
echo "== $RUNS warm runs per engine, alternating" >&2
for i in $(seq "$RUNS"); do
  for k in "${!warm[@]}"; do
    e=${warm[$(( (i + k) % ${#warm[@]} ))]}
    sync
    "warm_$e" "$i" >> "$work/warm-$e.ns"
  done
done

name() { # $1: cold|warm, $2: engine
  case $1-$2 in
    cold-drover) echo "drover: drover job run, image from the registry" ;;
    warm-drover) echo "drover: drover job run, image from the registry (layers cached)" ;;
    warm-drover_pinned) echo "drover: drover job run, the image pinned by digest (all cached)" ;;
    warm-drover_layout) echo "drover: drover job run, same image from a local OCI layout" ;;
    warm-drover_dir) echo "drover: drover job run, same files as a directory rootfs" ;;
    cold-crun) echo "skopeo copy + umoci unpack + crun run" ;;
    warm-crun) echo "crun run (bundle unpacked)" ;;
    cold-podman) echo "podman pull + podman run --rm" ;;
    warm-podman) echo "podman run --rm (image stored)" ;;
  esac
}
table() { # $1: cold|warm, rest: engines; ratios of medians to podman and crun
  local kind=$1; shift
  read -r pd _ _ < <(stats "$work/$kind-podman.ns")
  read -r cm _ _ < <(stats "$work/$kind-crun.ns")
  echo "| $kind | median ms | p95 ms | min ms | / podman | / skopeo+crun (cold), crun (warm) |"
  echo "|---|---|---|---|---|---|"
  for e in "$@"; do
    read -r m p mn < <(stats "$work/$kind-$e.ns")
    awk -v n="$(name "$kind" "$e")" -v m="$m" -v p="$p" -v mn="$mn" -v pd="$pd" -v c="$cm" \
      'BEGIN { printf "| %s | %d | %d | %d | %.2f | %.2f |\n", n, m, p, mn, m / pd, m / c }'
  done
}
median_of() { read -r m _ _ < <(stats "$1"); echo "$m"; }
echo
echo "Image: 5 layers, $(du -sb "$work/layout/blobs" | cut -f1) bytes of blobs; $RUNS runs each after one warm-up; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Cold (no image cached): pull + unpack + start + exit of /bin/true"
echo
table cold "${cold[@]}"
echo
echo "Split (medians): skopeo copy $(median_of "$work/split-skopeo.ns") ms, umoci unpack $(median_of "$work/split-umoci.ns") ms; podman pull $(median_of "$work/split-podman-pull.ns") ms."
echo
echo "Warm (image cached): start + exit of /bin/true"
echo
table warm "${warm[@]}"
read -r wd _ _ < <(stats "$work/warm-drover.ns")
read -r wl _ _ < <(stats "$work/warm-drover_layout.ns")
read -r wp _ _ < <(stats "$work/warm-drover_pinned.ns")
read -r wdir _ _ < <(stats "$work/warm-drover_dir.ns")
awk -v a="$wd" -v b="$wl" 'BEGIN { printf "\nDrover warm, registry image / local layout (medians): %.2f\n", a / b }'
awk -v a="$wp" -v b="$wdir" 'BEGIN { printf "Drover warm, pinned image / directory rootfs (medians): %.2f\n", a / b }'
echo

fi
echo "== Drover's runtime alone (image-bench)" >&2
"$bin/image-bench" --drover "$bin/drover" --image "$image" --ca "$work/tls/ca.pem" \
  --pinned "$pinned" \
  --layout "$work/layout" --rootfs "$work/dir/rootfs" --runs "$RUNS"
echo
echo "== bench/container (its own command, 20 runs)" >&2
echo "bench/container, same session (container-bench --runs 20):"
echo
"$bin/container-bench" --drover "$bin/drover" --runs 20 | sed -n '/^| engine/,/^$/p'
