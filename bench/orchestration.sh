#!/usr/bin/env bash
# End-to-end orchestration benchmark (issue 4): one rswarm node on loopback, real containerd,
# busybox from a registry on 127.0.0.1:5055. Run as root from the project root:
#
#   bench/orchestration.sh N
#
# stdout: exactly one `name seconds` line per measurement (everything else goes to stderr):
#   create_N_running                    `service create --detach --replicas N` -> N tasks running
#   scale_to_2N_running                 `service scale NAME=2N --detach`       -> 2N tasks running
#   rm_2N_gone                          `service rm NAME` -> no container left in containerd
#   recover_kill_quarter                a fresh N-replica service with --restart-delay 0s; a
#                                       quarter of its containers SIGKILLed (ctr, all at once)
#                                       -> N tasks running again, none of them a killed one
#   recover_kill_quarter_default_delay  the same with the default restart delay (5 s, Swarm's)
# The containers run `sh -c 'trap "exit 0" TERM; while true; do sleep 1; done'`.
#
# "Running" is the manager's view: tasks whose desired and observed state are both running
# (`service ls` replicas_running, the same count as `service ps --filter
# desired-state=running`), polled every ~50 ms.
#
# Environment:
#   RSWARM            the binary (default: target/release/rswarm, else target/debug/rswarm)
#   RSWBENCH_PORT     the daemon's cluster port on 127.0.0.1 (default 24911)
#   RSWBENCH_KEEP     a directory: keep the daemon log, `service ps` JSON after each phase and
#                     the phase start/end times (epoch seconds) there, for analysis
#   RSWARM_LOG        passed to the daemon (default: the daemon's own default)
#
# One run at a time: runs share the port and /tmp/rswarm-bench-infra.
#
# Sets up everything it needs (containerd and the registry through deploy/test-infra.sh, with
# RSWARM_TEST_INFRA_DIR=/tmp/rswarm-bench-infra so that `stop` stops only what this run
# started), and removes on any exit: the daemon, every task, container, image, lease,
# snapshot and content blob in its containerd namespace (rswbench-<pid>) and the namespace,
# its temp dir, and the containerd/registry processes it started.
set -euo pipefail
export LC_ALL=C

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'orchestration.sh: %s\n' "$*" >&2; exit 1; }

N=${1:-}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 N   (N replicas, a positive integer)" >&2; exit 64; }
((EUID == 0)) || die "run as root (containerd)"
[[ -x deploy/test-infra.sh ]] || die "run from the project root (deploy/test-infra.sh not found)"

source bench/lib.sh
find_rswarm
for c in jq ctr sha256sum; do command -v "$c" >/dev/null || die "$c is needed"; done

PORT=${RSWBENCH_PORT:-24911}
NS="rswbench-$$"
REG=127.0.0.1:5055
IMAGE="$REG/busybox:latest"
CMD='trap "exit 0" TERM; while true; do sleep 1; done'
INFRA_DIR=/tmp/rswarm-bench-infra
KEEP=${RSWBENCH_KEEP:-}
WORK=$(mktemp -d /tmp/rswbench.XXXXXX)
SOCK="$WORK/rswarm.sock"
DAEMON_PID=
INFRA_STARTED=0

infra() { RSWARM_TEST_INFRA_DIR=$INFRA_DIR deploy/test-infra.sh "$1" >&2; }

remove_namespace() {
  local ns=$1 id i keys
  # Not `ctr ... | grep -q`: grep -q exits at the first match, ctr then dies of SIGPIPE
  # writing the next name, and pipefail turns the match into a failure.
  grep -qx "$ns" <<<"$(ctr namespaces ls -q 2>/dev/null)" || return 0
  for id in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do
    ctr -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 0.5
  for id in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do
    ctr -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr -n "$ns" containers ls -q 2>/dev/null); do
    ctr -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr -n "$ns" images ls -q 2>/dev/null); do
    ctr -n "$ns" images rm --sync "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr -n "$ns" leases ls -q 2>/dev/null); do
    ctr -n "$ns" leases rm "$id" >/dev/null 2>&1 || true
  done
  # Snapshots go children first: remove what can be removed until none is left.
  for i in $(seq 1 10); do
    keys=$(ctr -n "$ns" snapshots ls 2>/dev/null | awk 'NR > 1 { print $1 }')
    [[ -n $keys ]] || break
    for id in $keys; do ctr -n "$ns" snapshots rm "$id" >/dev/null 2>&1 || true; done
  done
  for id in $(ctr -n "$ns" content ls -q 2>/dev/null); do
    ctr -n "$ns" content rm "$id" >/dev/null 2>&1 || true
  done
  ctr namespaces rm "$ns" >/dev/null 2>&1 || say "could not remove containerd namespace $ns"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  if [[ -n $KEEP && -f $WORK/daemon.log ]]; then cp "$WORK/daemon.log" "$KEEP/daemon.log"; fi
  if ((rc != 0)) && [[ -f $WORK/daemon.log ]]; then
    say "daemon log (last lines):"; tail -n 20 "$WORK/daemon.log" >&2
  fi
  remove_namespace "$NS"
  rm -rf "$WORK"
  ((INFRA_STARTED)) && infra stop
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rsw() { "$RSWARM" -H "unix://$SOCK" "$@"; }

now() { printf '%s' "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
result() { printf '%s %s\n' "$1" "$2"; }

# poll LIMIT_SECONDS DESCRIPTION COMMAND...: runs COMMAND every ~50 ms until it succeeds.
poll() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < end)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.05
  done
}

running() { # running SERVICE: its replicas_running
  rsw service ls --format json | jq --arg n "$1" '[.[] | select(.name == $n) | .replicas_running][0] // 0'
}
has_running() { [[ $(running "$1") == "$2" ]]; }
# running_except SERVICE IDFILE: running tasks (desired running) whose id is not in IDFILE.
running_except() {
  rsw service ps "$1" --filter desired-state=running --format json |
    jq --rawfile killed "$2" '($killed | split("\n")) as $k
      | [.[] | select(.state == "running" and (.id as $i | $k | index($i) | not))] | length'
}
has_running_except() { [[ $(running_except "$1" "$2") == "$3" ]]; }
ctr_running() { ctr -n "$NS" tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"' | grep -c . || true; }
ctr_empty() {
  [[ $(ctr_running) == 0 && -z $(ctr -n "$NS" containers ls -q 2>/dev/null) ]]
}
keep_ps() { # keep_ps SERVICE PHASE
  [[ -n $KEEP ]] || return 0
  rsw service ps "$1" --format json >"$KEEP/ps-$2.json" 2>/dev/null || true
}
mark() { # mark PHASE T0 T1
  [[ -n $KEEP ]] && printf '%s %s %s\n' "$1" "$2" "$3" >>"$KEEP/phases"
  return 0
}
container_id() { printf 'rswarm-task/%s' "$1" | sha256sum | cut -d' ' -f1; }

# A generous limit for each wait: a few seconds per task on a loaded two-core machine.
LIMIT=$((60 + 2 * N))

# --- setup -------------------------------------------------------------------------------
if [[ -n $KEEP ]]; then mkdir -p "$KEEP"; : >"$KEEP/phases"; fi
INFRA_STARTED=1
infra start
say "rswarm daemon on 127.0.0.1:$PORT, containerd namespace $NS, binary $RSWARM"
"$RSWARM" daemon --data-dir "$WORK/data" --socket "$SOCK" \
  --listen-addr "127.0.0.1:$PORT" --advertise-addr "127.0.0.1:$PORT" --hostname rswbench \
  --containerd-namespace "$NS" --insecure-registry "$REG" >>"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
sock_up() {
  kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited"
  [[ -S $SOCK ]] || return 1
  # Something accepts on the socket (the file alone may appear before the listener).
  if command -v python3 >/dev/null; then
    python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$SOCK" 2>/dev/null
  else
    sleep 0.5
  fi
}
poll 30 "the daemon's socket" sock_up
rsw init --advertise-addr "127.0.0.1:$PORT" >/dev/null
node_ready() { [[ $(rsw node ls --format json | jq '[.[] | select(.state == "ready")] | length') == 1 ]]; }
poll 30 "the node to be ready" node_ready

# --- create N -----------------------------------------------------------------------------
say "create: $N replicas"
t0=$(now)
rsw service create --detach --name bench --replicas "$N" "$IMAGE" sh -c "$CMD" >/dev/null
tc=$(now)
poll "$LIMIT" "$N running tasks" has_running bench "$N"
t1=$(now)
result create_N_running "$(secs "$t0" "$t1")"
say "create: the CLI returned after $(secs "$t0" "$tc") s"
mark create "$t0" "$t1"; keep_ps bench create

# --- scale to 2N --------------------------------------------------------------------------
say "scale: to $((2 * N))"
t0=$(now)
rsw service scale "bench=$((2 * N))" --detach >/dev/null
poll "$LIMIT" "$((2 * N)) running tasks" has_running bench "$((2 * N))"
t1=$(now)
result scale_to_2N_running "$(secs "$t0" "$t1")"
mark scale "$t0" "$t1"; keep_ps bench scale
[[ $(ctr_running) == "$((2 * N))" ]] || say "note: containerd runs $(ctr_running) tasks, expected $((2 * N))"

# --- rm -------------------------------------------------------------------------------------
say "rm: $((2 * N)) tasks"
t0=$(now)
rsw service rm bench >/dev/null
poll "$LIMIT" "every container gone from containerd" ctr_empty
t1=$(now)
result rm_2N_gone "$(secs "$t0" "$t1")"
mark rm "$t0" "$t1"

# --- recover after killing a quarter ------------------------------------------------------
# recover NAME RESULT [CREATE FLAGS...]: a fresh N-replica service; once it runs, SIGKILL a
# quarter of its containers at once and time until N tasks run again (none of them killed).
recover() {
  local name=$1 label=$2; shift 2
  local k=$(((N + 3) / 4)) ids killed="$WORK/killed-$name" pids=() id
  say "recover ($label): $N replicas, then SIGKILL $k containers"
  rsw service create --detach --name "$name" --replicas "$N" "$@" "$IMAGE" sh -c "$CMD" >/dev/null
  poll "$LIMIT" "$N running $name tasks" has_running "$name" "$N"
  mapfile -t ids < <(rsw service ps "$name" --filter desired-state=running --format json |
    jq -r '.[] | select(.state == "running") | .id' | head -n "$k")
  ((${#ids[@]} == k)) || die "expected $k running tasks to kill, found ${#ids[@]}"
  printf '%s\n' "${ids[@]}" >"$killed"
  t0=$(now)
  for id in "${ids[@]}"; do
    ctr -n "$NS" tasks kill -s SIGKILL "$(container_id "$id")" >/dev/null &
    pids+=("$!")
  done
  for id in "${pids[@]}"; do wait "$id" || die "ctr tasks kill failed"; done
  poll "$LIMIT" "$N running $name tasks again" has_running_except "$name" "$killed" "$N"
  t1=$(now)
  result "$label" "$(secs "$t0" "$t1")"
  mark "$label" "$t0" "$t1"; keep_ps "$name" "$label"
  rsw service rm "$name" >/dev/null
  poll "$LIMIT" "the $name containers gone" ctr_empty
}
recover rec0 recover_kill_quarter --restart-delay 0s
recover rec5 recover_kill_quarter_default_delay
say "done"
