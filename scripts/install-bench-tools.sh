#!/usr/bin/env bash
# The benchmarks' native load generators, from Debian's packages when missing: wrk (REST, HTTP/1.1)
# and nghttp2's h2load (gRPC, HTTP/2). `make bench` and scripts/test.sh (the h2load test) run this.
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-bench-tools: ${missing[*]} missing; as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-bench-tools: installing ${missing[*]} (apt, ~10 s)" >&2
log="${TMPDIR:-/tmp}/modelops-bench-tools-apt.log"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >"$log" 2>&1 \
  || { apt-get -o DPkg::Lock::Timeout=600 update -qq >>"$log" 2>&1 \
       && apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >>"$log" 2>&1; } \
  || { echo "install-bench-tools: apt-get install ${missing[*]} failed; see $log" >&2; exit 1; }
