#!/usr/bin/env bash
# The whole test suite on real Docker and Consul: installs what is missing,
# starts dockerd and a Consul dev agent when none answers, builds, then runs
# every test with the integration tests switched on (UNDERLAY_INTEGRATION=1,
# under which a missing daemon fails the tests instead of skipping them).
source "$(dirname "$0")/lib.sh"
prepare_integration

log "go vet"
go vet ./...
log "go test"
go test -race -count=1 -timeout 20m "$@" ./...
