"""CPU-seconds of N successive flow runs through the engine-standby launcher, standbys included.

    sudo python -m bench.standby_cpu --runs 6                      # this checkout's launcher
    sudo python -m bench.standby_cpu --runs 6 --project ../old     # another checkout's, to compare

This process plays the worker (the launcher's parent, as Prefect's worker is); the engine is a
stand-in that prints one line, so what is measured is the launcher and its standbys: imports of
Prefect and ``flows/``, hand-overs, forks. Every process it starts, detached ones too, stays in a
cgroup made for the run (:mod:`bench.cgroup_cpu`: needs root), read once
the last of them is gone (the standbys leave within a second of their worker).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cgroup_cpu import cgroup_root, cpu_seconds

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def runs_in_group(project: Path, runs: int) -> list[tuple[str, float]]:
    """Start ``runs`` runs one after the other, each once the standby for the next is ready; returns
    each run's kind (cold: the launcher became the engine; warm: a standby ran it) and wall time."""
    kinds = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        (work / "standin_engine.py").write_text("print('engine ran')\n")
        env = {
            **os.environ,
            "PYTHONPATH": f"{project}{os.pathsep}{work}",
            "MODELOPS_ENGINE_STANDBY_ENGINE": "standin_engine",
            "MODELOPS_ENGINE_STANDBY_DIR": str(work / "standby"),
        }
        for index in range(runs):
            started = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "modelops.stack.engine_standby"],
                env={**env, "PREFECT__FLOW_RUN_ID": f"run-{index}"}, cwd=work, capture_output=True, text=True,
            )  # fmt: skip
            kinds.append(("warm" if "runs flow run" in run.stderr else "cold", time.perf_counter() - started))
            deadline = time.monotonic() + 120
            while not list((work / "standby").glob("*.sock")) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # a standby started by this run is done importing before the next run
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.standby_cpu")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT, help="the checkout whose launcher runs")
    args = parser.parse_args(argv)
    root, counter = cgroup_root()
    if not os.access(root, os.W_OK):
        print(f"bench.standby_cpu: needs a writable cgroup hierarchy at {root} (root)")
        return 2
    group = root / f"modelops-standby-bench-{os.getpid()}"
    group.mkdir()
    try:
        child = os.fork()
        if child == 0:  # the worker: in the group with everything it starts
            (group / "cgroup.procs").write_text(str(os.getpid()))
            runs = runs_in_group(args.project.resolve(), args.runs)
            timings = ", ".join(f"{kind} {seconds * 1000:.0f} ms" for kind, seconds in runs)
            print(f"runs: {timings}", flush=True)
            os._exit(0)
        os.waitpid(child, 0)
        deadline = time.monotonic() + 60
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.2)  # the standbys noticing their worker is gone
        cpu_s = cpu_seconds(group, counter)
        print(f"{args.runs} runs through {args.project.resolve()}: {cpu_s:.1f} CPU-seconds in all")
    finally:
        if not (group / "cgroup.procs").read_text().strip():
            group.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
