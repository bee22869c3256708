"""`modelops demo`'s "where the time went" table: every step, parts under their step, and top-level
rows that add up to the total (the full demo run asserts the same on its real output: test_e2e_loop)."""

from __future__ import annotations

import re
import time

import pytest

from modelops.cli.demo_loop import LoopDriver
from modelops.cli.demo_timing import BETWEEN_STEPS, STARTUP, Timed, timing_json, timing_rows, timing_table
from modelops.config import load_config

STEPS = [
    Timed("start the embedded stack", 16.74, "stack up"),
    Timed("train v1", 9.21, "training"),
    Timed(
        "lifecycle v1",
        22.46,
        "lifecycle",
        {"waiting for the approval form": 11.02, "after the approval": 11.3},
    ),
    Timed("replay period 1 against v1", 2.51, "replay", {"scoring": 1.6, "shipping": 0.9}),
    Timed("KS check after period 1", 20.07, "ks"),
    Timed("replay period 2 against v1", 1.84, "replay", {"scoring": 1.2, "shipping": 0.6}),
]


def printed_rows(table: str) -> list[tuple[str, float, str]]:
    """(name, seconds, share text) of each printed row, parts keep their 4-space indent."""
    rows = []
    for line in table.splitlines():
        match = re.match(r"^(\s+\S.*?)\s+(\d+\.\d) s  (.*)$", line)
        if match:
            rows.append((match.group(1), float(match.group(2)), match.group(3)))
    return rows


def test_every_step_is_a_row_and_the_top_level_rows_add_up_to_the_total():
    total = sum(s.seconds for s in STEPS) + 3.3 + 1.27  # start-up 3.3 s, 1.27 s between the steps
    rows = timing_rows(STEPS, total, startup_s=3.3)
    table = timing_table(rows, total)
    printed = printed_rows(table)
    names = [name.strip() for name, _, _ in printed]
    for step in STEPS:
        assert step.name in names
        for part in step.parts:
            assert f"    {part}" in [name for name, _, _ in printed]  # indented under its step
    assert names[0] == STARTUP and names[-2] == BETWEEN_STEPS and names[-1] == "total"
    top = [(name, seconds, share) for name, seconds, share in printed if not name.startswith("    ")]
    *parts_of_total, (_, printed_total, _) = top
    assert printed_total == pytest.approx(total, abs=0.05)
    # printed seconds have one decimal: each row rounds by at most 0.05 s
    assert sum(seconds for _, seconds, _ in parts_of_total) == pytest.approx(total, abs=0.05 * len(top))
    shares = [float(share.rstrip(" %")) for _, _, share in parts_of_total]
    assert sum(shares) == pytest.approx(100.0, abs=0.05 * len(shares))
    between = next(r for r in rows if r.name == BETWEEN_STEPS)
    assert between.seconds == pytest.approx(1.27)
    assert "by kind: " in table and "lifecycle 22.5 s" in table


def test_the_json_has_the_same_rows_and_kinds():
    total = sum(s.seconds for s in STEPS) + 0.5
    rows = timing_rows(STEPS, total)
    data = timing_json(rows, total)
    assert [r["name"] for r in data["rows"] if r["level"] == 0] == [s.name for s in STEPS] + [BETWEEN_STEPS]
    assert sum(r["seconds"] for r in data["rows"] if r["level"] == 0) == pytest.approx(total, abs=0.01)
    assert data["by_kind"]["replay"] == pytest.approx(2.51 + 1.84, abs=0.01)
    assert data["failed"] is False


def test_the_driver_times_steps_and_parts_and_marks_the_failing_step():
    lines: list[str] = []
    driver = LoopDriver(load_config(), reviewer="r", narrate=lines.append)
    t0 = time.perf_counter()
    with driver.step("first", kind="a"):
        with driver.part("inner"):
            time.sleep(0.05)
        time.sleep(0.02)
    with pytest.raises(RuntimeError), driver.step("second", kind="b"):
        raise RuntimeError("boom")
    total = time.perf_counter() - t0
    first, second = driver.result.steps
    assert first.parts["inner"] >= 0.05 and first.seconds >= first.parts["inner"] + 0.02
    assert not first.failed and second.failed
    steps = [Timed(s.name, s.seconds, s.kind, s.parts, s.failed) for s in driver.result.steps]
    table = timing_table(timing_rows(steps, total), total, failed=True)
    assert "Where the time went (up to the failing step)" in table
    assert "second (failed)" in table
    assert "    inner" in table
