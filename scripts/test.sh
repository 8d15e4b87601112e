#!/usr/bin/env bash
# The whole test suite on real Docker and Consul: installs what is missing,
# starts dockerd and a Consul dev agent when none answers, builds, then runs
# every test with the integration tests switched on (UNDERLAY_INTEGRATION=1,
# under which a missing daemon fails the tests instead of skipping them).
source "$(dirname "$0")/lib.sh"
need_root
cd "$UNDERLAY_ROOT"

scripts/install-deps.sh
scripts/start-docker.sh
scripts/start-consul.sh
scripts/build.sh

export UNDERLAY_INTEGRATION=1
export UNDERLAY_BIN=$UNDERLAY_ROOT/bin/underlay
export CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
log "go vet"
go vet ./...
log "go test"
go test -race -count=1 -timeout 20m "$@" ./...
