#!/usr/bin/env bash
# Static checks, as `make lint` and `make test` (hence CI) run them: ruff's linter and formatter on
# the whole tree, mypy on the code that ships (pyproject.toml's [tool.mypy] files).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
status=0
"$BIN/ruff" check . || status=1
"$BIN/ruff" format --check . || status=1
"$BIN/mypy" || status=1
if [ "$status" != 0 ]; then
  echo "lint: failed (see above); \`$BIN/ruff check --fix . && $BIN/ruff format .\` fixes most of ruff's" >&2
fi
exit "$status"
