# Sourced by the bench scripts, from the project root, after they define `die`.

# find_rswarm: sets RSWARM (absolute) to $RSWARM if given, else the release build, else the
# debug build.
find_rswarm() {
  if [[ -n ${RSWARM:-} ]]; then
    :
  elif [[ -x target/release/rswarm ]]; then
    RSWARM=target/release/rswarm
  elif [[ -x target/debug/rswarm ]]; then
    RSWARM=target/debug/rswarm
  else
    die "no rswarm binary: cargo build --release -p rswarm, or set RSWARM"
  fi
  RSWARM=$(realpath "$RSWARM")
}
