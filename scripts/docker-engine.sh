#!/usr/bin/env bash
# A private Docker engine + image registry on loopback, for tests, CI and the `docker` serving target.
#
#   scripts/docker-engine.sh start    install what is missing, start dockerd and the registry, wait until
#                                     ready, build the stand-in bases if absent (tensorflow/serving for
#                                     the serving image, python:3.11-slim for the flow image)
#   scripts/docker-engine.sh status   say what runs (exit 0 when both daemons answer)
#   scripts/docker-engine.sh stop     stop exactly the processes `start` started (by their PID files)
#   scripts/docker-engine.sh env      print `export DOCKER_HOST=...` lines for eval
#
# State lives under $MODELOPS_DOCKER_HOME (default /var/lib/modelops-docker) so images and the registry
# survive between runs. Nothing is exported globally: the engine's address is printed and written to
# $MODELOPS_DOCKER_HOME/docker-host, where modelops.integrations.image and the tests read it.
# Knobs: MODELOPS_REGISTRY_ADDR (default 127.0.0.1:5055), MODELOPS_SKIP_STANDIN=1 (no stand-in base builds).
set -euo pipefail

HOME_DIR="${MODELOPS_DOCKER_HOME:-/var/lib/modelops-docker}"
REGISTRY_ADDR="${MODELOPS_REGISTRY_ADDR:-127.0.0.1:5055}"
SOCKET="$HOME_DIR/run/docker.sock"
DOCKER_HOST_URL="unix://$SOCKET"
DOCKERD_PID="$HOME_DIR/run/dockerd.pid"
REGISTRY_PID="$HOME_DIR/run/registry.pid"
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"

log() { echo "docker-engine: $*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "error: dockerd needs root; run this script as root (or with sudo)"
    exit 1
  fi
}

install_missing() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt, ~10-60 s)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >"$HOME_DIR/apt.log" 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=600 update -qq >>"$HOME_DIR/apt.log" 2>&1 && apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >>"$HOME_DIR/apt.log" 2>&1; } \
      || { log "error: apt-get install ${missing[*]} failed; see $HOME_DIR/apt.log"; exit 1; }
  fi
}

docker_cli() { DOCKER_HOST="$DOCKER_HOST_URL" docker "$@"; }

engine_ready() { docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; }
registry_ready() { curl -sf "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; }

start_dockerd() {
  if alive "$DOCKERD_PID"; then return; fi
  log "starting dockerd (socket $SOCKET)"
  # Host networking only here: no bridge, no iptables (bridge networking and -p do not work on these machines).
  setsid dockerd --data-root "$HOME_DIR/data" --exec-root "$HOME_DIR/exec" --pidfile "$HOME_DIR/exec/dockerd.pid" \
    -H "$DOCKER_HOST_URL" --storage-driver=overlay2 --iptables=false --ip6tables=false --bridge=none \
    --ip-masq=false --ip-forward=false >>"$HOME_DIR/log/dockerd.log" 2>&1 </dev/null &
  echo $! >"$DOCKERD_PID"
}

start_registry() {
  if alive "$REGISTRY_PID"; then return; fi
  if registry_ready; then
    log "error: something else already answers on $REGISTRY_ADDR; stop it or set MODELOPS_REGISTRY_ADDR"
    exit 1
  fi
  log "starting the image registry on $REGISTRY_ADDR"
  cat >"$HOME_DIR/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $HOME_DIR/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY_ADDR
YAML
  setsid docker-registry serve "$HOME_DIR/registry.yml" >>"$HOME_DIR/log/registry.log" 2>&1 </dev/null &
  echo $! >"$REGISTRY_PID"
}

wait_ready() {
  for _ in $(seq 300); do
    if engine_ready && registry_ready; then return 0; fi
    alive "$DOCKERD_PID" || { log "error: dockerd exited; see $HOME_DIR/log/dockerd.log"; tail -5 "$HOME_DIR/log/dockerd.log" >&2; exit 1; }
    alive "$REGISTRY_PID" || { log "error: registry exited; see $HOME_DIR/log/registry.log"; tail -5 "$HOME_DIR/log/registry.log" >&2; exit 1; }
    sleep 0.2
  done
  log "error: engine or registry not ready after 60 s; see $HOME_DIR/log/"
  exit 1
}

cmd_start() {
  need_root
  mkdir -p "$HOME_DIR"/{run,log,data,exec,registry}
  install_missing
  start_dockerd
  start_registry
  wait_ready
  echo "$DOCKER_HOST_URL" >"$HOME_DIR/docker-host"
  echo "$REGISTRY_ADDR" >"$HOME_DIR/registry-addr"
  log "ready: DOCKER_HOST=$DOCKER_HOST_URL registry=$REGISTRY_ADDR"
  if [ "${MODELOPS_SKIP_STANDIN:-0}" != 1 ]; then
    DOCKER_HOST="$DOCKER_HOST_URL" MODELOPS_DOCKER_HOME="$HOME_DIR" "$REPO_ROOT/infra/docker/standin/build-standin.sh"
    DOCKER_HOST="$DOCKER_HOST_URL" MODELOPS_DOCKER_HOME="$HOME_DIR" \
      "$REPO_ROOT/infra/docker/standin/build-python-standin.sh"
  fi
  echo "DOCKER_HOST=$DOCKER_HOST_URL"
}

stop_pid() {
  local name=$1 file=$2
  if ! alive "$file"; then rm -f "$file"; return; fi
  local pid; pid=$(cat "$file")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in 30 s; killing pid $pid"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}

cmd_stop() {
  stop_pid registry "$REGISTRY_PID"
  stop_pid dockerd "$DOCKERD_PID"
  rm -f "$HOME_DIR/docker-host"
}

cmd_status() {
  local rc=0
  if alive "$DOCKERD_PID" && engine_ready; then echo "dockerd: running (pid $(cat "$DOCKERD_PID")), DOCKER_HOST=$DOCKER_HOST_URL"
  else echo "dockerd: not running"; rc=1; fi
  if alive "$REGISTRY_PID" && registry_ready; then echo "registry: running (pid $(cat "$REGISTRY_PID")) on $REGISTRY_ADDR"
  else echo "registry: not running"; rc=1; fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST_URL MODELOPS_DOCKER_HOST=$DOCKER_HOST_URL" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
