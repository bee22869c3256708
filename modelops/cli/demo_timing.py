"""Where the time of a ``modelops demo`` went: one row per step, with its wall seconds and share.

The demo measures each of its steps with :func:`time.perf_counter` (and, inside some steps, the
parts it waits on: the approval form, the answer, the rollout; scoring, shipping). This module only
arranges those figures: :func:`timing_rows` adds the process start-up before the loop and what was
spent between the steps, so the top-level rows add up to the total; :func:`timing_table` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BETWEEN_STEPS = "between the steps (log sidecar start and stop, aliases)"
STARTUP = "modelops process start-up (Python imports, before the first step)"


@dataclass(frozen=True)
class Timed:
    """What the table needs of a step: its name, kind, seconds, parts and whether it failed."""

    name: str
    seconds: float
    kind: str = ""
    parts: Mapping[str, float] = field(default_factory=dict)
    failed: bool = False


@dataclass(frozen=True)
class TimingRow:
    name: str
    seconds: float
    share: float  # of the total, 0..1
    level: int = 0  # 0: adds up to the total; 1: a part of the row above it
    kind: str = ""
    failed: bool = False


def timing_rows(
    steps: Iterable[Timed], total_s: float, startup_s: float | None = None, between: str = BETWEEN_STEPS
) -> list[TimingRow]:
    """Top-level rows (the start-up, each step, what was between them) summing to ``total_s``, each
    followed by its parts. ``total_s`` includes ``startup_s`` when it is given."""
    steps = list(steps)
    total = max(total_s, 1e-9)
    rows: list[TimingRow] = []
    accounted = 0.0
    if startup_s is not None:
        rows.append(TimingRow(STARTUP, startup_s, startup_s / total, kind="start-up"))
        accounted += startup_s
    for step in steps:
        rows.append(TimingRow(step.name, step.seconds, step.seconds / total, 0, step.kind, step.failed))
        accounted += step.seconds
        for part, seconds in step.parts.items():
            rows.append(TimingRow(part, seconds, seconds / total, 1, step.kind))
    rest = max(total_s - accounted, 0.0)
    rows.append(TimingRow(between, rest, rest / total, kind="other"))
    return rows


def by_kind(rows: Iterable[TimingRow]) -> dict[str, float]:
    """Seconds per kind of step (top-level rows only), largest first."""
    sums: dict[str, float] = {}
    for row in rows:
        if row.level == 0:
            sums[row.kind or row.name] = sums.get(row.kind or row.name, 0.0) + row.seconds
    return dict(sorted(sums.items(), key=lambda item: -item[1]))


def timing_table(rows: list[TimingRow], total_s: float, failed: bool = False) -> str:
    """The table as printed: seconds with one decimal, shares in whole percent, and the total."""
    title = "Where the time went" + (" (up to the failing step)" if failed else "")
    names = [("    " if row.level else "  ") + row.name + (" (failed)" if row.failed else "") for row in rows]
    width = max([len(n) for n in names] + [len("  total")])
    lines = ["", title, "-" * len(title)]
    for name, row in zip(names, rows, strict=True):
        share = f"{100 * row.share:5.1f} %"
        lines.append(
            f"{name.ljust(width)}  {row.seconds:7.1f} s  {share if row.level == 0 else f'({share.strip()})'}"
        )
    lines.append(f"{'  total'.ljust(width)}  {total_s:7.1f} s  100.0 %")
    kinds = by_kind(rows)
    if kinds:
        lines.append("  by kind: " + ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in kinds.items()))
    return "\n".join(lines)


def timing_json(rows: list[TimingRow], total_s: float, failed: bool = False) -> dict[str, Any]:
    return {
        "total_s": round(total_s, 3),
        "failed": failed,
        "rows": [
            {
                "name": row.name,
                "seconds": round(row.seconds, 3),
                "share": round(row.share, 4),
                "level": row.level,
                "kind": row.kind,
                "failed": row.failed,
            }
            for row in rows
        ],
        "by_kind": {kind: round(seconds, 3) for kind, seconds in by_kind(rows).items()},
    }
