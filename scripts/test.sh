#!/usr/bin/env bash
# The README's test command runs this: make sure PostgreSQL and a Docker engine + registry are up,
# then run the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-postgres.sh
./scripts/install-browser.sh || echo "test: no chromium here; the browser test will skip with the reason" >&2
if [ -x scripts/docker-engine.sh ] && [ "${MODELOPS_SKIP_DOCKER:-0}" != 1 ]; then
  ./scripts/docker-engine.sh start
  trap './scripts/docker-engine.sh stop' EXIT
  export MODELOPS_REQUIRE_DOCKER=1   # the container tests must run here, not skip
fi
.venv/bin/python -m pytest "$@"
