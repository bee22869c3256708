"""Which process a recorded PID names: the PID with the process's start time in clock ticks after boot.

No psutil here: the stack's state file (and with it the client image's ``ship`` and ``traffic``)
reads these records without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``), or None once it is gone.

    With the PID it names one process for the whole of its life. psutil's ``create_time()`` cannot: it
    adds the boot time read afresh from ``/proc/stat`` on every call, and that moves by a whole second
    when NTP adjusts the wall clock, so two reads of one live process's create_time can differ by 1 s.
    """
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])  # starttime, the 22nd field


def is_running(pid: int, started: int | None) -> bool:
    """``pid`` names a live process (not a zombie) that started at ``started`` (None: any start)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z" and (started is None or int(fields[19]) == started)


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (in parentheses, may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def upgrade_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A process record read from a state file, with psutil's ``create_time`` (files written before
    start ticks) replaced by its :func:`start_ticks`: exact unless the wall clock was adjusted since."""
    if "create_time" in raw:
        create_time = raw.pop("create_time")
        if create_time is not None:
            raw.setdefault("start_ticks", round((create_time - boot_time()) * CLOCK_TICKS))
    return raw


def boot_time() -> float:
    """``btime`` of ``/proc/stat``, as psutil reads it: the wall clock now minus the time since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")
