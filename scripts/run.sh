#!/usr/bin/env bash
# The main job: installs what is missing, starts dockerd and a Consul dev
# agent when none answers, builds underlay and runs its agent in the
# foreground against them. Ctrl-C stops the agent (dockerd and Consul stay).
# Extra arguments go to `underlay agent`, e.g. ./scripts/run.sh --log-level debug
source "$(dirname "$0")/lib.sh"
need_root
cd "$UNDERLAY_ROOT"

scripts/install-deps.sh
scripts/start-docker.sh
scripts/start-consul.sh
scripts/build.sh

export CONSUL_HTTP_ADDR=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
cat >&2 <<MSG
==> underlay agent is starting; in another shell try:
      docker run -d --name hello -p 8080 -e SERVICE_NAME=hello -e SERVICE_CHECK_HTTP=/health underlay/testserver:dev
      curl -s http://$CONSUL_HTTP_ADDR/v1/catalog/service/hello
    Consul UI: http://$CONSUL_HTTP_ADDR/ui    agent metrics: http://127.0.0.1:9465/metrics
MSG
exec bin/underlay agent "$@"
