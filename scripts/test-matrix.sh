#!/usr/bin/env bash
# make test-matrix: every test (unit and integration) against each Docker
# engine underlay supports: Debian's 20.10, 28.5.2 and the 29 line. Engines
# are built on first use (build-engines.sh) and cached.
source "$(dirname "$0")/lib.sh"
need_root
for line in 20.10 28 29; do
  log "=== engine $line"
  "$UNDERLAY_ROOT/scripts/test-engine.sh" "$line" ./...
done
log "=== every suite passed on 20.10, 28 and 29"
