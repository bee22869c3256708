"""The scoring-log PostgreSQL, given a DSN: connecting, redacting, and applying the versioned SQL.

Migrations are the files ``infra/sql/NNN_*.sql`` applied in name order, each once, recorded in
``{schema}.schema_migrations``. ``{schema}`` in a file is replaced by the validated identifier from
``config.database.schema_name``; everything else that varies travels as bound parameters.

This module needs only psycopg2: the stack manager and the log sidecar import it without Prefect.
Where the DSN comes from (flag, environment, config, the stack, a password secret) is
:mod:`modelops.integrations.database`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import psycopg2

from modelops.config import PROJECT_ROOT

log = logging.getLogger(__name__)

SQL_DIR = Path(os.environ.get("MODELOPS_SQL_DIR", PROJECT_ROOT / "infra" / "sql"))
DEFAULT_SCHEMA = "modelops"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every process applying migrations.
_MIGRATION_LOCK = 0x6D6F_6465_6C6F_7073 & 0x7FFF_FFFF_FFFF_FFFF


def validate_identifier(name: str, what: str = "schema") -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} name {name!r} is not a safe SQL identifier: use [a-z_][a-z0-9_]{{0,62}}")
    return name


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ***, for logs and error messages."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def connect(dsn: str, *, connect_timeout: float = 5, application_name: str = "modelops") -> Any:
    """A psycopg2 connection (autocommit off). Raises psycopg2.OperationalError when unreachable."""
    return psycopg2.connect(
        dsn, connect_timeout=max(1, int(connect_timeout)), application_name=application_name
    )


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted(p for p in sql_dir.glob("*.sql") if _MIGRATION_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no migrations (NNN_name.sql) in {sql_dir}: set MODELOPS_SQL_DIR")
    return files


def apply_migrations(dsn: str, schema: str = DEFAULT_SCHEMA, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create ``schema`` and apply the migrations not yet applied; returns the names applied now.

    Safe to call from many processes at once: an advisory lock serialises them.
    """
    schema = validate_identifier(schema)
    files = migration_files(sql_dir)
    connection = connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            done = _applied_migrations(cursor, schema)
            applied_now = [path.name for path in files if _apply_one(cursor, schema, path, done)]
    finally:
        connection.close()
    if applied_now:
        log.info("applied migrations %s to schema %s", ", ".join(applied_now), schema)
    return applied_now


def _applied_migrations(cursor: Any, schema: str) -> dict[str, str]:
    """Create the schema and its migrations table if needed; returns version -> checksum applied."""
    cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    cursor.execute(
        f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    cursor.execute(f"SELECT version, checksum FROM {schema}.schema_migrations")
    return dict(cursor.fetchall())


def _apply_one(cursor: Any, schema: str, path: Path, done: dict[str, str]) -> bool:
    """Apply one migration file unless it already was; True when applied now."""
    version = path.name[:3]
    text = path.read_text()
    checksum = hashlib.sha256(text.encode()).hexdigest()
    if version in done:
        if done[version] != checksum:
            log.warning(
                "migration %s changed after it was applied (checksum differs); not re-applied: "
                "put schema changes in a new NNN_*.sql file",
                path.name,
            )
        return False
    cursor.execute(text.replace("{schema}", schema))
    cursor.execute(
        f"INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        (version, path.name, checksum),
    )
    return True
