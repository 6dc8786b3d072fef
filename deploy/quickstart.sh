#!/usr/bin/env bash
# Quickstart, on a fresh Debian 12 machine, as root, from anywhere:
#
#   deploy/quickstart.sh        installs what is needed, builds rswarm, brings up a three-host
#                               lab (`rswarm lab up`: hosts in network namespaces on this
#                               machine, a registry, a cluster), builds a small demo web image
#                               here (no registry on the internet is needed), pushes it into the
#                               lab's registry, runs it as a service spread over the three hosts
#                               and shows the cluster, the tasks and the answers of each task.
#   deploy/quickstart.sh down   takes the lab down (`rswarm lab down`): nothing stays behind.
#
# The lab stays up between the two. Its dir is $RSWARM_QUICKSTART_DIR (default
# /tmp/rswarm-quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${RSWARM_QUICKSTART_DIR:-/tmp/rswarm-quickstart}
IMAGE=198.18.0.250:5000/demo-web:latest

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run it as root (the lab makes network namespaces)"
# rustup's cargo, when the shell that runs this has not picked it up yet.
[[ -x $HOME/.cargo/bin/cargo ]] && PATH=$HOME/.cargo/bin:$PATH

binary() {
  local target
  target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  echo "$target/debug/rswarm"
}

if [[ ${1:-up} == down ]]; then
  [[ -f $DIR/lab.json ]] || { say "no quickstart lab in $DIR"; exit 0; }
  "$(binary)" lab down --dir "$DIR"
  exit 0
fi
[[ ${1:-up} == up ]] || die "usage: $0 [up|down]"
[[ -f $DIR/lab.json ]] && die "a quickstart lab is already up in $DIR: take it down first with '$0 down'"

say "installing what building rswarm and the lab need"
bash deploy/setup.sh >&2
missing=()
for p in containerd runc docker-registry skopeo busybox-static iproute2 nftables jq curl; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null; apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null; }
fi

say "building rswarm (cargo build -p rswarm)"
cargo build -p rswarm >&2
BIN=$(binary)

say "bringing up a three-host lab in $DIR"
"$BIN" lab up --nodes 3 --managers 1 --dir "$DIR"
export RSWARM_HOST=unix://$DIR/h1/rswarm.sock

# A tiny web server image from Debian's busybox-static: busybox httpd on port 8080 serving a
# page that names the container it runs in. An OCI image layout, pushed with skopeo.
source deploy/oci-image.sh
build_demo_image() {
  local dir=$1 root; root=$(mktemp -d)
  busybox_rootfs "$root"
  cat >"$root/bin/demo-web" <<'EOS'
#!/bin/sh
# The demo's page: which container answers, and since when.
printf 'Hello from rswarm! This is container %s, up since %s.\n' "$(hostname)" "$(date -u +%H:%M:%S)" >/www/index.html
exec httpd -f -p 8080 -h /www
EOS
  chmod 0755 "$root/bin/demo-web"
  oci_layout "$root" "$dir" "{$OCI_IMAGE_PATH_ENV,\"Cmd\":[\"/bin/demo-web\"],\"ExposedPorts\":{\"8080/tcp\":{}},\"Healthcheck\":{\"Test\":[\"CMD-SHELL\",\"wget -qO- http://127.0.0.1:8080/ >/dev/null\"],\"Interval\":1000000000,\"Timeout\":2000000000,\"Retries\":3}}"
  rm -rf "$root"
}

say "building the demo web image and pushing it to $IMAGE"
layout=$(mktemp -d)
trap 'rm -rf "$layout"' EXIT
build_demo_image "$layout"
skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$IMAGE" >&2

say "deploying it: rswarm network create demo; rswarm service create --name web --replicas 3 --network demo --publish 8080:8080 $IMAGE"
"$BIN" network create demo >/dev/null
"$BIN" service create --name web --replicas 3 --network demo --publish 8080:8080 "$IMAGE" >/dev/null

echo
echo "\$ rswarm node ls"
"$BIN" node ls
echo
echo "\$ rswarm service ps web"
"$BIN" service ps web
echo
# The routing mesh: port 8080 answers on every host, each connection going to one of the
# three containers, wherever it runs.
for host in 198.18.0.11 198.18.0.12 198.18.0.13; do
  for _ in $(seq 1 100); do curl -fs -m 2 -o /dev/null "http://$host:8080/" && break; sleep 0.1; done
  echo "\$ curl http://$host:8080/      # h${host##*.1}"
  curl -fsS -m 5 "http://$host:8080/"
done
echo
echo "\$ rswarm exec web.1 -- wget -qO- http://web:8080/      # by name on the demo network, through the service's VIP"
"$BIN" exec web.1 -- wget -qO- http://web:8080/

cat <<EOT

The lab is up: three hosts (h1 manager, h2 and h3 workers) in network namespaces on this
machine, 198.18.0.11-13, with a registry at 198.18.0.250:5000. Talk to it with:

    export PATH=$(dirname "$BIN"):\$PATH
    eval "\$(rswarm lab env h1 --dir $DIR)"     # the manager's socket
    rswarm node ls
    rswarm service scale web=6
    rswarm service logs web
    rswarm lab status --dir $DIR
    rswarm lab stop h3 --dir $DIR                # a host fails; see its tasks move
    rswarm lab start h3 --dir $DIR

Take it down (removes everything the lab made):

    $0 down
EOT
