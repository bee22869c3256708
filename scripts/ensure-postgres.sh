#!/usr/bin/env bash
# Tests use the PostgreSQL at 127.0.0.1:5432 (or $MODELOPS_TEST_DATABASE_URL); start the machine's
# cluster when it is installed but down.
set -uo pipefail
if [ -n "${MODELOPS_TEST_DATABASE_URL:-}" ]; then exit 0; fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then exit 0; fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "ensure-postgres: starting the local PostgreSQL cluster"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done
fi
echo "ensure-postgres: no PostgreSQL at 127.0.0.1:5432; database tests will be skipped with that reason" >&2
