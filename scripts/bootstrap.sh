#!/usr/bin/env bash
# Create the virtual environment and install the project with the exact versions tested together.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" - <<'PY' || { echo "bootstrap: Python 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "bootstrap: installing packages (first time: about 2-3 minutes, ~2.5 GB)"
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
echo "bootstrap: done; the command line is $VENV/bin/modelops"
