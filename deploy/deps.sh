#!/usr/bin/env bash
# Installs the Debian packages Drover's build, dev mode and tests need, if
# any is missing. Sourced by deploy/dev-example.sh and deploy/test.sh.
#   protobuf-compiler  protoc, for the gRPC code generated at build time
#   etcd-server        a real etcd: the store conformance suite runs against it
#   etcd-client        etcdctl: the embedded store is driven with it in tests
#   busybox-static     a tiny static rootfs for container tests
#   iproute2           `ip`, which tests (never the product) use to check state
#   bind9-dnsutils     `dig`, for DNS tests
#   nftables           `nft`: the deploy/cluster.sh test checks `down` left no table
#   crun runc          anchors for the container-start benchmark
#   python3            seccomp tests: system calls probed with ctypes, http.server
#   chromium curl      the status page test: headless Chromium loads and
#                      screenshots the page; curl presents client certificates
#   prometheus         `promtool check metrics` on the live /metrics output
#   python3-venv       the reflection test installs grpcio-reflection from PyPI in a venv
#   docker-registry    the distribution registry: image pull tests run one on loopback
#   skopeo             fills that registry from OCI layouts the tests build
#   apache2-utils      htpasswd: the registry's basic-auth file
#   zstd               compresses the zstd image layers the transfer tests push
# drover_install_bench_deps adds what only the benchmarks need:
#   dnsperf knot       the DNS load generator and the anchor server (bench/dns)
#   podman umoci       bench/image's anchors: podman pull + run, and skopeo's OCI
#                      layout unpacked by umoci for crun
set -euo pipefail

drover_packages=(protobuf-compiler etcd-server etcd-client busybox-static iproute2 bind9-dnsutils nftables crun runc ca-certificates gcc python3 chromium curl python3-venv)
drover_packages+=(prometheus docker-registry skopeo apache2-utils)
drover_packages+=(zstd)

drover_bench_packages=(dnsperf knot podman umoci)

drover_install_deps() {
  drover_install_packages "${drover_packages[@]}"
}

drover_install_bench_deps() {
  drover_install_packages "${drover_packages[@]}" "${drover_bench_packages[@]}"
}

drover_install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's etcd-server package must not start a system etcd here: a
    # policy-rc.d that refuses every service start, unless one exists.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      own_policy=1
    fi
    apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then
      rm -f /usr/sbin/policy-rc.d
    fi
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found. Drover needs a Rust toolchain >= 1.88 (install it with rustup)." >&2
    exit 1
  fi
}
