"""One Prefect test harness for every module that needs one, running only while they run.

``prefect_test_harness`` (a temporary Prefect server on SQLite) costs ~16 CPU-seconds to start and
~1.2 a minute idle. As a session fixture, each pytest-xdist worker started its own the first time one
of its files asked, and kept it idle to the end of the run: four servers for the whole run. Now:

* the files that use the harness are one scheduling unit (:func:`schedule_unit`): the same pytest-xdist
  worker runs them one after the other (:class:`HarnessGroupedFileScheduling`), and a run in one
  process collects them together (``tests/conftest.py`` orders by unit);
* :class:`OnDemandHarness` starts the server when a module first needs it and stops it after a module
  when the next test of this process is not in a harness file (``tests/conftest.py``'s
  ``prefect_harness`` asks at the module's teardown).

So a whole run starts one harness and stops it after the last file that uses it. A file is a harness
file when its source names the fixture (:func:`harness_files`, read by the pytest-xdist controller,
which collects nothing); ``tests/architecture/test_suite_scheduling.py`` checks that this finds every
collected test that gets the fixture.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from functools import cache
from pathlib import Path

import pytest
from xdist.scheduler import LoadFileScheduling

FIXTURE = "prefect_harness"
UNIT = "prefect-harness"  # the scheduling unit of every harness file
TESTS = Path(__file__).resolve().parents[1]
_NAMES_THE_FIXTURE = re.compile(rf"\b{FIXTURE}\b")


@cache
def harness_files() -> frozenset[str]:
    """Node-id paths (``tests/x/test_y.py``) of the test files whose source names the fixture."""
    root = TESTS.parent
    return frozenset(
        path.relative_to(root).as_posix()
        for path in TESTS.rglob("test_*.py")
        if _NAMES_THE_FIXTURE.search(path.read_text(encoding="utf-8"))
    )


def schedule_unit(node_id: str) -> str:
    """What is scheduled as one piece: the test file, or :data:`UNIT` for every harness file."""
    file = node_id.split("::", 1)[0]
    return UNIT if file in harness_files() else file


class HarnessGroupedFileScheduling(LoadFileScheduling):
    """``--dist loadfile``, with every harness file in one unit (one worker, one after the other)."""

    def _split_scope(self, nodeid: str) -> str:
        return schedule_unit(nodeid)


def prefect_test_server() -> AbstractContextManager[object]:
    from prefect.testing.utilities import prefect_test_harness

    # 300 s to answer, as the stacks' components have (tests/support/stack_home.py): on a 2-core
    # machine that the suite and a busy loop saturate, Prefect's 120 s was seen to run out.
    return prefect_test_harness(server_startup_timeout=300)


class OnDemandHarness:
    """A ``prefect_test_harness`` started on first use, stopped when the next test is in no harness file."""

    def __init__(self, server: Callable[[], AbstractContextManager[object]] = prefect_test_server) -> None:
        self._server = server
        self._running: ExitStack | None = None
        self.starts = 0  # how many times this process started one (the scheduling test reads it)
        self.next_item: pytest.Item | None = None  # set before each test's teardown (tests/conftest.py)

    @property
    def running(self) -> bool:
        return self._running is not None

    def start(self) -> None:
        if self._running is not None:
            return
        stack = ExitStack()
        stack.enter_context(self._server())
        self._running = stack
        self.starts += 1

    def stop_unless_needed_next(self) -> None:
        """At a module's teardown: keep the server when the next test of this process is in a harness
        file (some tests of a harness file do without the fixture; the next one may not)."""
        following = self.next_item
        if following is not None and schedule_unit(following.nodeid) == UNIT:
            return
        self.stop()

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.close()


HARNESS = OnDemandHarness()
