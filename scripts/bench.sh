#!/usr/bin/env bash
# Benchmarks against the real programs (make bench): prints the figures the
# issues ask for. Set UNDERLAY_BENCH_N to change the container count.
source "$(dirname "$0")/lib.sh"
need_root
cd "$UNDERLAY_ROOT"

scripts/install-deps.sh
scripts/start-docker.sh
scripts/start-consul.sh
scripts/build.sh

export UNDERLAY_INTEGRATION=1
export UNDERLAY_BIN=$UNDERLAY_ROOT/bin/underlay
go test -run '^$' -bench . -benchtime 1x -timeout 30m ./...
