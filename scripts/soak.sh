#!/usr/bin/env bash
# The long chaos run (make soak): TestIntegrationSoak on a lab of
# SOAK_NODES nodes (5, SOAK_MANAGERS 2 of them managers) for SOAK_DURATION
# (30m) of faults, from SOAK_SEED (default: a fresh one, printed; set it to
# replay a run). The report ends with one line for scripts:
#   soak: seed=S nodes=N duration=D faults=F violations=V
# CI runs the test's own defaults instead: 3 nodes, about 2 minutes, seed 1.
source "$(dirname "$0")/lib.sh"
prepare_integration

export SOAK_NODES=${SOAK_NODES:-5} SOAK_MANAGERS=${SOAK_MANAGERS:-2} SOAK_DURATION=${SOAK_DURATION:-30m}
export SOAK_SEED=${SOAK_SEED:-$(date +%s)}
# Another lab subnet than CI's soak (10.191), so both can run at once; the
# per-node network (10.192) lives inside the nodes only.
export SOAK_SUBNETS=${SOAK_SUBNETS:-10.193.0.0/16,10.192.0.0/16}
log "soak: seed $SOAK_SEED, $SOAK_NODES nodes ($SOAK_MANAGERS managers), $SOAK_DURATION of faults"
go test -count=1 -v -timeout 3h -run '^TestIntegrationSoak$' ./internal/soak/
