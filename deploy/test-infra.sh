#!/usr/bin/env bash
# Test infrastructure for the executor tests (worker/tests/containerd.rs), as root:
#   deploy/test-infra.sh [start]   installs containerd, runc, docker-registry, skopeo, busybox-static,
#                                  tini and protoc if missing; starts containerd if `ctr version` fails and
#                                  a registry on 127.0.0.1:5055 if nothing answers there; pushes
#                                  127.0.0.1:5055/busybox:latest (built from busybox-static) if missing.
#   deploy/test-infra.sh stop      stops exactly the processes an earlier `start` started.
# What `start` started is recorded in $RSWARM_TEST_INFRA_DIR/pids (default /tmp/rswarm-test-infra),
# so that `stop` never touches a containerd or registry that someone else runs.
# Then: RSWARM_CONTAINERD_TESTS=1 cargo nextest run -p rswarm-worker
set -euo pipefail

DIR=${RSWARM_TEST_INFRA_DIR:-/tmp/rswarm-test-infra}
REG_PORT=${RSWARM_TEST_REG_PORT:-5055}
REG="127.0.0.1:$REG_PORT"
IMAGE="$REG/busybox:latest"
PIDFILE="$DIR/pids"

say() { printf '== %s\n' "$*" >&2; }

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then say "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}

install_packages() {
  local pkgs=(containerd runc docker-registry skopeo busybox-static protobuf-compiler curl ca-certificates tini)
  local missing=() p
  for p in "${pkgs[@]}"; do [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null; apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null; }
}

# build_busybox_image DIR (the test image), from the shared builder.
source "$(dirname "${BASH_SOURCE[0]}")/oci-image.sh"

start() {
  install_packages
  mkdir -p "$DIR"
  touch "$PIDFILE"
  if ! ctr version >/dev/null 2>&1; then
    say "starting containerd (log: $DIR/containerd.log)"
    containerd >>"$DIR/containerd.log" 2>&1 &
    echo "$! containerd" >>"$PIDFILE"
    wait_until 20 containerd ctr version
  fi
  if ! curl -fs "http://$REG/v2/" >/dev/null 2>&1; then
    say "starting a registry on $REG (storage: $DIR/registry)"
    mkdir -p "$DIR/registry"
    cat >"$DIR/registry/config.yml" <<EOF
version: 0.1
storage: { filesystem: { rootdirectory: $DIR/registry/data }, delete: { enabled: true } }
http: { addr: $REG }
EOF
    docker-registry serve "$DIR/registry/config.yml" >>"$DIR/registry/log" 2>&1 &
    echo "$! docker-registry" >>"$PIDFILE"
    wait_until 20 registry curl -fs "http://$REG/v2/"
  fi
  if ! skopeo inspect --tls-verify=false "docker://$IMAGE" >/dev/null 2>&1; then
    say "pushing $IMAGE"
    local img; img=$(mktemp -d)
    build_busybox_image "$img/layout"
    skopeo copy -q --dest-tls-verify=false "oci:$img/layout:latest" "docker://$IMAGE" >&2
    rm -rf "$img"
  fi
  say "ready: containerd, $IMAGE"
}

# ours PID NAME: the process is still the one we started (not a reused PID).
ours() { [[ -n $1 && $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]]; }

stop() {
  [[ -f $PIDFILE ]] || { say "nothing recorded in $PIDFILE"; return 0; }
  local pid name alive
  while read -r pid name; do ours "$pid" "$name" && kill "$pid" 2>/dev/null; done <"$PIDFILE"
  for _ in $(seq 1 50); do
    alive=0
    while read -r pid name; do ours "$pid" "$name" && alive=1; done <"$PIDFILE"
    ((alive)) || break
    sleep 0.2
  done
  while read -r pid name; do ours "$pid" "$name" && kill -9 "$pid" 2>/dev/null; done <"$PIDFILE"
  rm -f "$PIDFILE"
  say "stopped what start had started"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 64 ;;
esac
