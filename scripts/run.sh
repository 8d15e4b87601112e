#!/usr/bin/env bash
# The main job: a 3-node underlay lab on this machine, running underlay.
#
# Installs what is missing, starts the machine's dockerd (it builds the
# images), builds underlay, brings up `underlay lab` (3 nodes, each with its
# own dockerd and Consul agent, joined in one swarm, with a macvlan underlay
# whose router is this machine; underlay's agent and control deployed with
# deploy/stack.yml, as on real hosts), creates an underlay network
# with one command, deploys a demo service on it and prints what to try.
# Run it again to repair the lab; `bin/underlay lab down` removes it all.
source "$(dirname "$0")/lib.sh"
need_root
cd "$UNDERLAY_ROOT"

scripts/install-deps.sh
use_engine
scripts/start-docker.sh
scripts/build.sh

ul=$UNDERLAY_ROOT/bin/underlay
export UNDERLAY_BIN=$ul
# The agents and control are deployed as the README tells users to: the
# image underlay:VERSION (built by scripts/build.sh) and deploy/stack.yml.
"$ul" lab up --nodes 3 --agents stack

status=$("$ul" lab status --json)
token=$(cat "$("$ul" lab status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state_dir"])')/control.tokens")
field() { printf '%s' "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
subnet=$(field 'd["underlay_subnet"]')
gateway=$(field 'd["underlay_gateway"]')
consul=$(field 'd["nodes"][0]["consul_http_addr"]')
export DOCKER_HOST=$(field 'd["nodes"][0]["docker_host"]')

log "waiting for the agents to report their nodes"
for _ in $(seq 60); do
  n=$(curl -fsS "http://$consul/v1/kv/underlay/nodes/?keys" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$n" -ge 3 ] && break
  sleep 1
done

if ! "$ul" network inspect demo --consul-addr "$consul" >/dev/null 2>&1; then
  log "underlay network create demo --subnet $subnet --gateway $gateway --parent eth1"
  "$ul" network create demo --consul-addr "$consul" --subnet "$subnet" --gateway "$gateway" --parent eth1 --per-node-size 64
fi
wait_for 60 "the swarm network demo" docker network inspect demo

if ! docker service inspect hello >/dev/null 2>&1; then
  log "docker service create --name hello --replicas 3 --network demo underlay/testserver:dev"
  docker service create -d --name hello --replicas 3 --network demo \
    -e SERVICE_NAME=hello -e SERVICE_CHECK_HTTP=/health -e SERVICE_CHECK_INTERVAL=2s \
    underlay/testserver:dev >/dev/null
fi
hello_ips() {
  curl -fsS "http://$consul/v1/catalog/service/hello" |
    python3 -c 'import json,sys; print(" ".join(sorted(s["ServiceAddress"] for s in json.load(sys.stdin))))'
}
count_hello() { [ "$(hello_ips | wc -w)" -ge 3 ]; }
wait_for 120 "3 hello tasks registered in Consul" count_hello

ips=$(hello_ips)
first=${ips%% *}
cat <<MSG

underlay lab is up: 3 nodes, one swarm, Consul on every node, underlay's stack (agent on every
node, control on the manager: docker stack deploy -c deploy/stack.yml underlay).
Network "demo" spans every node ($subnet, gateway $gateway = this machine); the service
"hello" runs 3 replicas with routable addresses, registered in Consul by the agents:

  $ips

Try:
  curl http://$first:8080/                     # straight from outside the cluster, no NAT, no proxy
  curl http://$consul/v1/catalog/service/hello  # what the agents registered
  Consul UI: http://$consul/ui
  $ul network inspect demo --consul-addr $consul
  $ul lab status
  $ul lab exec node2 -- docker ps               # work on a node
  DOCKER_HOST=$DOCKER_HOST docker service scale hello=6
  DOCKER_HOST=$DOCKER_HOST docker stack ps underlay     # the agents and control
  curl -H "Authorization: Bearer $token" http://${consul%:*}:8000/v1/underlay/services   # control
  $ul lab down                                  # remove everything
MSG
