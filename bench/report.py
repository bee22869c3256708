"""The benchmark table: one row per figure, measured next to its floor in the same run.

A row says what was measured (``value`` in ``unit``), the floor it is compared with (the same work
done the cheapest way on the same machine at the same moment), ``ratio`` = value / floor, the goal
in words and whether it was met. Goals are ratios because these machines are shared and noisy:
absolute figures move with the load, ratios measured side by side move much less.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Row:
    section: str
    figure: str
    value: float | None
    unit: str
    goal: str
    met: bool | None  # None: no goal for this figure (context only) or not measurable
    floor: float | None = None
    ratio: float | None = None
    command: str = ""
    note: str = ""
    machine: str = ""
    date: str = ""
    # with --repeat N: value, floor and ratio are the medians of N runs; the spread is min..max
    runs: int = 1
    value_min: float | None = None
    value_max: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    met_runs: int | None = None  # runs whose own figure met the goal


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=machine_info)
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    rows: list[Row] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # raw figures and errors per section

    def add(self, rows: list[Row]) -> None:
        label = f"{self.machine['host']} ({self.machine['cpus']} CPU, {self.machine['cpu_model']})"
        for row in rows:
            row.machine, row.date = label, self.date
            if row.ratio is None and row.value is not None and row.floor:
                row.ratio = row.value / row.floor
        self.rows.extend(rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "machine": self.machine,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "rows": [asdict(r) for r in self.rows],
            "sections": self.sections,
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, default=_plain) + "\n")
        return path

    def table(self) -> str:
        head = ("section", "figure", "value", "unit", "floor", "ratio", "goal", "met")
        body = [
            (
                r.section,
                r.figure,
                fmt_number(r.value) + _spread(r.value_min, r.value_max, fmt_number),
                r.unit,
                fmt_number(r.floor),
                ("" if r.ratio is None else f"{r.ratio:.2f}") + _spread(r.ratio_min, r.ratio_max, _ratio),
                r.goal,
                met_text(r),
            )
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
        runs = max((r.runs for r in self.rows), default=1)
        lines = [
            f"date {self.date}; {self.machine['cpus']} CPUs ({self.machine['cpu_model']}); "
            f"load average at start {', '.join(str(x) for x in self.machine['loadavg_at_start'])}"
            + (f"; median of {runs} runs (min..max)" if runs > 1 else ""),
            "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
        met = [r for r in self.rows if r.met is not None]
        lines.append(f"goals met: {sum(1 for r in met if r.met)}/{len(met)}")
        notes = [r for r in self.rows if r.note]
        if notes:
            lines.append("notes:")
            lines += [f"  {r.section}/{r.figure}: {r.note}" for r in notes]
        commands = sorted({(r.section, r.command) for r in self.rows if r.command})
        if commands:
            lines.append("reproduce:")
            lines += [f"  {section}: {command}" for section, command in commands]
        return "\n".join(lines)


def median_report(reports: list[Report]) -> Report:
    """One report from N runs of the same suite: per figure the median value, floor and ratio, the
    spread (min..max) of value and ratio, and the goal met when it was met in most runs."""
    combined = Report(machine=reports[0].machine, date=reports[0].date)
    keys: list[tuple[str, str]] = []
    by_key: dict[tuple[str, str], list[Row]] = {}
    for report in reports:
        for row in report.rows:
            key = (row.section, row.figure)
            if key not in by_key:
                keys.append(key)
            by_key.setdefault(key, []).append(row)
    for key in keys:
        rows = by_key[key]
        values = [r.value for r in rows if r.value is not None and not math.isnan(r.value)]
        ratios = [r.ratio for r in rows if r.ratio is not None]
        floors = [r.floor for r in rows if r.floor is not None]
        judged = [r.met for r in rows if r.met is not None]
        met_runs = sum(1 for m in judged if m) if judged else None
        combined.rows.append(
            replace(
                rows[0],
                value=statistics.median(values) if values else None,
                floor=statistics.median(floors) if floors else None,
                ratio=statistics.median(ratios) if ratios else None,
                runs=len(rows),
                value_min=min(values, default=None),
                value_max=max(values, default=None),
                ratio_min=min(ratios, default=None),
                ratio_max=max(ratios, default=None),
                met_runs=met_runs,
                met=None if met_runs is None else 2 * met_runs > len(judged),
                note="; ".join(dict.fromkeys(r.note for r in rows if r.note)),
            )
        )
    combined.sections = {"runs": [report.as_dict() for report in reports]}
    return combined


def met_text(row: Row) -> str:
    text = {True: "yes", False: "NO", None: "-"}[row.met]
    if row.met is not None and row.runs > 1 and row.met_runs is not None:
        text += f" ({row.met_runs}/{row.runs})"
    return text


def _spread(low: float | None, high: float | None, fmt: Callable[[float | None], str]) -> str:
    if low is None or high is None or low == high:
        return ""
    return f" ({fmt(low)}..{fmt(high)})"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def fmt_number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path | datetime):
        return str(value)
    return float(value)
