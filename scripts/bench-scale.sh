#!/usr/bin/env bash
# Issue 14's scale figures (make bench-scale, make bench-ipam-sim): the
# benchmarks of internal/scalebench, with their grid from the environment
# (BENCH_SCALE_*, BENCH_IPAM_SIM_*; see DEVELOPERS.md). Usage:
#   scripts/bench-scale.sh scale|ipam-sim
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  scale) bench=BenchmarkIntegrationScale ;;
  ipam-sim) bench=BenchmarkIntegrationIPAMSim ;;
  *) die "usage: $0 scale|ipam-sim" ;;
esac
prepare_integration
go test -run '^$' -bench "^$bench\$" -benchtime 1x -timeout "${BENCH_SCALE_GO_TIMEOUT:-4h}" ./internal/scalebench/
