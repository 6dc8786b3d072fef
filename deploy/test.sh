#!/usr/bin/env bash
# The test command: formatting, lints, unit and integration tests, then every acceptance
# script of the capabilities built so far, against a fresh debug build. Run as root from
# anywhere; needs ../shared/acceptance beside the project (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
# containerd and a registry with a busybox image, for the executor's tests against the real
# containerd; stopped again (only what was started here) however the tests end.
bash deploy/test-infra.sh start
trap 'bash deploy/test-infra.sh stop' EXIT
export RSWARM_CONTAINERD_TESTS=1
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
export RSWARM_BIN="$target/debug/rswarm"
cargo nextest run --workspace --no-fail-fast
acc=../shared/acceptance
if [[ ! -d $acc ]]; then
  echo "test: $acc not found: acceptance scripts skipped" >&2
  exit 1
fi
# The acceptance scripts of resolved issues, in order; each later issue adds its own.
for s in control-plane; do
  echo "== acceptance: $s"
  RSWARM="$RSWARM_BIN" bash "$acc/$s.sh"
done
echo "all tests passed"
