# Shared helpers for underlay's scripts. Source it; do not run it.
set -euo pipefail

UNDERLAY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNDERLAY_STATE=${UNDERLAY_STATE:-/var/lib/underlay-dev}
CONSUL_VERSION=1.8.7
CONSUL_PREFIX=/opt/underlay/consul-$CONSUL_VERSION
# Docker engines built by build-engines.sh, one directory per release line.
ENGINES_ROOT=/opt/underlay/engines

# Go lives in /usr/local/go on the machines this project is built on.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi

# Builds name files by module path, not by where the checkout is: the Go
# build cache keys a package on its directory otherwise, so every fresh
# clone (CI's) compiled, vetted and fuzz-instrumented the whole module
# again (go vet alone: 1.5 min of a CI run; 2 s with the cache).
case " ${GOFLAGS:-} " in *" -trimpath "*) ;; *) export GOFLAGS="-trimpath${GOFLAGS:+ $GOFLAGS}" ;; esac

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (it installs packages and starts dockerd); try: sudo $0"
}

# install_packages installs Debian packages, quietly.
install_packages() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# engine_dir LINE is where build-engines.sh keeps the engine of a release line.
engine_dir() { printf '%s/%s\n' "$ENGINES_ROOT" "$1"; }

# engine_line VERSION is the release line of a dockerd version: 20.10 for
# 20.10.24+dfsg1, 29 for 29.8.0; empty for an empty VERSION.
engine_line() {
  case "$1" in
    "") ;;
    20.10.*) echo 20.10 ;;
    *) echo "${1%%.*}" ;;
  esac
}

# use_engine puts the Docker engine UNDERLAY_DOCKERD (20.10, 28 or 29;
# default 20.10, Debian's docker.io) first on PATH, building it when it is
# not cached, so that this script's dockerd, the lab's nodes and the tests'
# private daemons all run it.
use_engine() {
  local line=${UNDERLAY_DOCKERD:-20.10}
  # Drop an engine an earlier use_engine put first.
  PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v "^$ENGINES_ROOT/" | paste -sd: -)
  export PATH
  case "$line" in
    20.10) ;;
    28 | 29)
      "$UNDERLAY_ROOT/scripts/build-engines.sh" "$line"
      export PATH="$(engine_dir "$line")/bin:$PATH"
      ;;
    *) die "UNDERLAY_DOCKERD=$line: want 20.10, 28 or 29" ;;
  esac
  export UNDERLAY_DOCKERD=$line
}

# wait_for TIMEOUT_SECONDS DESCRIPTION CMD... retries CMD until it succeeds.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
}

# prepare_integration installs what is missing, starts dockerd (of the
# engine UNDERLAY_DOCKERD) and a Consul dev agent when none answers, builds,
# and switches the integration tests on: what both the test suite and the
# benchmarks stand on.
prepare_integration() {
  need_root
  cd "$UNDERLAY_ROOT"
  scripts/install-deps.sh
  use_engine
  scripts/start-docker.sh
  scripts/start-consul.sh
  scripts/build.sh
  reap_stale_test_labs
  export UNDERLAY_INTEGRATION=1
  export UNDERLAY_BIN=$UNDERLAY_ROOT/bin/underlay
  export CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
}

# reap_stale_test_labs takes down the labs a killed test run left behind
# (a test's lab is named t and 8 hex digits) whose every node is stopped:
# their records outlive the run, and would keep their underlay subnets
# taken, so that the same tests' labs could not come up. A lab with a node
# still running belongs to a run going on beside this one, and stays.
reap_stale_test_labs() {
  local dir name
  for dir in /var/lib/underlay/lab/t*/; do # lab.DefaultStateRoot
    name=$(basename "$dir")
    [[ $name =~ ^t[0-9a-f]{8}$ ]] || continue
    if "$UNDERLAY_ROOT/bin/underlay" lab status --name "$name" --json 2>/dev/null |
      grep -qE '"state": *"(running|degraded)"'; then
      continue
    fi
    log "lab $name: left by a killed test run, no node running: taking it down"
    "$UNDERLAY_ROOT/bin/underlay" lab down --name "$name" || log "lab $name: not taken down; its tests may fail on its subnet"
  done
}

# underlay_version prints the version every build stamps: VERSION's release
# when HEAD is its tag v<release> with nothing uncommitted, else
# <release>-dev.<commit>, with .dirty for uncommitted changes. It is also
# the image's tag; the Debian package's version has ~ for the first -.
underlay_version() {
  local release commit dirty=
  release=$(cat "$UNDERLAY_ROOT/VERSION")
  if ! commit=$(git -C "$UNDERLAY_ROOT" rev-parse --short=12 HEAD 2>/dev/null); then
    echo "$release-dev"
    return
  fi
  git -C "$UNDERLAY_ROOT" diff --quiet HEAD -- 2>/dev/null || dirty=.dirty
  if [ -z "$dirty" ] && git -C "$UNDERLAY_ROOT" tag --points-at HEAD | grep -qx "v$release"; then
    echo "$release"
  else
    echo "$release-dev.$commit$dirty"
  fi
}

# underlay_revision prints the full commit, for the image's labels.
underlay_revision() { git -C "$UNDERLAY_ROOT" rev-parse HEAD 2>/dev/null || echo unknown; }

# third_party_licenses prints the licence files (and NOTICE files) of every
# Go module linked into bin/underlay, each under its module's name.
third_party_licenses() {
  local path version dir f
  printf '\n\nunderlay links the following Go modules, under these licences.\n'
  (cd "$UNDERLAY_ROOT" && go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/underlay) |
    sort -u | while read -r path version dir; do
      [ -n "$path" ] || continue
      printf '\n================================================================================\n%s %s\n\n' "$path" "$version"
      found=
      for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
        [ -f "$f" ] || continue
        cat "$f"
        found=1
      done
      [ -n "$found" ] || die "no licence file in $dir ($path)"
    done
}
