"""How the suite shares one machine between pytest-xdist workers (scripts/test.sh runs up to four).

Each worker hands out ports from its own block below the kernel's ephemeral range, so two workers never
pick the same port; the heaviest test files are collected first, so xdist (``--dist loadfile
--no-loadscope-reorder``) starts them first; the files on the Prefect test harness are collected together
and one worker runs them, on one harness it starts for the first and stops after the last.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from support import network, shared_harness

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TESTS = PROJECT_ROOT / "tests"

BLOCK_OF = """
import json, os, sys
sys.path.insert(0, {tests!r})
from support import network
print(json.dumps([network.free_port(), network.free_ports(3)]))
"""


def _ports_in_worker(worker: str) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_OF.format(tests=str(TESTS))],
        env={"PATH": "/usr/bin:/bin", "PYTEST_XDIST_WORKER": worker},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_each_worker_has_its_own_port_block_below_the_ephemeral_range():
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    blocks = {}
    for index in range(network.MAX_WORKERS):
        start = network.FIRST_PORT + index * network.PORTS_PER_WORKER
        blocks[index] = range(start, start + network.PORTS_PER_WORKER)
        assert blocks[index].stop <= ephemeral_start
        assert all(port in blocks[index] for port in _ports_in_worker(f"gw{index}"))


def test_ports_are_not_handed_out_twice_and_a_run_is_consecutive_and_free():
    first = network.free_port()
    run = network.free_ports(3)
    later = network.free_port()
    assert len({first, run, run + 1, run + 2, later}) == 5
    for port in (run, run + 1, run + 2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: it would raise otherwise


def test_a_port_something_listens_on_is_skipped():
    with socket.socket() as listener:
        for _ in range(20):  # the next candidate of this worker's block, unless another process holds it
            taken = network.free_port() + 1
            try:
                listener.bind(("127.0.0.1", taken))
                break
            except OSError:
                continue
        listener.listen()
        assert network.free_port() != taken


HEAVY = {"tests/e2e/test_e2e_loop.py", "tests/containers/test_docker_worker.py"}


@pytest.mark.slow  # alone, it collects the whole suite in a subprocess
def test_the_heaviest_files_are_collected_first(request: pytest.FixtureRequest):
    """The order this run collected, when it collected the whole suite (every pytest-xdist worker does,
    and runs the files in that order); otherwise the suite collected in a subprocess, which imports every
    test module (~15 CPU-seconds)."""
    files = files_in_order([node_id for node_id, _ in the_whole_suite(request)])
    assert set(files[:5]) >= HEAVY, files[:5]
    # a file of fast tests only comes after every file that has a slow one
    assert files.index("tests/architecture/test_import_layers.py") > files.index(
        "tests/stack/test_stack_lifecycle.py"
    )


@pytest.mark.slow
def test_the_harness_files_are_the_files_whose_tests_get_the_harness_and_are_collected_together(
    request: pytest.FixtureRequest,
):
    """What the pytest-xdist controller reads from the sources (it collects nothing) is what collection
    finds, the fixtures that other fixtures ask for included."""
    suite = the_whole_suite(request)
    on_the_harness = {
        node_id.split("::", 1)[0] for node_id, fixtures in suite if shared_harness.FIXTURE in fixtures
    }
    assert on_the_harness == shared_harness.harness_files()
    files = files_in_order([node_id for node_id, _ in suite])
    places = sorted(files.index(file) for file in on_the_harness)
    assert places == list(range(places[0], places[0] + len(places))), "the harness files are not together"


def test_one_worker_runs_every_harness_file():
    """A real pytest-xdist run of two harness files and two others on two workers (tests/support/
    scheduling_probe.py records where each test goes and runs none): without the harness unit, the
    two harness files go to different workers."""
    harness = ["tests/monitoring/test_events_model.py", "tests/stack/test_early_start.py"]
    others = ["tests/architecture/test_import_layers.py", "tests/serving/test_grpc_api.py"]
    assert set(harness) <= shared_harness.harness_files() and not set(others) & shared_harness.harness_files()
    placed = _probe("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", *harness, *others)
    workers = {
        file: {line["worker"] for line in placed if _in(line["nodeid"], file)} for file in harness + others
    }
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
    assert workers[harness[0]] == workers[harness[1]], workers


def _in(node_id: str, file: str) -> bool:
    return node_id.split("::", 1)[0] == file


@dataclass
class _Item:
    nodeid: str


def test_the_harness_runs_from_the_first_harness_module_to_the_last():
    """The policy of :class:`OnDemandHarness`, with a server that only records (the real harness is
    what every harness module uses)."""
    events: list[str] = []

    @contextmanager
    def server() -> Iterator[None]:
        events.append("start")
        yield
        events.append("stop")

    harness = shared_harness.OnDemandHarness(server)
    in_a_harness_file = _Item("tests/monitoring/test_events_model.py::test_unknown_event_name_is_refused")
    elsewhere = _Item("tests/architecture/test_import_layers.py::test_no_import_cycle")
    assert shared_harness.schedule_unit(in_a_harness_file.nodeid) == shared_harness.UNIT
    for next_item in (in_a_harness_file, in_a_harness_file, elsewhere):  # three harness modules, then another
        harness.start()
        harness.next_item = next_item
        harness.stop_unless_needed_next()
    assert events == ["start", "stop"] and not harness.running
    harness.start()  # a harness module later on (a run in one process, files named one by one)
    harness.next_item = None  # the last test of the run
    harness.stop_unless_needed_next()
    assert events == ["start", "stop", "start", "stop"] and harness.starts == 2


def files_in_order(node_ids: list[str]) -> list[str]:
    files: list[str] = []
    for node_id in node_ids:
        file = node_id.split("::", 1)[0]
        if not files or files[-1] != file:
            assert file not in files, f"{file}'s tests are not together"
            files.append(file)
    return files


def the_whole_suite(request: pytest.FixtureRequest) -> list[tuple[str, frozenset[str]]]:
    """Node ids and fixtures of the whole suite in collection order: this run's, when it collected the
    whole suite, else a collection in a subprocess."""
    items = request.session.items
    if HEAVY <= {item.nodeid.split("::", 1)[0] for item in items}:
        return [(item.nodeid, frozenset(getattr(item, "fixturenames", ()))) for item in items]
    return _collected_in_a_subprocess()


@cache
def _collected_in_a_subprocess() -> list[tuple[str, frozenset[str]]]:
    return [(line["nodeid"], frozenset(line["fixtures"])) for line in _probe("--collect-only", str(TESTS))]


PROBE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "support.scheduling_probe"]


def _probe(*args: str) -> list[dict]:
    """Run pytest with the scheduling probe (tests/support/scheduling_probe.py); its records."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "probe.jsonl"
        env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELOPS_SCHEDULING_PROBE": str(out)}
        env.pop("PYTEST_XDIST_WORKER", None)
        done = subprocess.run(
            PROBE + list(args), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        # 5: no tests ran (the probe runs none)
        assert done.returncode in (0, 5), done.stdout[-2000:] + done.stderr[-2000:]
        return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize(("cores", "expected"), [(1, 2), (2, 4), (8, 4)])
def test_the_default_worker_count_is_two_per_core_within_the_port_blocks(tmp_path, cores, expected):
    script = (PROJECT_ROOT / "scripts" / "test.sh").read_text()
    line = next(line for line in script.splitlines() if line.startswith('workers="${MODELOPS_TEST_WORKERS'))
    fake_nproc = tmp_path / "nproc"
    fake_nproc.write_text(f"#!/bin/sh\necho {cores}\n")
    fake_nproc.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", f'{line}\necho "$workers"'],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == expected <= network.MAX_WORKERS
