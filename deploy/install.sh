#!/usr/bin/env bash
# Installs rswarm on a real host (Debian 12 with systemd), as root:
#
#   deploy/install.sh [--binary PATH] [--advertise-addr IP] [--listen-addr IP:PORT]
#                     [--insecure-registry HOST:PORT]... [--no-start] [--root DIR]
#
#   - containerd and runc from Debian's packages (containerd's own unit enabled and started);
#   - the rswarm binary as /usr/local/bin/rswarm: --binary PATH, else this source tree's
#     target/release/rswarm, built with `cargo build --release -p rswarm` when missing;
#   - /etc/systemd/system/rswarm.service (`rswarm daemon`, ordered after containerd) and
#     /etc/default/rswarm with the daemon's flags (an existing one is kept: it is yours);
#   - enables and starts rswarm.service (not with --no-start).
#
# Then, once per cluster: `rswarm init --advertise-addr IP` on the first manager, and
# `rswarm join --token ... MANAGER_IP:2377` on every other host (`rswarm join-token worker`
# prints the command). deploy/uninstall.sh takes it all away again.
#
# --root DIR puts the files under DIR and skips packages and systemctl (for packaging, and
# to see what would be installed). Installing again upgrades the binary and the unit.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

binary='' advertise='' listen='0.0.0.0:2377' start=1 root=''
registries=()
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --advertise-addr) advertise=${2:?--advertise-addr needs an IP}; shift 2 ;;
    --listen-addr) listen=${2:?--listen-addr needs IP:PORT}; shift 2 ;;
    --insecure-registry) registries+=("${2:?--insecure-registry needs HOST:PORT}"); shift 2 ;;
    --no-start) start=0; shift ;;
    --root) root=${2:?--root needs a dir}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $(id -u) == 0 || -n $root ]] || die "run it as root"
root=${root%/}

if [[ -z $root ]]; then
  command -v apt-get >/dev/null || die "this script installs Debian packages: apt-get not found"
  missing=()
  for p in containerd runc; do [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null; apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null; }
  fi
fi

if [[ -z $binary ]]; then
  target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  binary=${target:-$SRC/target}/release/rswarm
  if [[ ! -x $binary ]]; then
    command -v cargo >/dev/null || die "no rswarm binary at $binary and no cargo to build one: pass --binary PATH"
    say "building rswarm (cargo build --release -p rswarm)"
    cargo build --release -p rswarm >&2
  fi
fi
[[ -x $binary ]] || die "$binary is not an executable"
"$binary" --version >/dev/null || die "$binary does not run"

say "installing $binary as $root/usr/local/bin/rswarm"
install -D -m 0755 "$binary" "$root/usr/local/bin/rswarm.new"
mv -f "$root/usr/local/bin/rswarm.new" "$root/usr/local/bin/rswarm"
install -D -m 0644 "$SRC/deploy/systemd/rswarm.service" "$root/etc/systemd/system/rswarm.service"
if [[ -e $root/etc/default/rswarm ]]; then
  say "keeping $root/etc/default/rswarm"
else
  opts="--data-dir /var/lib/rswarm --socket /run/rswarm/rswarm.sock --listen-addr $listen"
  [[ -n $advertise ]] && opts+=" --advertise-addr $advertise"
  for r in "${registries[@]}"; do opts+=" --insecure-registry $r"; done
  install -d "$root/etc/default"
  sed "s|^RSWARM_DAEMON_OPTS=.*|RSWARM_DAEMON_OPTS=\"$opts\"|" "$SRC/deploy/systemd/rswarm.default" >"$root/etc/default/rswarm"
  chmod 0644 "$root/etc/default/rswarm"
fi

if [[ -n $root ]]; then
  say "installed under $root (no packages, no systemctl)"
  exit 0
fi
if [[ ! -d /run/systemd/system ]]; then
  say "systemd is not running here: start containerd and then run"
  say "  /usr/local/bin/rswarm daemon \$RSWARM_DAEMON_OPTS   (from /etc/default/rswarm)"
  exit 0
fi
systemctl daemon-reload
systemctl enable --now containerd.service >/dev/null
if ((start)); then
  systemctl enable rswarm.service >/dev/null 2>&1
  systemctl restart rswarm.service
  for _ in $(seq 1 50); do [[ -S /run/rswarm/rswarm.sock ]] && break; sleep 0.2; done
  systemctl is-active --quiet rswarm.service || die "rswarm.service did not start: journalctl -u rswarm"
  say "rswarm.service is running"
else
  systemctl enable rswarm.service >/dev/null 2>&1
  say "rswarm.service is enabled (not started: --no-start)"
fi
cat >&2 <<EOT

Next, once per cluster:
  on the first manager:  rswarm init --advertise-addr THIS_HOST_IP
  on every other host:   rswarm join --token TOKEN FIRST_MANAGER_IP:2377
                         (rswarm join-token worker|manager prints the command)
Flags of the daemon: /etc/default/rswarm (then systemctl restart rswarm)
EOT
