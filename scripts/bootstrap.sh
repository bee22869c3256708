#!/usr/bin/env bash
# Create the virtual environment and install the project with the exact versions tested together.
# Python: $PYTHON if set, else the first of python3.11 (what CI runs), python3.12, python3 that runs
# and is a supported version. The constraints file is requirements/constraints-py3.X.txt when one
# exists for that version, else requirements/constraints.txt.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/.." # no dirname: this also runs, and refuses clearly, on a PATH with nothing on it
VENV=${1:-.venv}
# Keep in step with requires-python in pyproject.toml (tests/packaging/test_supported_pythons.py checks).
SUPPORTED=(3.11 3.12)

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
is_supported() {
  local v
  for v in "${SUPPORTED[@]}"; do [ "$v" = "$1" ] && return 0; done
  return 1
}
refuse() {
  echo "bootstrap: $1." >&2
  echo "bootstrap: supported Pythons: ${SUPPORTED[*]}. Install one (Debian 12: apt-get install python3-venv;" \
    "Ubuntu 22.04: apt-get install python3.11-venv; Ubuntu 24.04: apt-get install python3-venv)" \
    "or set PYTHON=/path/to/python3.X" >&2
  exit 1
}

if [ -x "$VENV/bin/python" ]; then
  version=$(python_version "$VENV/bin/python") || version=unknown
  is_supported "$version" || refuse "$VENV runs Python $version; remove $VENV to start again"
elif [ -n "${PYTHON:-}" ]; then
  version=$(python_version "$PYTHON") || refuse "PYTHON=$PYTHON does not run"
  is_supported "$version" || refuse "PYTHON=$PYTHON is Python $version, which this project does not support"
else
  PYTHON=
  for name in "${SUPPORTED[@]/#/python}" python3; do
    candidate=$(command -v "$name") || continue
    version=$(python_version "$candidate") || continue # e.g. a pyenv shim of a version not selected
    if is_supported "$version"; then
      PYTHON=$candidate
      break
    fi
  done
  [ -n "$PYTHON" ] || refuse "no supported Python found on PATH (looked for ${SUPPORTED[*]/#/python} python3)"
fi

CONSTRAINTS=requirements/constraints-py$version.txt
[ -f "$CONSTRAINTS" ] || CONSTRAINTS=requirements/constraints.txt
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $("$PYTHON" --version) ($PYTHON)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "bootstrap: installing packages for Python $version with $CONSTRAINTS (first time: about 2-3 minutes, ~2.5 GB)"
"$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e ".[test]"
# Packages whose declared dependencies must not be installed (requirements/no-deps.txt says why);
# what they need at run time is already there. pip skips what is already at the pinned version.
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements/no-deps.txt
echo "bootstrap: done; the command line is $VENV/bin/modelops"
