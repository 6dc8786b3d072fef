#!/usr/bin/env bash
# Overlay networking benchmark (issue 6), on a three-host `rswarm lab` (h1 manager, h2 and h3
# workers, each a network namespace; one overlay network, 10.61.0.0/24). Run as root from the
# project root:
#
#   bench/network.sh
#
# stdout: a markdown table of medians and ratios (everything else goes to stderr):
#   1. TCP throughput, one iperf3 stream (the host's iperf3 run inside the namespaces with
#      nsenter), task on h1 -> task on h2 over the overlay (their overlay addresses), against
#      h1's namespace -> h2's namespace directly (198.18.0.11 -> 198.18.0.12). Runs alternate
#      between the two paths.
#   2. How long a new task's address takes to be reachable from every other host: client
#      tasks run on h2 and h3; a one-replica busybox httpd service constrained to h1 is
#      created; from each client's namespace a prober (started before the service, and
#      given the address as soon as `service ps` shows it) opens a TCP connection to the new
#      task's address and port 80 every ~10 ms. The clock starts at the task's running
#      timestamp (`service ps` JSON `timestamp` of the running state, set by h1's agent) and
#      stops when BOTH clients have connected ("accepts"); "answers" stops it at the first
#      answer of any kind, SYN-ACK or RST (the address is reachable, httpd may not listen
#      yet). The service is then removed and created again, RSWBENCH_REACH_RUNS times.
#   3. Connection rate through a service VIP against a task's own address: a busybox httpd
#      service with 2 replicas (h1 and h2), `ab` without keep-alive from a client task on h3
#      (the host's ab, inside the client's namespace), runs alternating between the two.
#
# The busybox containers only own the namespaces (`sleep 3600`, httpd); the measuring tools
# are the host's, so each figure measures the kernel data path that rswarm set up.
#
# Environment:
#   RSWARM               the binary (default: target/release/rswarm, else target/debug/rswarm)
#   RSWBENCH_TP_RUNS     iperf3 runs per path (default 5)
#   RSWBENCH_TP_SECS     seconds per iperf3 run (default 5; plus 1 s of warm-up not counted)
#   RSWBENCH_REACH_RUNS  reachability runs (default 5)
#   RSWBENCH_AB_RUNS     ab runs per target (default 3)
#   RSWBENCH_AB_N        requests per ab run (default 3000; keep the total of about
#                        6 x N below the client's 28,232 ephemeral ports: beyond, ports whose
#                        connections are still in TIME_WAIT come back and cost 1 s SYN retries)
#   RSWBENCH_AB_C        concurrent connections of ab (default 8)
#   RSWBENCH_KEEP        a directory: keep the raw results (iperf3 JSON, ab output, probe
#                        times) and the lab's daemon logs there
#
# Traffic stays inside the lab's namespaces (198.18.0.0/24 and the overlay subnet) and on
# loopback. If 198.18.0.0/24 is already in use on this machine (another lab is up), the whole
# bench runs inside a network namespace of its own, rswbench-net, which stands in for the
# machine and is deleted at the end. iperf3, apache2-utils (ab), skopeo and busybox-static
# are installed with apt-get if missing (before entering that namespace).
#
# On any exit (error, Ctrl-C, SIGTERM) it stops the iperf3 servers and probers it started,
# runs `lab down` (namespaces, daemons, containers, registry) and removes its temp dir.
set -euo pipefail
export LC_ALL=C

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'network.sh: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (network namespaces, containerd)"
[[ -f bench/network.sh ]] || die "run from the project root"

source bench/lib.sh
find_rswarm
export RSWARM
"$RSWARM" lab --help >/dev/null 2>&1 || die "$RSWARM has no \`lab\` command (an old build?): rebuild it or set RSWARM"

# ---- outside the sandbox: tools, then (if 198.18.0.0/24 is taken) re-run in rswbench-net ----
if [[ -z ${RSWBENCH_INNER:-} ]]; then
  missing=()
  for c in iperf3:iperf3 ab:apache2-utils skopeo:skopeo busybox:busybox-static jq:jq \
           nsenter:util-linux python3:python3 curl:curl ss:iproute2; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  fi
  if ip -4 -o addr show | grep -q ' 198\.18\.0\.'; then
    SANDBOX=rswbench-net
    [[ ! -e /run/netns/$SANDBOX ]] || die "network namespace $SANDBOX exists: another run? (ip netns del $SANDBOX)"
    say "198.18.0.0/24 is in use on this machine: running inside network namespace $SANDBOX"
    ip netns add "$SANDBOX"
    trap 'ip netns del "$SANDBOX" 2>/dev/null || true' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ip -n "$SANDBOX" link set lo up
    # In the background, so that Ctrl-C or SIGTERM here reaches it at once (as SIGTERM: a
    # background job ignores SIGINT) and it can clean up before the namespace goes.
    RSWBENCH_INNER=1 nsenter --net="/run/netns/$SANDBOX" bash "$0" "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
    rc=0
    wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do rc=0; wait "$child" || rc=$?; done
    exit "$rc"
  fi
fi

TP_RUNS=${RSWBENCH_TP_RUNS:-5}
TP_SECS=${RSWBENCH_TP_SECS:-5}
REACH_RUNS=${RSWBENCH_REACH_RUNS:-5}
AB_RUNS=${RSWBENCH_AB_RUNS:-3}
AB_N=${RSWBENCH_AB_N:-3000}
AB_C=${RSWBENCH_AB_C:-8}
KEEP=${RSWBENCH_KEEP:-}
[[ -z $KEEP ]] || mkdir -p "$KEEP"

SUBNET=10.61.0.0/24
NET=benchnet
IMG=198.18.0.250:5000/busybox:latest
HTTPD='mkdir -p /www; echo hi > /www/index.html; exec httpd -f -p 80 -h /www'
WORK=$(mktemp -d /tmp/rswbench-net.XXXXXX)
LAB=$WORK/lab
PIDS=()   # iperf3 servers and probers started here

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n $KEEP && -d $LAB ]]; then
    for h in h1 h2 h3; do [[ -f $LAB/$h/daemon.log ]] && cp "$LAB/$h/daemon.log" "$KEEP/$h-daemon.log"; done
  fi
  if ((rc != 0)) && [[ -d $LAB ]]; then
    for f in "$LAB"/h*/daemon.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  if [[ -f $LAB/lab.json ]] && ! "$RSWARM" lab down --dir "$LAB" >/dev/null 2>&1; then
    say "lab down failed: its record is kept in $LAB"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

R() { "$RSWARM" "$@"; }
now_ms() { local t=$EPOCHREALTIME; printf '%s' "$((${t/./} / 1000))"; }
# poll LIMIT_SECONDS DESCRIPTION COMMAND...: runs COMMAND every ~10 ms until it succeeds.
poll() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${limit}s waiting for: $what"
    sleep 0.01
  done
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v v="$1" -v d="${2:-2}" 'BEGIN { printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
list() { local d=$1 out= v; shift; for v in "$@"; do out+="${out:+, }$(fmt "$v" "$d")"; done; printf '%s' "$out"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

running_tasks() { R service ps "$1" --filter desired-state=running --format json | jq -c '[.[] | select(.state == "running")]'; }
has_running() { [[ $(running_tasks "$1" | jq length) == "$2" ]]; }
# task_ns SERVICE [NODE]: the network namespace file of SERVICE's running task (on NODE).
task_ns() {
  local t; t=$(running_tasks "$1" | jq -r --arg n "${2:-}" '[.[] | select($n == "" or .node == $n)][0] | "\(.node) \(.id)"')
  local f="$LAB/${t% *}/data/net/netns/${t#* }"
  [[ -e $f ]] || die "no namespace file $f for a task of $1"
  printf '%s' "$f"
}
task_ip() { running_tasks "$1" | jq -r --arg n "${2:-}" '[.[] | select($n == "" or .node == $n)][0].addresses[0] | split("/")[0]'; }
host_ns() { printf '/run/netns/%s' "$(jq -r --arg h "$1" '.netns[] | select(endswith("-" + $h))' "$LAB/lab.json")"; }
# listening NSFILE PORT: something listens on TCP PORT in that namespace.
listening() { [[ -n $(nsenter --net="$1" ss -Hltn "sport = :$2") ]]; }

say "lab up ($RSWARM)"
R lab up --nodes 3 --managers 1 --dir "$LAB" >&2
eval "$(R lab env h1 --dir "$LAB")"
say "busybox image -> $IMG"
# The same image as ../shared/acceptance/lib.sh builds: /bin/busybox and its applets.
source deploy/oci-image.sh
build_busybox_image "$WORK/image"
skopeo copy -q --dest-tls-verify=false "oci:$WORK/image:latest" "docker://$IMG" >&2

say "overlay network $NET ($SUBNET); a sleeper task on each host"
R network create -d overlay --subnet "$SUBNET" "$NET" >/dev/null
for h in h1 h2 h3; do
  R service create --detach --name "s$h" --network "$NET" --constraint "node.hostname==$h" "$IMG" sleep 3600 >/dev/null
done
for h in h1 h2 h3; do poll 120 "s$h running" has_running "s$h" 1; done
NS_T1=$(task_ns sh1); NS_T2=$(task_ns sh2); NS_T3=$(task_ns sh3)
IP_T2=$(task_ip sh2)
NS_H1=$(host_ns h1); NS_H2=$(host_ns h2)
[[ -e $NS_H1 && -e $NS_H2 ]] || die "host namespaces not found: $NS_H1 $NS_H2"
say "tasks: sh1 $(task_ip sh1), sh2 $IP_T2, sh3 $(task_ip sh3)"
poll 30 "sh1 pings sh2 over the overlay" R exec sh1 -- ping -c 1 -W 1 "$IP_T2"

# ---- 1. TCP throughput ----
say "1. TCP throughput: $TP_RUNS x ${TP_SECS}s per path, overlay and underlay alternating (load $(loadavg))"
nsenter --net="$NS_T2" iperf3 -s -p 5201 -B "$IP_T2" >"$WORK/iperf3-overlay-server.log" 2>&1 &
PIDS+=("$!")
nsenter --net="$NS_H2" iperf3 -s -p 5201 -B 198.18.0.12 >"$WORK/iperf3-underlay-server.log" 2>&1 &
PIDS+=("$!")
poll 10 "iperf3 server in sh2's namespace" listening "$NS_T2" 5201
poll 10 "iperf3 server in h2's namespace" listening "$NS_H2" 5201
# iperf_run NAME NSFILE SERVER_IP: one run; prints Gbit/s received.
iperf_run() {
  local out="$WORK/iperf3-$1-$2.json"
  nsenter --net="$3" iperf3 -c "$4" -p 5201 -t "$TP_SECS" -O 1 -J --connect-timeout 3000 >"$out" \
    || die "iperf3 $1 run $2 failed: $(jq -r '.error // empty' "$out" 2>/dev/null)"
  [[ -z $KEEP ]] || cp "$out" "$KEEP/"
  jq '.end.sum_received.bits_per_second / 1e9' "$out"
}
TP_O=(); TP_U=()
for i in $(seq 1 "$TP_RUNS"); do
  o=$(iperf_run overlay "$i" "$NS_T1" "$IP_T2"); TP_O+=("$o")
  u=$(iperf_run underlay "$i" "$NS_H1" 198.18.0.12); TP_U+=("$u")
  say "   run $i: overlay $(fmt "$o") Gbit/s, underlay $(fmt "$u") Gbit/s"
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
TP_O_MED=$(median "${TP_O[@]}"); TP_U_MED=$(median "${TP_U[@]}")

# ---- 2. Reachability of a new task ----
say "2. reachability of a new task on h1 from h2 and h3: $REACH_RUNS runs (load $(loadavg))"
# The prober, started in each client's namespace before the service is created (Python
# takes ~0.1 s to start here, longer than the task takes to become reachable): it says it is
# ready by creating READY_FILE, waits for the address in IP_FILE (written as soon as
# `service ps` shows it, before the task's namespace exists), then makes one TCP connect
# attempt every ~10 ms (a fresh socket each time, 20 ms timeout) and prints
# "<first answer ms> <first accept ms>" (epoch ms). An answer is a SYN-ACK or an RST
# (connection refused: the address is reachable, httpd does not listen yet).
cat >"$WORK/probe.py" <<'EOF'
import socket, sys, time
ip_file, ready_file, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
end = time.time() + limit
open(ready_file, "w").close()
ip = None
while not ip:
    if time.time() > end:
        print("timeout"); sys.exit(1)
    try:
        with open(ip_file) as f:
            ip = f.read().strip()
    except FileNotFoundError:
        time.sleep(0.002)
answered = None
while time.time() < end:
    start = time.time()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.02)
    try:
        s.connect((ip, 80))
        ok = True
    except ConnectionRefusedError:
        ok = False
        answered = answered or time.time()
    except OSError:
        ok = False
    finally:
        s.close()
    if ok:
        t = time.time()
        print(int((answered or t) * 1000), int(t * 1000))
        sys.exit(0)
    time.sleep(max(0.0, 0.01 - (time.time() - start)))
print("timeout")
sys.exit(1)
EOF
# The clients' kernels would otherwise retry an unanswered ARP request only once a second
# (retrans_time_ms = 1000), so a probe sent before the address is programmed would wait up
# to a second for the next try. 10 ms makes ARP retry at the probing rate. The neighbour
# entries are flushed before each run (the same address comes back with the same MAC).
for f in "$NS_T2" "$NS_T3"; do
  dev=$(nsenter --net="$f" ip -o -4 addr show to "$SUBNET" | awk '{print $2; exit}')
  nsenter --net="$f" sysctl -qw "net.ipv4.neigh.$dev.retrans_time_ms=10"
done
probe_gone() { ! R service ps probe --format json >/dev/null 2>&1 && [[ ! -e $LAB/h1/data/net/netns/$1 ]]; }
REACH=(); ANSWER=(); TO_RUN=()
for i in $(seq 1 "$REACH_RUNS"); do
  for f in "$NS_T2" "$NS_T3"; do nsenter --net="$f" ip neigh flush to "$SUBNET" 2>/dev/null || true; done
  rm -f "$WORK"/ip "$WORK"/ready-*
  nsenter --net="$NS_T2" python3 "$WORK/probe.py" "$WORK/ip" "$WORK/ready-h2" 90 >"$WORK/probe-h2-$i" &
  p2=$!; PIDS+=("$p2")
  nsenter --net="$NS_T3" python3 "$WORK/probe.py" "$WORK/ip" "$WORK/ready-h3" 90 >"$WORK/probe-h3-$i" &
  p3=$!; PIDS+=("$p3")
  poll 10 "probers ready" test -e "$WORK/ready-h2" -a -e "$WORK/ready-h3"
  t_create=$(now_ms)
  R service create --detach --name probe --network "$NET" --constraint 'node.hostname==h1' "$IMG" sh -c "$HTTPD" >/dev/null
  # The address is allocated before the task is even assigned: hand it to the probers.
  ip= ; end=$((SECONDS + 60))
  until [[ -n $ip ]]; do
    ((SECONDS < end)) || die "probe task got no address"
    ip=$(R service ps probe --format json | jq -r '[.[] | select(.desired_state == "running") | .addresses[0] // empty][0] // empty | split("/")[0]')
    [[ -n $ip ]] || sleep 0.01
  done
  t_ip=$(now_ms)
  echo "$ip" >"$WORK/ip.tmp" && mv "$WORK/ip.tmp" "$WORK/ip"
  task=; t_run=; end=$((SECONDS + 60))
  until [[ -n $t_run ]]; do
    ((SECONDS < end)) || die "probe task not running after 60 s"
    read -r task t_run < <(R service ps probe --format json | jq -r '[.[] | select(.state == "running")][0] // empty | "\(.id) \(.timestamp)"') || true
    [[ -n $t_run ]] || sleep 0.01
  done
  wait "$p2" || die "run $i: the client on h2 never reached $ip:80"
  wait "$p3" || die "run $i: the client on h3 never reached $ip:80"
  PIDS=("${PIDS[@]:0:${#PIDS[@]}-2}")
  read -r a2 c2 <"$WORK/probe-h2-$i"; read -r a3 c3 <"$WORK/probe-h3-$i"
  c=$((c2 > c3 ? c2 : c3)); a=$((a2 > a3 ? a2 : a3))
  REACH+=("$((c - t_run))"); ANSWER+=("$((a - t_run))"); TO_RUN+=("$((t_run - t_create))")
  say "   run $i: $ip known $((t_ip - t_create)) ms and running $((t_run - t_create)) ms after create; accepts from h2 +$((c2 - t_run)) ms, h3 +$((c3 - t_run)) ms; answers from h2 +$((a2 - t_run)) ms, h3 +$((a3 - t_run)) ms"
  [[ -z $KEEP ]] || echo "run=$i ip=$ip create=$t_create ip_known=$t_ip running=$t_run h2_answer=$a2 h2_accept=$c2 h3_answer=$a3 h3_accept=$c3" >>"$KEEP/reachability.txt"
  R service rm probe >/dev/null
  poll 60 "probe service and its namespace gone" probe_gone "$task"
done
REACH_MED=$(median "${REACH[@]}"); ANSWER_MED=$(median "${ANSWER[@]}"); TO_RUN_MED=$(median "${TO_RUN[@]}")

# ---- 3. Connection rate: VIP against a task's address ----
say "3. connection rate from h3: $AB_RUNS runs of ab -n $AB_N -c $AB_C per target (load $(loadavg))"
R service create --detach --name web --replicas 2 --replicas-max-per-node 1 --network "$NET" \
  --constraint 'node.hostname!=h3' "$IMG" sh -c "$HTTPD" >/dev/null
poll 120 "web x2 running" has_running web 2
VIP=$(R service inspect web --format json | jq -r --arg n "$NET" '.[0].endpoint.virtual_ips[] | select(.network_name == $n) | .addr | split("/")[0]')
WEB1=$(task_ip web h1); WEB2=$(task_ip web h2)
[[ -n $VIP && -n $WEB1 && -n $WEB2 ]] || die "web: VIP '$VIP', tasks '$WEB1' '$WEB2'"
say "   VIP $VIP, tasks $WEB1 (h1) and $WEB2 (h2)"
get() { nsenter --net="$NS_T3" curl -fs -m 1 "http://$1/" | grep -q hi; }
for t in "$VIP" "$WEB1" "$WEB2"; do poll 30 "http://$t/ answers from sh3" get "$t"; done
# ab_run TARGET NAME RUN: prints requests/s; refuses a run with failed requests.
ab_run() {
  local out="$WORK/ab-$2-$3.txt"
  nsenter --net="$NS_T3" ab -q -n "$AB_N" -c "$AB_C" "http://$1/" >"$out" 2>&1 || die "ab $2 run $3 failed: $(tail -n 3 "$out")"
  [[ -z $KEEP ]] || cp "$out" "$KEEP/"
  local failed non2xx
  failed=$(awk '/^Failed requests:/ {print $3}' "$out"); non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$out")
  [[ $failed == 0 && -z $non2xx ]] || die "ab $2 run $3: $failed failed, ${non2xx:-0} non-2xx responses"
  local longest; longest=$(awk '/\(longest request\)/ {print $2}' "$out")
  ((${longest:-0} < 1000)) || say "   ab $2 run $3: a request took $longest ms (a SYN retry?): that run's rate is low"
  awk '/^Requests per second:/ {print $4}' "$out"
}
nsenter --net="$NS_T3" ab -q -n 500 -c "$AB_C" "http://$VIP/" >/dev/null 2>&1 || true   # warm-up
AB_V=(); AB_D=()
for i in $(seq 1 "$AB_RUNS"); do
  v=$(ab_run "$VIP" vip "$i"); AB_V+=("$v")
  d=$(ab_run "$WEB1" direct "$i"); AB_D+=("$d")
  say "   run $i: VIP $(fmt "$v" 0) req/s, task $WEB1 $(fmt "$d" 0) req/s"
done
AB_V_MED=$(median "${AB_V[@]}"); AB_D_MED=$(median "${AB_D[@]}")
say "done (load $(loadavg))"

cat <<EOF
| figure | median | runs |
| --- | ---: | --- |
| TCP throughput, overlay: task h1 → task h2 (1 stream, ${TP_SECS} s) | $(fmt "$TP_O_MED") Gbit/s | $(list 2 "${TP_O[@]}") |
| TCP throughput, underlay: h1 → h2 (198.18.0.11 → .12) | $(fmt "$TP_U_MED") Gbit/s | $(list 2 "${TP_U[@]}") |
| **ratio overlay / underlay** | **$(ratio "$TP_O_MED" "$TP_U_MED")** | |
| new task on h1: running → accepts from h2 and h3 | $REACH_MED ms | $(list 0 "${REACH[@]}") |
| new task on h1: running → answers (SYN-ACK or RST) from h2 and h3 | $ANSWER_MED ms | $(list 0 "${ANSWER[@]}") |
| (new task: service create → running) | $TO_RUN_MED ms | $(list 0 "${TO_RUN[@]}") |
| connections/s from h3 via the VIP (2 tasks, h1 + h2; ab -c $AB_C, no keep-alive) | $(fmt "$AB_V_MED" 0) | $(list 0 "${AB_V[@]}") |
| connections/s from h3 to the task on h1 directly | $(fmt "$AB_D_MED" 0) | $(list 0 "${AB_D[@]}") |
| **ratio VIP / direct** | **$(ratio "$AB_V_MED" "$AB_D_MED")** | |
EOF
