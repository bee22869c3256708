#!/usr/bin/env bash
# Debian's chromium and the Python `playwright` package, for the browser tests (pytest -m browser).
#
#   scripts/install-browser.sh          install what is missing (idempotent), print what is there
#   scripts/install-browser.sh check    only say what is there (exit 1 if something is missing)
#
# Playwright drives the system browser (/usr/bin/chromium, executable_path=...): it never downloads a
# browser build of its own, so `playwright install` is NOT run here. Knobs: PYTHON (default: the
# project's .venv/bin/python), PLAYWRIGHT_VERSION (default: the version the tests were written with).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.2}"
CHROMIUM=/usr/bin/chromium

log() { echo "install-browser: $*" >&2; }

have_chromium() { [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; }
have_playwright() { "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; }

report() {
  if have_chromium; then log "chromium: $("$CHROMIUM" --headless --no-sandbox --version 2>/dev/null)"
  else log "chromium: missing"; fi
  if have_playwright; then
    log "playwright: $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
  else log "playwright: missing in $PYTHON"; fi
  have_chromium && have_playwright
}

if [ "${1:-install}" = check ]; then
  report
  exit $?
fi

if ! have_chromium; then
  if [ "$(id -u)" != 0 ]; then
    log "error: installing chromium needs root: run 'apt-get install -y chromium' as root"
    exit 1
  fi
  log "installing Debian's chromium (apt-get; ~1-2 min the first time)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! have_playwright; then
  log "installing playwright==$PLAYWRIGHT_VERSION into $PYTHON (the driver only; no browser download)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PYTHON" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"
fi

report
