#!/usr/bin/env bash
# Build the local stand-in for tensorflow/serving (Docker Hub cannot be reached from these machines).
#
# Two images, each built only when absent (or, for the second, when the project's code changed):
#   modelops/standin-runtime:py311-tf2.21.0-<id of PACKAGES>  Debian bookworm minbase + python3 +
#                                            tensorflow-cpu, httptools, uvloop, orjson, prometheus-client, …
#                                            (debootstrap rootfs + `docker import`; minutes, once per list)
#   modelops/tfserving-standin:2.18.0        the runtime + this project's `modelops` package + a
#                                            `tensorflow_model_server` wrapper and the real image's entrypoint
#                                            (`docker build` from standin.Dockerfile; cached by Docker)
# Usage: DOCKER_HOST=... build-standin.sh   (scripts/docker-engine.sh start calls it)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/../../.." && pwd)"
HOME_DIR="${MODELOPS_DOCKER_HOME:-/var/lib/modelops-docker}"

STANDIN_IMAGE="${MODELOPS_STANDIN_IMAGE:-modelops/tfserving-standin:2.18.0}"
MIRROR="${MODELOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=$(command -v python3.11 || command -v python3)
# The serving process's packages, at the versions the project tests with.
PACKAGES=(tensorflow-cpu httptools uvloop orjson msgspec pydantic PyYAML httpx prometheus-client grpcio hpack)
# Installed without their declared dependencies (requirements/no-deps.txt says why: tensorflow-serving-api
# requires `tensorflow`, which must not sit beside tensorflow-cpu).
NO_DEPS="$REPO_ROOT/requirements/no-deps.txt"
# The tag names the package lists, so a machine's cached runtime is rebuilt when a list changes.
PACKAGES_ID=$( (echo "${PACKAGES[*]}"; grep -v '^#' "$NO_DEPS") | sha1sum | cut -c1-8)
RUNTIME_IMAGE="${MODELOPS_STANDIN_RUNTIME:-modelops/standin-runtime:py311-tf2.21.0-$PACKAGES_ID}"

log() { echo "build-standin: $*" >&2; }
t0=$(date +%s)

build_runtime() {
  local root="$HOME_DIR/standin-rootfs"
  rm -rf "$root"
  mkdir -p "$root"
  log "debootstrap bookworm minbase + python3 into $root (~1-2 min)"
  debootstrap --variant=minbase --include=python3 bookworm "$root" "$MIRROR" >"$HOME_DIR/log/debootstrap.log" 2>&1 \
    || { log "error: debootstrap failed; see $HOME_DIR/log/debootstrap.log"; exit 1; }
  log "debootstrap done after $(( $(date +%s) - t0 )) s; installing ${PACKAGES[*]} (pip cache: $HOME_DIR/pip-cache)"
  # Same interpreter minor version (3.11) and glibc family on host and image, so the host's pip can install
  # the cp311 manylinux wheels straight into the image's tree; the wheel cache makes a rebuild offline.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --cache-dir "$HOME_DIR/pip-cache" \
    -c "$REPO_ROOT/requirements/constraints.txt" --target "$root/opt/standin/site-packages" "${PACKAGES[@]}" 2>&1 \
    | { grep -v "^WARNING: Location" || true; } \
    || { log "error: pip install into the stand-in failed"; exit 1; }
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --cache-dir "$HOME_DIR/pip-cache" \
    --no-deps --target "$root/opt/standin/site-packages" -r "$NO_DEPS" 2>&1 \
    | { grep -v "^WARNING: Location" || true; } \
    || { log "error: pip install --no-deps into the stand-in failed"; exit 1; }
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/locale/*
  log "importing the rootfs as $RUNTIME_IMAGE"
  tar -C "$root" -c . | docker import \
    --change 'ENV PYTHONPATH=/opt/standin/site-packages' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    - "$RUNTIME_IMAGE" >/dev/null
  rm -rf "$root"
  log "runtime image built in $(( $(date +%s) - t0 )) s"
}

if docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1; then
  log "$RUNTIME_IMAGE present (cached)"
else
  build_runtime
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$HERE/standin.Dockerfile" "$HERE/tensorflow_model_server" "$HERE/tf_serving_entrypoint.sh" "$context/"
tar -C "$REPO_ROOT" --exclude='__pycache__' -c modelops infra/config | tar -C "$context" -x
log "building $STANDIN_IMAGE from $RUNTIME_IMAGE"
docker build --quiet --network=host --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" -f "$context/standin.Dockerfile" \
  -t "$STANDIN_IMAGE" "$context" >"$HOME_DIR/log/standin-build.log" 2>&1 \
  || { log "error: docker build of the stand-in failed; see $HOME_DIR/log/standin-build.log"; exit 1; }
docker image prune -f >/dev/null 2>&1 || true  # the previous build of the stand-in, now untagged
log "$STANDIN_IMAGE ready ($(docker image inspect -f '{{.Size}}' "$STANDIN_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'), $(( $(date +%s) - t0 )) s)"
