#!/usr/bin/env bash
# Quickstart: builds rswarm and runs a three-manager, one-worker cluster on this machine's
# loopback (one daemon per node, each with its own data dir and socket under $DIR).
#   deploy/quickstart.sh        set up, build, start the cluster, show it
#   deploy/quickstart.sh down   stop it and remove $DIR
# The namespace-based lab (`rswarm lab up`) replaces this once it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${RSWARM_QUICKSTART_DIR:-/tmp/rswarm-quickstart}
BIN=$PWD/target/debug/rswarm
if [[ ${1:-up} == down ]]; then
  for f in "$DIR"/*/pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$DIR"
  echo "quickstart cluster stopped"
  exit 0
fi
if [[ -d $DIR ]]; then echo "quickstart: $DIR exists: run '$0 down' first" >&2; exit 1; fi
bash deploy/setup.sh
cargo build -p rswarm
mkdir -p "$DIR"
port=24270
for n in m1 m2 m3 w1; do
  port=$((port + 1))
  mkdir -p "$DIR/$n"
  "$BIN" daemon --data-dir "$DIR/$n/data" --socket "$DIR/$n/rswarm.sock" \
    --listen-addr "127.0.0.1:$port" --hostname "$n" >"$DIR/$n/daemon.log" 2>&1 &
  echo $! >"$DIR/$n/pid"
done
rsw() { local n=$1; shift; "$BIN" -H "unix://$DIR/$n/rswarm.sock" "$@"; }
for n in m1 m2 m3 w1; do
  for _ in $(seq 1 100); do rsw "$n" node ls >/dev/null 2>&1 && break; [[ -S $DIR/$n/rswarm.sock ]] && break; sleep 0.1; done
done
rsw m1 init --dispatcher-heartbeat 1s >/dev/null
MT=$(rsw m1 join-token manager -q); WT=$(rsw m1 join-token worker -q)
rsw m2 join --token "$MT" 127.0.0.1:24271
rsw m3 join --token "$MT" 127.0.0.1:24271
rsw w1 join --token "$WT" 127.0.0.1:24271
for _ in $(seq 1 100); do
  [[ $(rsw m1 node ls --format json | jq '[.[] | select(.state=="ready")] | length') == 4 ]] && break
  sleep 0.2
done
rsw m1 node ls
cat <<EOT

A four-node cluster runs on loopback. Talk to it with:
    export RSWARM_HOST=unix://$DIR/m1/rswarm.sock
    $BIN node ls
Stop it with: $0 down
EOT
