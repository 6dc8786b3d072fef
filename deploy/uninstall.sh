#!/usr/bin/env bash
# Takes away what deploy/install.sh installed, as root:
#
#   deploy/uninstall.sh [--purge] [--root DIR]
#
#   - stops and disables rswarm.service; removes its unit and /usr/local/bin/rswarm;
#   - with --purge, also the node's state (/var/lib/rswarm, its certificates and Raft data),
#     /etc/default/rswarm, and the node's containers (containerd namespace `rswarm`).
#     Leave the cluster first (`rswarm leave`, or `rswarm node rm` on a manager) so that
#     the others do not wait for this node.
#
# containerd and runc stay installed (other things may use them):
# `apt-get remove containerd runc` removes them.
# --root DIR acts on files under DIR only (no systemctl, no containerd).
set -euo pipefail

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'uninstall: %s\n' "$*" >&2; exit 1; }

purge=0 root=''
while (($#)); do
  case $1 in
    --purge) purge=1; shift ;;
    --root) root=${2:?--root needs a dir}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $(id -u) == 0 || -n $root ]] || die "run it as root"
root=${root%/}

if [[ -z $root && -d /run/systemd/system ]]; then
  if systemctl list-unit-files rswarm.service >/dev/null 2>&1; then
    systemctl disable --now rswarm.service >/dev/null 2>&1 || true
  fi
fi
rm -f "$root/etc/systemd/system/rswarm.service" "$root/usr/local/bin/rswarm"
[[ -z $root && -d /run/systemd/system ]] && systemctl daemon-reload
say "removed rswarm.service and /usr/local/bin/rswarm"

if ((purge)); then
  if [[ -z $root ]] && command -v ctr >/dev/null && ctr version >/dev/null 2>&1 \
    && ctr namespaces ls -q | grep -qx rswarm; then
    say "removing the node's containers (containerd namespace rswarm)"
    for c in $(ctr -n rswarm tasks ls -q 2>/dev/null); do ctr -n rswarm tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $(ctr -n rswarm tasks ls -q 2>/dev/null); do ctr -n rswarm tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr -n rswarm containers ls -q 2>/dev/null); do ctr -n rswarm containers delete "$c" >/dev/null 2>&1 || true; done
    for i in $(ctr -n rswarm images ls -q 2>/dev/null); do ctr -n rswarm images rm --sync "$i" >/dev/null 2>&1 || true; done
    ctr namespaces rm rswarm >/dev/null 2>&1 || say "containerd namespace rswarm is not empty yet: ctr -n rswarm ..."
  fi
  rm -rf "$root/var/lib/rswarm" "$root/run/rswarm"
  rm -f "$root/etc/default/rswarm"
  say "purged /var/lib/rswarm and /etc/default/rswarm"
else
  say "kept /var/lib/rswarm and /etc/default/rswarm (--purge removes them)"
fi
