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
# Every fuzz target runs for FUZZTIME (5s), and every benchmark that needs
# no lab once, in between. Builds use -trimpath
# (lib.sh), so a fresh clone reuses the Go build cache.
source "$(dirname "$0")/lib.sh"
prepare_integration

log "go vet"
go vet ./...
log "go test (dockerd $(docker version -f '{{.Server.Version}}'))"
# The VM tests run alone afterwards, one at a time: QEMU/TCG guests take
# both cores, and beside the other packages' labs every timeout is at risk.
# CI runs the VM lab test (about 4 minutes); the package test on a systemd
# VM (install, reboot, remove, purge: about 7 minutes) would overrun CI's
# 30 minutes, so only `make test-vm` (UNDERLAY_VM_TESTS=all) runs it.
vm_tests='TestIntegrationVM$|TestIntegrationVMPackage$'
vm_run='TestIntegrationVM$'
[ "${UNDERLAY_VM_TESTS:-}" = all ] && vm_run=$vm_tests
# go test runs two packages at a time on this 2-core machine, in the order
# given: the packages with labs go first, longest first, but the soak only
# once the IPAM package's labs are about done (the two at once made a lab's
# dockerd miss its 60 s to restart). In go list's (alphabetical) order the
# soak started last and ran alone for its last minutes while the other core
# idled.
longest_first=(./internal/ipam ./internal/register ./deploy ./internal/scale ./internal/soak ./internal/lab
  ./internal/netagent ./internal/dashboard ./internal/doctor)
go test -race -count=1 -timeout 20m -skip "$vm_tests" "$@" "${longest_first[@]}" ./...
log "go test: VM nodes ($vm_run)"
go test -p 1 -count=1 -timeout 20m -run "$vm_run" "$@" ./internal/lab/ ./deploy/

# Every fuzz target, briefly (make fuzz runs them for minutes each).
FUZZTIME=${FUZZTIME:-5s} scripts/fuzz.sh

# Every benchmark that needs no lab, once (-benchtime 1x: seconds), so that
# none rots unseen between `make bench` runs; the BenchmarkIntegration ones
# (labs, minutes each) are make bench's. A step of its own: with -bench, go
# test runs the packages' test binaries one at a time, after every build
# (on the main go test above, that serialised the labs: 25.5 min, not 16).
log "go test: benchmarks once"
go test -count=1 -run '^$' -bench . -benchtime 1x -skip '^BenchmarkIntegration' ./...

for line in ${UNDERLAY_TEST_ENGINES-29}; do
  [ "$line" = "$UNDERLAY_DOCKERD" ] && continue
  # The VM tests ran once above; the soak and the IPAM fault test (about
  # 7 minutes together) exercise underlay's own recovery, not the engine's
  # API, and the package and browser-page tests use no engine at all: they
  # run on 20.10 only here. make test-matrix runs them all on every engine.
  # Unit tests use no engine either (the IPAM model test alone takes 20 s).
  engine_free='TestIntegrationSoak$|TestIntegrationLabIPAMFaults$|TestIntegrationPackage$|TestIntegrationDashboardXSS$|TestIntegrationDashboardPage$'
  scripts/test-engine.sh "$line" -run '^TestIntegration' -skip "$vm_tests|$engine_free" "${longest_first[@]}" ./...
done
