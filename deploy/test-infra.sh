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

# build_busybox_image DIR: an OCI image layout with /bin/busybox and its applets. Copied from
# ../shared/acceptance/lib.sh (which cannot be sourced here: it installs an EXIT trap).
build_busybox_image() {
  local dir=$1 root; root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www" "$dir/blobs/sha256"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for a in $("$root/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$root/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$dir/layer.tar" .
  local diff; diff=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  gzip -n -9 "$dir/layer.tar"
  local layer lsize; layer=$(sha256sum "$dir/layer.tar.gz" | cut -d' ' -f1); lsize=$(stat -c %s "$dir/layer.tar.gz")
  mv "$dir/layer.tar.gz" "$dir/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >"$dir/config.json"
  local cfg csize; cfg=$(sha256sum "$dir/config.json" | cut -d' ' -f1); csize=$(stat -c %s "$dir/config.json")
  mv "$dir/config.json" "$dir/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$cfg" "$csize" "$layer" "$lsize" >"$dir/manifest.json"
  local man msize; man=$(sha256sum "$dir/manifest.json" | cut -d' ' -f1); msize=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$dir/blobs/sha256/$man"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$man" "$msize" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  rm -rf "$root"
}

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
