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
from support.shared_harness import HARNESS, HarnessGroupedFileScheduling, schedule_unit

from modelops.integrations.database import apply_migrations

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# The heaviest modules first (a whole stack, images, a control plane): with pytest-xdist handing out
# whole files in this order (scripts/test.sh: --dist loadfile --no-loadscope-reorder), the long ones
# overlap each other and the many short ones fill in at the end, instead of one long file running alone.
# The files on the Prefect test harness are one unit (support/shared_harness.py): collected together,
# at the place of the heaviest of them, and run by one worker.
COST_TIERS = (("e2e", "docker"), ("k8s", "browser"), ("slow",))


def _cost_tier(item: pytest.Item) -> int:
    marks = {mark.name for mark in item.iter_markers()}
    return next((tier for tier, names in enumerate(COST_TIERS) if marks.intersection(names)), len(COST_TIERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    module_tier: dict[str, int] = {}
    unit_tier: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        module, unit, tier = item.nodeid.split("::", 1)[0], schedule_unit(item.nodeid), _cost_tier(item)
        module_tier[module] = min(module_tier.get(module, len(COST_TIERS)), tier)
        unit_tier[unit] = min(unit_tier.get(unit, len(COST_TIERS)), tier)
        first_seen.setdefault(module, index)
        first_seen.setdefault(unit, index)

    def place(item: pytest.Item) -> tuple[int, ...]:
        module, unit = item.nodeid.split("::", 1)[0], schedule_unit(item.nodeid)
        return (unit_tier[unit], first_seen[unit], module_tier[module], first_seen[module])

    items.sort(key=place)  # stable: a module's tests keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` with the harness files in one unit; any other ``--dist`` as pytest-xdist has it."""
    if config.getoption("dist") != "loadfile":
        return None
    return HarnessGroupedFileScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    HARNESS.next_item = nextitem  # read by prefect_harness's teardown, at the module's last test
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish() -> None:
    # after the fixtures' own teardown: a run stopped early (-x, Ctrl-C) tears its last module down here,
    # with no next test recorded, so the harness may still be running
    HARNESS.stop()


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


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect server (SQLite), shared by the modules that run one after the other.

    Started by the first module that asks; stopped after a module when the next test of this process is
    not in a harness file (support/shared_harness.py), so one server serves the whole harness unit.
    """
    HARNESS.start()
    yield
    HARNESS.stop_unless_needed_next()


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real Kubernetes v1.20 control plane (+ fake node) for one test module, stopped after it.

    Not one per session: idle, the plane's processes use ~5 CPU-seconds a minute, and the modules that
    need it run early (their `k8s` marker puts them in the second cost tier), so a session-wide plane
    idled for the rest of the run (312 CPU-seconds in all in a loaded clean-clone run,
    docs/test-suite-time.md).
    """
    plane = ControlPlane.start(tmp_path_factory.mktemp("k8s-run"))
    try:
        yield plane
    finally:
        plane.stop()
