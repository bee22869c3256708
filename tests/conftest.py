"""Fixtures shared by every test: free loopback ports and a throw-away PostgreSQL database.

PostgreSQL: ``MODELOPS_TEST_DATABASE_URL`` (a server DSN) or 127.0.0.1:5432 as user postgres.
Each test that asks for ``postgres_url`` gets its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


def _admin_connection():
    import psycopg2

    try:
        connection = psycopg2.connect(SERVER_DSN, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"no PostgreSQL at {SERVER_DSN} ({str(exc).strip()}); start it or set MODELOPS_TEST_DATABASE_URL"
        )
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """DSN of a new, empty database on the test server; dropped after the test."""
    name = f"modelops_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = SERVER_DSN.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect server (SQLite) for the whole session; ~20 s to start, once."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
