"""A pytest plugin that records what a run would do, and runs nothing (for test_suite_scheduling.py).

    PYTHONPATH=tests MODELOPS_SCHEDULING_PROBE=out.jsonl pytest -p support.scheduling_probe ...

Appends one JSON line per test to the file: with ``--collect-only``, ``{"nodeid", "fixtures"}`` in
collection order; otherwise ``{"worker", "nodeid"}`` where the test would run (the pytest-xdist worker,
or null without one), in the order it would, and the test itself is not run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def _record(line: dict[str, object]) -> None:
    with Path(os.environ["MODELOPS_SCHEDULING_PROBE"]).open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        for item in session.items:
            _record({"nodeid": item.nodeid, "fixtures": sorted(getattr(item, "fixturenames", ()))})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    _record({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "nodeid": item.nodeid})
    return True  # handled: the test is not run
