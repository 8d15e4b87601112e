#!/usr/bin/env bash
# Builds the underlay binary into bin/ and the test image (a FROM scratch image
# holding test/testserver) into the local dockerd. No registry is used.
source "$(dirname "$0")/lib.sh"
cd "$UNDERLAY_ROOT"

mkdir -p bin
version=$(underlay_version)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/underlay/underlay/internal/app.Version=$version" -o bin/underlay ./cmd/underlay
log "built bin/underlay ($version)"

if [ "${1:-}" = "--no-image" ]; then exit 0; fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/testserver" ./test/testserver
cp test/testserver/Dockerfile "$ctx/"
docker build -q -t underlay/testserver:dev "$ctx" >/dev/null
log "built image underlay/testserver:dev"
scripts/build-image.sh
