#!/usr/bin/env bash
# The main job: a 3-node underlay lab on this machine, running underlay.
#
# Installs what is missing, starts the machine's dockerd (it builds the
# images), builds underlay, brings up `underlay lab` (3 nodes, each with its
# own dockerd and Consul agent, joined in one swarm, with a macvlan underlay
# whose router is this machine; underlay's agent and control — the
# autoscaler and the dashboard — deployed with deploy/stack.yml, as on real
# hosts), creates an underlay network with one command, deploys a demo
# service on it, scales it up once with `underlay scale` and prints what to
# try.
# Run it again to repair the lab; `bin/underlay lab down` removes it all.
# UNDERLAY_LAB and UNDERLAY_LAB_SUBNET choose another lab name and underlay
# subnet (default: lab, 10.200.0.0/16).
source "$(dirname "$0")/lib.sh"
need_root
cd "$UNDERLAY_ROOT"

scripts/install-deps.sh
use_engine
scripts/start-docker.sh
scripts/build.sh

ul=$UNDERLAY_ROOT/bin/underlay
export UNDERLAY_BIN=$ul
lab=${UNDERLAY_LAB:-lab}
# The agents and control are deployed as the README tells users to: the
# image underlay:VERSION (built by scripts/build.sh) and deploy/stack.yml.
"$ul" lab up --name "$lab" --nodes 3 --agents stack ${UNDERLAY_LAB_SUBNET:+--underlay-subnet "$UNDERLAY_LAB_SUBNET"}

status=$("$ul" lab status --name "$lab" --json)
field() { printf '%s' "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
subnet=$(field 'd["underlay_subnet"]')
gateway=$(field 'd["underlay_gateway"]')
consul=$(field 'd["nodes"][0]["consul_http_addr"]')
dashboard=$(field 'd["dashboard_url"]')
control=$(field 'd["nodes"][0]["control_url"].removeprefix("http://")')
token_file=$(field 'd["control_token_file"]')
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
    --label underlay.scale.enabled=true --label underlay.scale.max=6 \
    -e SERVICE_NAME=hello -e SERVICE_CHECK_HTTP=/health -e SERVICE_CHECK_INTERVAL=2s \
    underlay/testserver:dev >/dev/null
elif [ "$(docker service inspect hello --format '{{index .Spec.Labels "underlay.scale.enabled"}}')" != true ]; then
  log "letting underlay control scale hello (labels underlay.scale.enabled=true, underlay.scale.max=6)"
  docker service update -d --label-add underlay.scale.enabled=true --label-add underlay.scale.max=6 hello >/dev/null
fi
hello_ips() {
  curl -fsS "http://$consul/v1/catalog/service/hello" |
    python3 -c 'import json,sys; print(" ".join(sorted(s["ServiceAddress"] for s in json.load(sys.stdin))))'
}
count_hello() { [ "$(hello_ips | wc -w)" -ge "$1" ]; }
wait_for 120 "3 hello tasks registered in Consul" count_hello 3

# The autoscaler, as an operator (or Alertmanager) would call it.
# Reads want the token too (control's --auth-reads is on by default).
wait_for 60 "underlay control at $control" "$ul" scale ls --addr "$control" --token-file "$token_file" --insecure-http
log "underlay scale hello up --addr $control --token-file $token_file --insecure-http"
"$ul" scale hello up --addr "$control" --token-file "$token_file" --insecure-http
want=$(docker service inspect hello --format '{{.Spec.Mode.Replicated.Replicas}}')
wait_for 120 "$want hello tasks registered in Consul" count_hello "$want"

ips=$(hello_ips)
first=${ips%% *}
cat <<MSG

underlay lab is up: 3 nodes, one swarm, Consul on every node, underlay's stack (agent on every
node, control on the manager: docker stack deploy -c deploy/stack.yml underlay).
Network "demo" spans every node ($subnet, gateway $gateway = this machine); the service
"hello" runs $want replicas with routable addresses, registered in Consul by the agents:

  $ips

  Dashboard: $dashboard   (log in with the token in $token_file)
  Consul UI: http://$consul/ui

Try:
  curl http://$first:8080/                     # straight from outside the cluster, no NAT, no proxy
  curl http://$consul/v1/catalog/service/hello  # what the agents registered
  curl -H "Authorization: Bearer \$(head -1 $token_file)" http://$control/v1/cluster   # the dashboard's snapshot: nodes, tasks, addresses, pools
  $ul scale hello up --addr $control --token-file $token_file --insecure-http
  $ul scale history hello --addr $control --token-file $token_file --insecure-http
  $ul network inspect demo --consul-addr $consul
  $ul lab status --name $lab
  $ul lab exec --name $lab node2 -- docker ps   # work on a node
  DOCKER_HOST=$DOCKER_HOST docker service scale hello=6
  DOCKER_HOST=$DOCKER_HOST docker stack ps underlay     # the agents and control
  $ul lab down --name $lab                      # remove everything
MSG
