"""``bench/suite_cpu.py``: a module's CPU is counted from its cgroup, daemonized descendants included."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))  # bench/ is a top-level folder, not an installed package

from bench import cgroup_cpu, suite_cpu  # noqa: E402

# A test whose only CPU is spent by a grandchild in its own session, reparented away from pytest:
# what `modelops up` does with a stack's servers. `time` or RUSAGE_CHILDREN would not see it.
DAEMON_BURNS = """
import subprocess, sys, time

BURNER = (
    "import sys, time\\n"
    "end = time.process_time() + float(sys.argv[1])\\n"
    "while time.process_time() < end: pass\\n"
    "open(sys.argv[2], 'w').close()\\n"
)
LAUNCHER = (
    "import subprocess, sys; "
    "subprocess.Popen([sys.executable, '-c', *sys.argv[1:]], start_new_session=True)"
)

def test_a_daemon_burns_cpu(tmp_path):
    done = tmp_path / "done"
    # the launcher exits at once, leaving the burner to init
    subprocess.run([sys.executable, "-c", LAUNCHER, BURNER, "BURN_S", str(done)], check=True)
    while not done.exists():
        time.sleep(0.05)
"""


def _writable_cgroup() -> bool:
    try:
        root, _ = cgroup_cpu.cgroup_root()
    except SystemExit:
        return False
    return os.access(root, os.W_OK)


@pytest.mark.skipif(not _writable_cgroup(), reason="needs a writable cgroup hierarchy (root)")
def test_the_cpu_of_a_daemonized_grandchild_is_counted_for_its_module(tmp_path):
    idle, busy = tmp_path / "test_idle.py", tmp_path / "test_busy.py"
    idle.write_text(DAEMON_BURNS.replace("BURN_S", "0"))
    busy.write_text(DAEMON_BURNS.replace("BURN_S", "3"))
    out = tmp_path / "cpu.jsonl"
    assert suite_cpu.main([str(idle), str(busy), "--out", str(out)]) == 0
    rows = {Path(row["module"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"test_idle.py", "test_busy.py"}
    assert all(row["exit_code"] == 0 and row["processes_left"] == 0 for row in rows.values())
    # the burner's own 3 CPU-s show in its module's count, whatever pytest itself took
    assert rows["test_busy.py"]["cpu_s"] - rows["test_idle.py"]["cpu_s"] >= 2.5, rows
    # a second run skips the modules already measured (an interrupted run continues)
    assert suite_cpu.main([str(idle), str(busy), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
