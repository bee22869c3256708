#!/usr/bin/env bash
# The README's test command runs this: the static checks (scripts/lint.sh), then, with PostgreSQL,
# a Docker engine + registry up and a Kubernetes control plane built, the whole pytest suite. Extra
# arguments go to pytest. A lint failure does not stop the tests, but fails the run at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
lint_status=0
./scripts/lint.sh || lint_status=$?
./scripts/ensure-postgres.sh
./scripts/install-browser.sh || echo "test: no chromium here; the browser test will skip with the reason" >&2
./scripts/install-bench-tools.sh || echo "test: no h2load here: the gRPC bench test will fail" >&2
if [ -x scripts/docker-engine.sh ] && [ "${MODELOPS_SKIP_DOCKER:-0}" != 1 ]; then
  already_running=0
  ./scripts/docker-engine.sh status >/dev/null 2>&1 && already_running=1
  ./scripts/docker-engine.sh start   # idempotent: also builds the stand-in base image when absent
  if [ "$already_running" = 1 ]; then
    echo "test: the Docker engine was already running: it is left running afterwards" >&2
  else
    trap './scripts/docker-engine.sh stop' EXIT   # stop only what this run started
  fi
  export MODELOPS_REQUIRE_DOCKER=1   # the container tests must run here, not skip
fi
if [ "${MODELOPS_SKIP_K8S:-0}" != 1 ]; then
  # A real Kubernetes v1.20 control plane for the k8s tests: built once per machine (about 5 min,
  # cached in ~/.cache/k8s-1.20); the tests start and stop it themselves (tests/support/control_plane.py).
  k8s_log="${TMPDIR:-/tmp}/modelops-k8s-build.log"
  echo "test: Kubernetes control plane: scripts/k8s-control-plane/build.sh (log: $k8s_log)" >&2
  ./scripts/k8s-control-plane/build.sh >"$k8s_log" 2>&1 \
    || echo "test: the control plane build FAILED (see $k8s_log): the k8s tests will fail" >&2
  export MODELOPS_REQUIRE_K8S=1   # the k8s tests must run here, not skip
fi
# pytest-xdist: MODELOPS_TEST_WORKERS processes (0 runs in this process), each given whole test files,
# heaviest first (tests/conftest.py orders them), so a module's stack or trained model is set up once.
# Each worker has its own ports (tests/support/network.py, blocks for 8) and databases. Default: two per
# core, at most 4: much of a test's time is waiting (a build's downloads, a server's start, a poll), so
# on 2 cores 4 workers finish sooner than 2 (docs/test-suite-time.md: 35 -> 28 min idle, 49 -> 34 min under load).
workers="${MODELOPS_TEST_WORKERS:-$(( $(nproc) * 2 < 4 ? $(nproc) * 2 : 4 ))}"
echo "test: pytest on $workers worker processes (MODELOPS_TEST_WORKERS to change)" >&2
test_status=0
.venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@" || test_status=$?
if [ "$lint_status" != 0 ]; then
  echo "test: the tests ran, but the static checks failed (scripts/lint.sh)" >&2
fi
[ "$test_status" = 0 ] && exit "$lint_status"
exit "$test_status"
