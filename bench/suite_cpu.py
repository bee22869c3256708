"""Where the test suite's CPU goes: each test module run alone, in its own cgroup, its CPU-seconds counted.

    sudo .venv/bin/python -m bench.suite_cpu --out /tmp/suite-cpu.jsonl [--slots 2] [tests/...]

On 2 cores ``make test`` is CPU-bound (docs/test-suite-time.md), so its wall time follows the CPU its
processes use, and that CPU is what a change to the suite has to cut. A cgroup counts every process a module
starts, the stack servers it daemonizes included (they stay in their parent's cgroup), which a process
sampler misses when they are short and ``time`` misses when they are reparented. Not counted: the
Docker engine's and its containers' CPU (their own cgroups). Each module pays here what the suite
amortizes over a pytest-xdist worker: the session fixtures (a Prefect test harness, the Kubernetes
control plane) start once per module.

``--slots`` modules run at a time, each with its own port block (``PYTEST_XDIST_WORKER``, as
tests/support/network.py reads it); the CPU-seconds do not depend on the overlap, the wall times do.
One JSON line per module is appended to ``--out`` as it finishes; modules already in it are skipped,
so an interrupted run continues. Needs root (it creates cgroups) and the Docker engine and the
control plane of ``make test`` for the modules that use them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.cgroup_cpu import cgroup_root, cpu_seconds

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def collected_modules(paths: list[str]) -> list[str]:
    """The test modules under ``paths``: files as given, folders' in the order pytest collects them
    (heaviest first, tests/conftest.py), named relative to the project root as pytest names them."""
    folders = [path for path in paths if not path.endswith(".py")]
    modules = [path for path in paths if path.endswith(".py")]
    if folders:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *folders],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        modules += [line.split("::")[0] for line in done.stdout.splitlines() if "::" in line]
    return list(dict.fromkeys(modules))


@dataclass
class Running:
    module: str
    process: subprocess.Popen[bytes]
    group: Path
    started: float


def start(module: str, slot: int, root: Path, logs: Path) -> Running:
    group = root / f"modelops-suite-cpu-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    env = dict(os.environ, PYTEST_XDIST_WORKER=f"gw{slot}")
    env.update(MODELOPS_REQUIRE_DOCKER="1", MODELOPS_REQUIRE_K8S="1")  # as make test: fail, not skip
    log = (logs / (module.replace("/", "_") + ".log")).open("wb")
    # the shell joins the group before it becomes pytest, so every descendant is counted
    command = f'echo $$ > {group}/cgroup.procs && exec "$0" -m pytest -q -p no:cacheprovider "$1"'
    process = subprocess.Popen(
        ["sh", "-c", command, sys.executable, module], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log
    )
    return Running(module, process, group, time.monotonic())


def finish(run: Running, counter: str) -> dict[str, object]:
    wall = time.monotonic() - run.started
    time.sleep(2)  # a module's processes should all be gone; any left are reported, and still counted
    left = (run.group / "cgroup.procs").read_text().split()
    row = {
        "module": run.module,
        "cpu_s": round(cpu_seconds(run.group, counter), 1),
        "wall_s": round(wall, 1),
        "exit_code": run.process.returncode,
        "processes_left": len(left),
    }
    if not left:
        run.group.rmdir()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["tests"], help="test files or folders (default: tests)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per module (appended)")
    parser.add_argument("--slots", type=int, default=2, help="modules run at a time (default 2)")
    args = parser.parse_args(argv)
    root, counter = cgroup_root()
    logs = args.out.with_suffix(".logs")
    logs.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["module"] for line in args.out.read_text().splitlines() if line.strip()}
    queue = [module for module in collected_modules(args.paths) if module not in done]
    print(f"suite_cpu: {len(queue)} modules, {args.slots} at a time; logs in {logs}", file=sys.stderr)
    running: dict[int, Running] = {}
    while queue or running:
        for slot in range(args.slots):
            if slot not in running and queue:
                running[slot] = start(queue.pop(0), slot, root, logs)
        time.sleep(0.5)
        for slot, run in list(running.items()):
            if run.process.poll() is None:
                continue
            row = finish(run, counter)
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"{row['cpu_s']:8.1f} CPU-s {row['wall_s']:7.1f} s  {run.module}", file=sys.stderr)
            del running[slot]
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    total = sum(float(row["cpu_s"]) for row in rows)
    print(f"suite_cpu: {total:.0f} CPU-s over {len(rows)} modules", file=sys.stderr)
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
