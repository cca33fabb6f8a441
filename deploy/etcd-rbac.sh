#!/usr/bin/env bash
# Sets up etcd's users, roles and authentication for Drover, on an etcd
# cluster that runs with TLS and --client-cert-auth (certificates from
# `drover tls etcd --dir DIR`). The common name of a client certificate is
# the etcd user it acts as; no user has a password.
#
#   drover-scheduler  read and write /drover/ and /skydns/  (etcd-scheduler.pem)
#   drover-dns        read /skydns/                          (etcd-dns.pem)
#   root              everything; used here only            (etcd-root.pem)
#
# Agents never talk to etcd. Safe to run again: what exists is kept.
#
# usage: deploy/etcd-rbac.sh ENDPOINTS CERT_DIR [PREFIX]
#   ENDPOINTS  comma-separated https:// client URLs
#   CERT_DIR   the directory of `drover tls etcd`
#   PREFIX     Drover's key prefix (default /drover/)
set -euo pipefail

endpoints=${1:?usage: $0 ENDPOINTS CERT_DIR [PREFIX]}
certs=${2:?usage: $0 ENDPOINTS CERT_DIR [PREFIX]}
prefix=${3:-/drover/}
skydns=/skydns/

ctl() {
    ETCDCTL_API=3 etcdctl --endpoints="$endpoints" \
        --cacert="$certs/etcd-ca.pem" \
        --cert="$certs/etcd-root.pem" --key="$certs/etcd-root-key.pem" "$@"
}

# Runs an etcdctl command that may fail only because its object exists.
idempotent() {
    local out
    if ! out=$(ctl "$@" 2>&1); then
        case $out in
            *"already exists"*|*"already granted"*) ;;
            *) echo "etcdctl $*: $out" >&2; return 1 ;;
        esac
    fi
}

idempotent user add root --no-password
idempotent user grant-role root root

idempotent role add drover-scheduler
ctl role grant-permission drover-scheduler --prefix=true readwrite "$prefix" >/dev/null
ctl role grant-permission drover-scheduler --prefix=true readwrite "$skydns" >/dev/null
idempotent user add drover-scheduler --no-password
idempotent user grant-role drover-scheduler drover-scheduler

idempotent role add drover-dns
ctl role grant-permission drover-dns --prefix=true read "$skydns" >/dev/null
idempotent user add drover-dns --no-password
idempotent user grant-role drover-dns drover-dns

ctl auth enable >/dev/null
echo "etcd auth enabled at $endpoints: drover-scheduler may write $prefix and $skydns, drover-dns may read $skydns"
