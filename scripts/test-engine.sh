#!/usr/bin/env bash
# Runs the integration suites against one Docker engine:
#
#   scripts/test-engine.sh LINE [PACKAGE...]    LINE: 20.10, 28 or 29
#
# It builds the engine when it is not cached (build-engines.sh), makes it the
# machine's dockerd (start-docker.sh; its own data root), loads the test
# image into it, and runs `go test` on PACKAGEs (default ./...; the
# integration tests are what differ between engines) with UNDERLAY_DOCKERD=LINE, so labs and the tests' private daemons
# run that engine too. The engine that answered before is started again at
# the end.
source "$(dirname "$0")/lib.sh"
need_root
[ $# -ge 1 ] || die "usage: $0 20.10|28|29 [PACKAGE...]"
line=$1
shift
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

before=$(engine_line "$(docker version -f '{{.Server.Version}}' 2>/dev/null || true)")
restore() {
  local rc=$?
  if [ -n "$before" ] && [ "$before" != "$line" ]; then
    UNDERLAY_DOCKERD=$before "$UNDERLAY_ROOT/scripts/start-docker.sh" || true
  fi
  exit $rc
}
trap restore EXIT

export UNDERLAY_DOCKERD=$line
prepare_integration
log "integration suites on dockerd $(docker version -f '{{.Server.Version}}'): ${pkgs[*]}"
go test -count=1 -timeout 25m "${pkgs[@]}"
