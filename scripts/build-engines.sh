#!/usr/bin/env bash
# Builds the Docker engines underlay is tested against, from the Go module
# proxy (no registry or download site is reachable here), and caches them
# under /opt/underlay/engines/<line>/bin, one directory per release line:
#
#   28  dockerd + docker-proxy 28.5.2 (github.com/docker/docker, vendor.mod);
#       runs with Debian's containerd and runc
#   29  dockerd + docker-proxy from github.com/moby/moby/v2 (the 29 line),
#       with containerd 2 and runc 1.3 built beside it: 29 puts containers in
#       a time namespace that Debian's runc 1.1 cannot create
#
# 20.10 is Debian's docker.io and needs no build. An engine whose stamp
# matches what this script would build is reused.
#
# Usage: build-engines.sh [28] [29]   (default: both)
source "$(dirname "$0")/lib.sh"
need_root

DOCKER28_MODULE=github.com/docker/docker@v28.5.2+incompatible
MOBY29_MODULE=github.com/moby/moby/v2@v2.0.0-beta.24
CONTAINERD2_MODULE=github.com/containerd/containerd/v2@v2.3.5
RUNC_MODULE=github.com/opencontainers/runc@v1.3.7

export GOFLAGS=-mod=mod GOTOOLCHAIN=local

# module_dir MODULE@VERSION downloads a module into the module cache and
# prints a private, writable copy of its source.
module_dir() {
  local dir copy
  dir=$(cd / && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download $1 gave no directory"
  copy=$(mktemp -d "${TMPDIR:-/tmp}/ul-engine-src.XXXXXX")
  cp -a "$dir/." "$copy/"
  chmod -R u+w "$copy"
  printf '%s\n' "$copy"
}

# fresh LINE STAMP tells whether the cached engine was built from STAMP.
fresh() { [ "$(cat "$(engine_dir "$1")/stamp" 2>/dev/null)" = "$2" ] && [ -x "$(engine_dir "$1")/bin/dockerd" ]; }

build_28() {
  local stamp="$DOCKER28_MODULE" out src version
  fresh 28 "$stamp" && { log "engine 28 cached ($stamp)"; return; }
  out=$(engine_dir 28)
  log "building dockerd 28 from $DOCKER28_MODULE (about 3 minutes)"
  src=$(module_dir "$DOCKER28_MODULE")
  version=${DOCKER28_MODULE#*@v}
  version=${version%+incompatible}
  (
    cd "$src"
    # The module has vendor.mod instead of go.mod and its zip has no vendor/.
    rm -rf vendor
    cp vendor.mod go.mod
    cp vendor.sum go.sum
    rm -rf "$out.new" && mkdir -p "$out.new/bin"
    CGO_ENABLED=0 go build -trimpath \
      -tags 'exclude_graphdriver_btrfs exclude_graphdriver_devicemapper netgo osusergo' \
      -ldflags "-s -w -X github.com/docker/docker/dockerversion.Version=$version" \
      -o "$out.new/bin/" ./cmd/dockerd ./cmd/docker-proxy
  )
  rm -rf "$src"
  finish 28 "$stamp"
}

build_29() {
  local stamp="$MOBY29_MODULE $CONTAINERD2_MODULE $RUNC_MODULE" out src version
  fresh 29 "$stamp" && { log "engine 29 cached ($stamp)"; return; }
  out=$(engine_dir 29)
  rm -rf "$out.new" && mkdir -p "$out.new/bin"

  log "building dockerd 29 from $MOBY29_MODULE (about 2 minutes)"
  src=$(module_dir "$MOBY29_MODULE")
  # The module's own release file names the Docker version it is.
  version=$(sed -n 's/^ *last: *"\(.*\)"/\1/p' "$src/releases/versions.yaml")
  [ -n "$version" ] || die "no version in $MOBY29_MODULE releases/versions.yaml"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -tags 'exclude_graphdriver_btrfs netgo osusergo' \
    -ldflags "-s -w -X github.com/moby/moby/v2/dockerversion.Version=$version" \
    -o "$out.new/bin/" ./cmd/dockerd ./cmd/docker-proxy)
  rm -rf "$src"

  log "building containerd from $CONTAINERD2_MODULE"
  src=$(module_dir "$CONTAINERD2_MODULE")
  version=${CONTAINERD2_MODULE#*@}
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -tags no_btrfs \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$version" \
    -o "$out.new/bin/" ./cmd/containerd ./cmd/containerd-shim-runc-v2 ./cmd/ctr)
  rm -rf "$src"

  log "building runc from $RUNC_MODULE"
  [ -e /usr/include/seccomp.h ] || install_packages libseccomp-dev
  src=$(module_dir "$RUNC_MODULE")
  version=${RUNC_MODULE#*@v}
  (cd "$src" && CGO_ENABLED=1 go build -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=$version" -o "$out.new/bin/runc" .)
  rm -rf "$src"
  finish 29 "$stamp"
}

# finish LINE STAMP swaps the new build in.
finish() {
  local out
  out=$(engine_dir "$1")
  printf '%s\n' "$2" >"$out.new/stamp"
  rm -rf "$out"
  mv "$out.new" "$out"
  log "engine $1 ready: $("$out/bin/dockerd" --version)"
}

lines=("$@")
[ ${#lines[@]} -gt 0 ] || lines=(28 29)
for line in "${lines[@]}"; do
  case "$line" in
    20.10) ;; # Debian's docker.io
    28) build_28 ;;
    29) build_29 ;;
    *) die "unknown engine $line: want 20.10, 28 or 29" ;;
  esac
done
