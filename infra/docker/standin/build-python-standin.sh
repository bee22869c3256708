#!/usr/bin/env bash
# Build the local stand-in for python:3.11-slim (Docker Hub cannot be reached from these machines), the
# base of the flow image (infra/docker/flow.Dockerfile) on this machine. Built only when absent.
#
#   modelops/python-standin:3.11-slim-<id of PACKAGES>  Debian bookworm minbase + Debian's python3.11 with
#                                                      venv and pip, `python`/`python3` on PATH as in the
#                                                      real image, the host's CA bundle (pip inside a build
#                                                      reaches PyPI through this machine's TLS proxy)
#   modelops/python-standin:3.11-slim                  the same image (the name infra/config/docker.yaml uses)
#
# The real python:3.11-slim is the same Debian release with CPython 3.11 under /usr/local; what the
# flow image needs from it (python3 -m venv, pip, CA certificates) is the same here.
# Usage: DOCKER_HOST=... build-python-standin.sh   (scripts/docker-engine.sh start calls it)
set -euo pipefail
HOME_DIR="${MODELOPS_DOCKER_HOME:-/var/lib/modelops-docker}"
IMAGE="${MODELOPS_PYTHON_STANDIN_IMAGE:-modelops/python-standin:3.11-slim}"
MIRROR="${MODELOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(python3 python3-venv python3-pip ca-certificates)
# The versioned tag names the package list, so a cached image is rebuilt when the list changes.
PACKAGES_ID=$(echo "${PACKAGES[*]}" | sha1sum | cut -c1-8)
VERSIONED="${IMAGE}-${PACKAGES_ID}"
HOST_CA=/etc/ssl/certs/ca-certificates.crt

log() { echo "build-python-standin: $*" >&2; }
t0=$(date +%s)

if docker image inspect "$VERSIONED" >/dev/null 2>&1; then
  docker tag "$VERSIONED" "$IMAGE"
  log "$IMAGE present (cached)"
  exit 0
fi

mkdir -p "$HOME_DIR/log"
root="$HOME_DIR/python-standin-rootfs"
rm -rf "$root"
mkdir -p "$root"
trap 'rm -rf "$root"' EXIT
log "debootstrap bookworm minbase + ${PACKAGES[*]} into $root (~1-2 min)"
include=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" bookworm "$root" "$MIRROR" \
  >"$HOME_DIR/log/debootstrap-python.log" 2>&1 \
  || { log "error: debootstrap failed; see $HOME_DIR/log/debootstrap-python.log"; exit 1; }
# As in python:3.11-slim: `python` and `python3` in /usr/local/bin.
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
if [ -f "$HOST_CA" ]; then
  cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"  # includes this machine's egress CA
fi
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/*
log "importing the rootfs as $VERSIONED"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV PIP_CERT=$HOST_CA SSL_CERT_FILE=$HOST_CA REQUESTS_CA_BUNDLE=$HOST_CA" \
  --change 'CMD ["python3"]' \
  - "$VERSIONED" >/dev/null
docker tag "$VERSIONED" "$IMAGE"
log "$IMAGE ready ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'), $(( $(date +%s) - t0 )) s)"
