#!/usr/bin/env bash
# Starts a Consul dev agent on 127.0.0.1 when none answers at CONSUL_HTTP_ADDR
# (default 127.0.0.1:8500); reuses one that does.
source "$(dirname "$0")/lib.sh"

addr=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
addr=${addr#http://}
leader() { curl -fsS "http://$addr/v1/status/leader" | grep -q ':'; }

if leader; then
  log "reusing the Consul agent at $addr"
  exit 0
fi
command -v consul >/dev/null || die "consul is not installed; run scripts/install-deps.sh"
host=${addr%:*}
port=${addr##*:}
[ "$host" = 127.0.0.1 ] || [ "$host" = localhost ] || die "no Consul answers at $addr and this script only starts one on 127.0.0.1"
mkdir -p "$UNDERLAY_STATE"
log "starting a Consul dev agent on $addr (log: $UNDERLAY_STATE/consul.log)"
nohup consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$port" -dns-port -1 \
  >"$UNDERLAY_STATE/consul.log" 2>&1 </dev/null &
wait_for 30 "Consul to elect a leader (see $UNDERLAY_STATE/consul.log)" leader
log "Consul $(consul version | head -n1) is up at $addr"
