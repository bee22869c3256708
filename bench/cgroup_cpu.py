"""A cgroup that counts the CPU of every process started in it, detached ones too (needs root).

Used by :mod:`bench.suite_cpu` (one group per test module) and :mod:`bench.standby_cpu` (one per run
of the engine-standby bench): a process joins by writing its pid to ``<group>/cgroup.procs``, its
descendants follow, and the group's total stays readable after they have all exited.
"""

from __future__ import annotations

from pathlib import Path


def cgroup_root() -> tuple[Path, str]:
    """The mounted cgroup hierarchy that counts CPU (v1 cpuacct, else v2), and the file of a group's total."""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, options, *_ = line.split()
        if kind == "cgroup" and "cpuacct" in options.split(","):
            return Path(mount), "cpuacct.usage"  # nanoseconds
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, *_ = line.split()
        if kind == "cgroup2":
            return Path(mount), "cpu.stat"  # usage_usec
    raise SystemExit("bench: no cgroup hierarchy that counts CPU is mounted")


def cpu_seconds(group: Path, counter: str) -> float:
    text = (group / counter).read_text()
    if counter == "cpuacct.usage":
        return int(text) / 1e9
    usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
    return int(usage.split()[1]) / 1e6
