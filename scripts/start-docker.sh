#!/usr/bin/env bash
# Starts dockerd when none answers on DOCKER_HOST (default the local socket);
# reuses a running one.
source "$(dirname "$0")/lib.sh"

if docker info >/dev/null 2>&1; then
  log "reusing the running dockerd ($(docker version -f '{{.Server.Version}}'))"
  exit 0
fi
need_root
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]; then
  die "no dockerd answers on DOCKER_HOST=$DOCKER_HOST; start it or unset DOCKER_HOST"
fi
mkdir -p "$UNDERLAY_STATE"
log "starting dockerd (log: $UNDERLAY_STATE/dockerd.log)"
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
  :
else
  nohup dockerd >"$UNDERLAY_STATE/dockerd.log" 2>&1 </dev/null &
fi
wait_for 60 "dockerd to answer (see $UNDERLAY_STATE/dockerd.log)" docker info
log "dockerd $(docker version -f '{{.Server.Version}}') is up"
