#!/usr/bin/env bash
# Stack deploy benchmark (issue 7): a 20-service stack deployed to a three-host `rswarm lab`
# (h1 manager, h2 and h3 workers) until it has converged. Run as root from the project root:
#
#   bench/stack.sh
#
# stdout: one `name seconds` line per run and figure, then the medians (everything else goes
# to stderr):
#   deploy_returned   `stack deploy -c FILE bench` -> the command has returned (the file
#                     loaded and converted, the network and the 20 services created)
#   converged         `stack deploy` -> every service has all its replicas running
#                     (`stack services bench --format json`: 20 services, each with
#                     replicas_running == replicas_desired, 30 tasks in all), polled every
#                     ~50 ms
#   rm_gone           `stack rm bench` -> no service, task, container or network of the stack
#                     left (not a figure of the issue; it is what separates the runs)
# The stack: 20 busybox services running `sleep 3600` (1 or 2 replicas, 30 tasks), all on one
# overlay network, every fifth with a published port (routing mesh), `stop_grace_period: 1s`
# (`sleep` as PID 1 ignores SIGTERM), an x- block merged with `<<` and `${VAR}` interpolation.
# The first run also pulls the image (1 MB) on every node; the image stays for the others.
#
# Environment:
#   RSWARM            the binary (default: target/release/rswarm, else target/debug/rswarm);
#                     copied into the temp dir first, so a rebuild during the run changes
#                     nothing
#   RSWBENCH_RUNS     runs (default 3)
#   RSWBENCH_SERVICES services in the stack (default 20; service n has 1 + n % 2 replicas)
#   RSWBENCH_KEEP     a directory: keep the stack file, `stack ps` JSON of each run, the run
#                     times (epoch seconds) and the lab's daemon logs there
#
# Isolation: the bench always runs inside a network namespace of its own,
# rswbench-stack-<pid>, which stands in for the machine (the lab's leg at 198.18.0.254 lives
# there), so it works while another lab holds 198.18.0.0/24 in the machine's namespace. All
# traffic stays inside the lab's namespaces. The lab uses the machine's containerd, with
# containerd namespaces of its own (rswlab-<id>-hN).
#
# On any exit (error, Ctrl-C, SIGTERM) it runs `lab down` (daemons, containers, namespaces,
# registry), removes its temp dir and deletes its network namespace. It kills no process it
# did not start.
set -euo pipefail
export LC_ALL=C

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'stack.sh: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (network namespaces, containerd)"
[[ -f bench/stack.sh ]] || die "run from the project root"

# ---- outside: tools, the binary, then the same script inside a fresh network namespace ----
if [[ -z ${RSWBENCH_STACK_INNER:-} ]]; then
  source bench/lib.sh
  find_rswarm
  "$RSWARM" stack --help >/dev/null 2>&1 || die "$RSWARM has no \`stack\` command (an old build?): rebuild it or set RSWARM"
  "$RSWARM" lab --help >/dev/null 2>&1 || die "$RSWARM has no \`lab\` command (an old build?): rebuild it or set RSWARM"
  missing=()
  for c in skopeo:skopeo busybox:busybox-static jq:jq nsenter:util-linux ctr:containerd \
           docker-registry:docker-registry; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  fi
  [[ -f ../shared/acceptance/lib.sh ]] || die "../shared/acceptance/lib.sh not found (build_busybox_image)"

  SANDBOX=rswbench-stack-$$
  OUTER_WORK=$(mktemp -d /tmp/rswbench-stack.XXXXXX)
  child=
  made_ns=0
  outer_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    # The inner run cleans up after itself; wait for it if a signal got here first.
    if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
      kill -TERM "$child" 2>/dev/null
      wait "$child" 2>/dev/null
    fi
    ((made_ns)) && ip netns del "$SANDBOX" 2>/dev/null
    rm -rf "$OUTER_WORK"
    exit "$rc"
  }
  trap outer_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  [[ ! -e /run/netns/$SANDBOX ]] || die "network namespace $SANDBOX exists already"
  ip netns add "$SANDBOX"
  made_ns=1
  ip -n "$SANDBOX" link set lo up
  # The binary is copied, so that a rebuild in target/ during the run cannot change it.
  cp "$RSWARM" "$OUTER_WORK/rswarm"
  say "binary $RSWARM (copied), inside network namespace $SANDBOX"
  RSWBENCH_STACK_INNER=1 RSWBENCH_STACK_WORK=$OUTER_WORK RSWARM=$OUTER_WORK/rswarm \
    nsenter --net="/run/netns/$SANDBOX" bash "$0" "$@" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=
  exit "$rc"
fi

# ---- inside the namespace --------------------------------------------------------------
RUNS=${RSWBENCH_RUNS:-3}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RSWBENCH_RUNS must be a positive integer"
KEEP=${RSWBENCH_KEEP:-}
[[ -z $KEEP ]] || { mkdir -p "$KEEP"; : >"$KEEP/runs"; }
WORK=$RSWBENCH_STACK_WORK
LAB=$WORK/lab
SERVICES=${RSWBENCH_SERVICES:-20}
[[ $SERVICES =~ ^[1-9][0-9]*$ ]] || die "RSWBENCH_SERVICES must be a positive integer"
NETWORK=benchnet
LIMIT=180   # seconds for any one wait

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $KEEP && -d $LAB ]]; then
    for h in h1 h2 h3; do [[ -f $LAB/$h/daemon.log ]] && cp "$LAB/$h/daemon.log" "$KEEP/$h-daemon.log"; done
  fi
  if ((rc != 0)) && [[ -d $LAB ]]; then
    for f in "$LAB"/h*/daemon.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  if [[ -f $LAB/lab.json ]] && ! "$RSWARM" lab down --dir "$LAB" >/dev/null 2>&1; then
    say "lab down failed: its record is kept in $LAB"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

R() { "$RSWARM" "$@"; }
now() { printf '%s' "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
result() { printf '%s %s\n' "$1" "$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# poll LIMIT_SECONDS DESCRIPTION COMMAND...: runs COMMAND every ~50 ms until it succeeds.
poll() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < end)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.05
  done
}

# ---- the lab and the image -------------------------------------------------------------
say "lab up: 3 hosts, 1 manager, in $LAB"
R lab up --nodes 3 --managers 1 --dir "$LAB" >&2
eval "$(R lab env h1 --dir "$LAB")"
export RSWARM_HOST
LAB_ID=$(jq -r .id "$LAB/lab.json")
[[ -n $LAB_ID && $LAB_ID != null ]] || die "no lab id in $LAB/lab.json"
# The lab's containerd: the machine's, or its own (started by `lab up` when none ran), whose
# socket is in the lab dir; ctr on the wrong socket waits ~10 s per call before failing.
CTR_SOCK=$(jq -r .containerd_socket "$LAB/lab.json")

# build_busybox_image from the acceptance helpers, in a subshell: lib.sh sets its own traps
# and temp dir (its $WORK), which its EXIT trap removes when the subshell ends.
IMAGE_DIR=$WORK/image
IMAGE=198.18.0.250:5000/busybox:latest
( source ../shared/acceptance/lib.sh; build_busybox_image "$IMAGE_DIR" ) >&2
skopeo copy -q --dest-tls-verify=false "oci:$IMAGE_DIR:latest" "docker://$IMAGE" >&2

# ---- the stack file --------------------------------------------------------------------
STACK=$WORK/stack.yml
TASKS=0
for n in $(seq 1 "$SERVICES"); do TASKS=$((TASKS + n % 2 + 1)); done
{
  cat <<'EOF2'
version: "3.8"

x-task: &task
  image: ${REGISTRY}/busybox:latest
  command: ["sleep", "3600"]
  stop_grace_period: 1s

services:
EOF2
  for i in $(seq -w 1 "$SERVICES"); do
    n=$((10#$i))
    cat <<EOF2
  s$i:
    <<: *task
    environment:
      SERVICE: s$i
      LOG_LEVEL: \${LOG_LEVEL:-info}
    labels:
      com.example.bench: stack
    networks:
      $NETWORK:
        aliases: [svc-$i]
    deploy:
      replicas: $((n % 2 + 1))
      restart_policy: {condition: on-failure}
EOF2
    if ((n % 5 == 0)); then
      printf '    ports:\n      - "%d:80"\n' "$((18000 + n))"
    fi
  done
  cat <<EOF2

networks:
  $NETWORK:
    driver: overlay
EOF2
} >"$STACK"
export REGISTRY=198.18.0.250:5000
R stack config -c "$STACK" >/dev/null || die "the stack file does not load"
[[ -z $KEEP ]] || cp "$STACK" "$KEEP/stack.yml"
say "stack: $SERVICES services, $TASKS tasks, network $NETWORK"

# ---- checks ----------------------------------------------------------------------------
# converged: every service of the stack exists and runs all its replicas.
converged() {
  local j
  j=$(R stack services bench --format json 2>/dev/null) || return 1
  jq -e --argjson n "$SERVICES" --argjson t "$TASKS" \
    'length == $n and all(.[]; .replicas_running == .replicas_desired)
     and (map(.replicas_running) | add) == $t' <<<"$j" >/dev/null
}
ctr_count() { # containers (with or without a task) in the lab's containerd namespaces
  local n=0 h c
  for h in 1 2 3; do
    c=$(ctr --address "$CTR_SOCK" -n "rswlab-$LAB_ID-h$h" containers ls -q 2>/dev/null | grep -c . || true)
    n=$((n + c))
  done
  printf '%s' "$n"
}
# gone: no service and no container left, and the network removed (`stack rm` removes it only
# once the manager has no task of the stack left).
gone() {
  [[ $(R stack services bench --format json 2>/dev/null | jq length) == 0 ]] || return 1
  R network ls --format json | jq -e --arg n "bench_$NETWORK" 'all(.[]; .name != $n)' >/dev/null || return 1
  [[ $(ctr_count) == 0 ]]
}

# ---- runs ------------------------------------------------------------------------------
declare -a DEPLOYED CONVERGED REMOVED
for run in $(seq 1 "$RUNS"); do
  say "run $run: stack deploy"
  t0=$(now)
  R stack deploy -c "$STACK" bench >"$WORK/deploy.out" 2>&1 || { cat "$WORK/deploy.out" >&2; die "stack deploy failed"; }
  t1=$(now)
  poll "$LIMIT" "the stack to converge" converged
  t2=$(now)
  DEPLOYED+=("$(secs "$t0" "$t1")")
  CONVERGED+=("$(secs "$t0" "$t2")")
  result "run${run}_deploy_returned" "${DEPLOYED[-1]}"
  result "run${run}_converged" "${CONVERGED[-1]}"
  [[ -z $KEEP ]] || R stack ps bench --format json >"$KEEP/ps-run$run.json" 2>/dev/null || true
  [[ $(ctr_count) == "$TASKS" ]] || say "note: containerd holds $(ctr_count) containers, expected $TASKS"

  say "run $run: stack rm"
  t3=$(now)
  R stack rm bench >/dev/null
  poll "$LIMIT" "the stack to be gone" gone
  t4=$(now)
  REMOVED+=("$(secs "$t3" "$t4")")
  result "run${run}_rm_gone" "${REMOVED[-1]}"
  [[ -z $KEEP ]] || printf '%s %s %s %s %s %s\n' "$run" "$t0" "$t1" "$t2" "$t3" "$t4" >>"$KEEP/runs"
done

result deploy_returned_median "$(printf '%s\n' "${DEPLOYED[@]}" | median)"
result converged_median "$(printf '%s\n' "${CONVERGED[@]}" | median)"
result rm_gone_median "$(printf '%s\n' "${REMOVED[@]}" | median)"
say "done"
