#!/usr/bin/env bash
# The whole test suite on real Docker and Consul: installs what is missing,
# starts dockerd and a Consul dev agent when none answers, builds, then runs
# every test with the integration tests switched on (UNDERLAY_INTEGRATION=1,
# under which a missing daemon fails the tests instead of skipping them).
#
# The suite runs on Docker 20.10 (Debian's docker.io; or UNDERLAY_DOCKERD),
# then the integration suites run again on the engines in
# UNDERLAY_TEST_ENGINES (default: 29, built from the Go module proxy on
# first use; empty for none). `make test-matrix` runs all on 20.10, 28, 29.
# Every fuzz target runs for FUZZTIME (5s) in between.
source "$(dirname "$0")/lib.sh"
prepare_integration

log "go vet"
go vet ./...
log "go test (dockerd $(docker version -f '{{.Server.Version}}'))"
# The VM lab test runs alone afterwards: three QEMU/TCG guests take both
# cores, and beside the other packages' labs every timeout is at risk.
go test -race -count=1 -timeout 20m -skip 'TestIntegrationVM$' "$@" ./...
log "go test: VM lab nodes"
go test -count=1 -timeout 20m -run 'TestIntegrationVM$' "$@" ./internal/lab/

# Every fuzz target, briefly (make fuzz runs them for minutes each).
FUZZTIME=${FUZZTIME:-5s} scripts/fuzz.sh

for line in ${UNDERLAY_TEST_ENGINES-29}; do
  [ "$line" = "$UNDERLAY_DOCKERD" ] && continue
  # The VM test ran once above (make test-matrix runs it on every engine).
  scripts/test-engine.sh "$line" -skip 'TestIntegrationVM$' ./...
done
