"""How the suite shares one machine between pytest-xdist workers (scripts/test.sh runs up to four).

Each worker hands out ports from its own block below the kernel's ephemeral range, so two workers never
pick the same port; the heaviest test files are collected first, so xdist (``--dist loadfile
--no-loadscope-reorder``) starts them first.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import network

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
    files = files_in_order([item.nodeid for item in request.session.items])
    if not HEAVY <= set(files):
        files = files_in_order(collect_the_whole_suite())
    assert set(files[:5]) >= HEAVY, files[:5]
    # a file of fast tests only comes after every file that has a slow one
    assert files.index("tests/architecture/test_import_layers.py") > files.index(
        "tests/stack/test_stack_lifecycle.py"
    )


def files_in_order(node_ids: list[str]) -> list[str]:
    files: list[str] = []
    for node_id in node_ids:
        file = node_id.split("::", 1)[0]
        if not files or files[-1] != file:
            assert file not in files, f"{file}'s tests are not together"
            files.append(file)
    return files


def collect_the_whole_suite() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(TESTS)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


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
