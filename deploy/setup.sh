#!/usr/bin/env bash
# Installs what building and testing rswarm needs on Debian 12, as root. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# tini: its static binary (/usr/bin/tini-static) is PID 1 of services run with --init.
pkgs=(build-essential pkg-config protobuf-compiler jq curl openssl python3 iproute2 nftables ca-certificates tini)
missing=()
for p in "${pkgs[@]}"; do [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
