"""The scoring-log database: where its DSN comes from, with its password read from a secret.

:func:`resolve_database_url` looks in order at ``--database-url``, ``MODELOPS_DATABASE_URL``,
``config.database.url`` and the embedded stack's state file. Connecting and the versioned SQL are
:mod:`modelops.integrations.postgres` (re-exported here, so one import serves a caller of both).
"""

from __future__ import annotations

import os

from psycopg2.extensions import make_dsn

from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.postgres import (
    DEFAULT_SCHEMA,
    SQL_DIR,
    apply_migrations,
    connect,
    migration_files,
    redact,
    validate_identifier,
)
from modelops.secrets import resolve_secret
from modelops.stack import StackNotRunning, endpoints

NO_DATABASE = "no database: run `modelops up` or set MODELOPS_DATABASE_URL"


class DatabaseUnavailable(RuntimeError):
    """No scoring-log database could be found or reached; the message says how to get one."""


def resolve_database_url(config: ModelOpsConfig | None = None, explicit: str | None = None) -> str:
    """``--database-url``, then ``MODELOPS_DATABASE_URL``, then ``config.database.url``, then the stack."""
    env = os.environ.get("MODELOPS_DATABASE_URL")
    if explicit or env:
        return _with_password(explicit or env or "", config)
    config = config or load_config()
    if config.database.url:
        return _with_password(config.database.url, config)
    try:
        url = endpoints(config).database_url
    except StackNotRunning as exc:
        raise DatabaseUnavailable(str(exc)) from None
    except (OSError, ValueError) as exc:  # an unreadable state file
        raise DatabaseUnavailable(f"{NO_DATABASE} ({type(exc).__name__}: {exc})") from None
    if not url:
        raise DatabaseUnavailable(NO_DATABASE)
    return _with_password(url, config)


def _with_password(dsn: str, config: ModelOpsConfig | None) -> str:
    if config is None or config.database.password is None:
        return dsn
    return str(make_dsn(dsn, password=resolve_secret(config.database.password)))


__all__ = [
    "DEFAULT_SCHEMA",
    "SQL_DIR",
    "DatabaseUnavailable",
    "apply_migrations",
    "connect",
    "migration_files",
    "redact",
    "resolve_database_url",
    "validate_identifier",
]
