#!/usr/bin/env bash
# Benchmarks against the real programs (make bench): prints the figures the
# issues ask for. Set UNDERLAY_BENCH_N to change the container count.
source "$(dirname "$0")/lib.sh"
prepare_integration

go test -run '^$' -bench . -benchtime 1x -timeout 60m ./...
