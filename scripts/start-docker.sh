#!/usr/bin/env bash
# Starts the machine's dockerd, of the engine UNDERLAY_DOCKERD (20.10, the
# default: Debian's docker.io; 28 or 29: built by build-engines.sh), unless
# one of that engine already answers. A dockerd of another engine that this
# script started is stopped first; one it did not start is left alone (and
# the script fails). Engines 28 and 29 keep their own data root,
# /var/lib/underlay-docker/LINE, so one engine never reads another's state.
source "$(dirname "$0")/lib.sh"

line=${UNDERLAY_DOCKERD:-20.10}
ours=$UNDERLAY_STATE/dockerd.pid

server_version() { docker version -f '{{.Server.Version}}' 2>/dev/null; }

if running=$(server_version) && [ -n "$running" ]; then
  case "$running" in
    "$line".*)
      log "reusing the running dockerd ($running)"
      exit 0
      ;;
  esac
  pid=$(cat "$ours" 2>/dev/null || true)
  if [ -z "$pid" ] || [ "$(cat /var/run/docker.pid 2>/dev/null)" != "$pid" ]; then
    die "dockerd $running answers, but UNDERLAY_DOCKERD=$line, and this script did not start it: stop it first"
  fi
  log "stopping dockerd $running (pid $pid) for engine $line"
  kill -TERM "$pid"
  stopped() { ! kill -0 "$pid" 2>/dev/null; }
  wait_for 60 "dockerd $pid to stop" stopped
  rm -f "$ours"
fi
if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]; then
  die "no dockerd answers on DOCKER_HOST=$DOCKER_HOST; start it or unset DOCKER_HOST"
fi
need_root
use_engine
mkdir -p "$UNDERLAY_STATE"
logf=$UNDERLAY_STATE/dockerd-$line.log
log "starting dockerd $line (log: $logf)"
args=()
if [ "$line" != 20.10 ]; then
  args+=(--data-root "/var/lib/underlay-docker/$line")
elif [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
  wait_for 60 "dockerd to answer" docker info
  log "dockerd $(server_version) is up (systemd)"
  exit 0
fi
nohup dockerd "${args[@]}" >"$logf" 2>&1 </dev/null &
echo $! >"$ours"
wait_for 60 "dockerd to answer (see $logf)" docker info
running=$(server_version)
[ "$(engine_line "$running")" = "$line" ] || die "started dockerd $(command -v dockerd) for engine $line, but it is $running"
log "dockerd $running is up (engine $line)"
