"""Fixtures shared by every test: free loopback ports and a throw-away PostgreSQL database.

PostgreSQL: ``MODELOPS_TEST_DATABASE_URL`` (a server DSN) or 127.0.0.1:5432 as user postgres.
Each test that asks for ``postgres_url`` gets its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.control_plane import ControlPlane
from support.network import free_port

from modelops.integrations.database import apply_migrations

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# The heaviest modules first (a whole stack, images, a control plane): with pytest-xdist handing out
# whole files in this order (scripts/test.sh: --dist loadfile --no-loadscope-reorder), the long ones
# overlap each other and the many short ones fill in at the end, instead of one long file running alone.
COST_TIERS = (("e2e", "docker"), ("k8s", "browser"), ("slow",))


def _cost_tier(item: pytest.Item) -> int:
    marks = {mark.name for mark in item.iter_markers()}
    return next((tier for tier, names in enumerate(COST_TIERS) if marks.intersection(names)), len(COST_TIERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    module_tier: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        module_tier[module] = min(module_tier.get(module, len(COST_TIERS)), _cost_tier(item))
    position = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (module_tier[item.nodeid.split("::", 1)[0]], position[id(item)]))


@pytest.fixture(autouse=True)
def _log_handlers_outlive_captured_streams() -> Iterator[None]:
    """Point handlers left on a closed stream (a test's captured stderr) back at the real stderr.

    Prefect's console handler and ``logging.basicConfig`` (run by in-process ``modelops`` calls) bind
    to the ``sys.stderr`` of the moment; when that was a test's capture, later tests would log into a
    closed file and Prefect's print-as-log turns the error report into endless recursion.
    """
    yield
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.__stderr__  # not setStream(): it flushes the closed stream first
                console = getattr(handler, "console", None)
                if console is not None:
                    console.file = sys.__stderr__


@pytest.fixture(scope="session", autouse=True)
def _relocated_stack_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Remove the PostgreSQL data this session's stack homes got under /var/lib/modelops.

    As root, a stack home under pytest's mode-700 temp directory keeps its PostgreSQL data in
    ``/var/lib/modelops/postgres-<hash>`` (``modelops.stack.postgres.place``); ``down`` keeps data.
    """
    base = str(tmp_path_factory.getbasetemp())
    yield
    for marker in Path("/var/lib/modelops").glob("postgres-*/stack-home"):
        try:
            home = marker.read_text().strip()
        except OSError:
            continue
        if home.startswith(base + os.sep):
            shutil.rmtree(marker.parent, ignore_errors=True)


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
            # with it, the Prefect and MLflow databases a stack on this DSN created next to it
            for database in (name, f"{name}_prefect", f"{name}_mlflow"):
                cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def scoring_db(postgres_url: str) -> str:
    """``postgres_url`` with the project's migrations applied (``modelops.scoring_log`` and friends)."""
    apply_migrations(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect server (SQLite) for the whole session; ~20 s to start, once.

    Given 300 s to answer, as the stacks' components are (tests/support/stack_home.py): on a 2-core
    machine that the suite and a busy loop saturate, Prefect's 120 s was seen to run out.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real Kubernetes v1.20 control plane (+ fake node) for one test module, stopped after it.

    Not one per session: idle, the plane's processes use ~5 CPU-seconds a minute, and the modules that
    need it run early (their `k8s` marker puts them in the second cost tier), so a session-wide plane
    idled for the rest of the run (312 CPU-seconds in all in a loaded clean-clone run, README, Tests).
    """
    plane = ControlPlane.start(tmp_path_factory.mktemp("k8s-run"))
    try:
        yield plane
    finally:
        plane.stop()
