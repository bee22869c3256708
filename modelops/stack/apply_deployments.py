"""Apply the deployments of a ``prefect.yaml`` to the running Prefect server, each on its own.

Run by ``modelops up`` as ``python -m modelops.stack.apply_deployments --pool P --prefect-file F
--report R`` with the stack's environment (PREFECT_API_URL, PREFECT_HOME), in the background while
the worker starts. It makes sure the process work pool exists, then runs Prefect's own
``prefect --no-prompt deploy --name <each> --pool P --prefect-file F`` for every deployment in the
file, each in its own process (two at a time): one broken deployment is reported by name and does
not stop the others. Success is the command's exit status. The outcome goes to the report file as JSON::

    {"applied": ["train", ...], "failed": {"broken": "<last line Prefect printed>"}}

and every command's output, with one ``deployment <name>: applied | failed`` line each, to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from modelops.stack.components import console_script, deployment_names

# Prefect's console wraps at the terminal width; a wide one keeps each error message on one line.
_WIDE_CONSOLE = {"COLUMNS": "300", "TERM": "dumb"}
_GENERIC_LINES = {"An exception occurred."}
# Two at a time: each `prefect deploy` spends most of its seconds importing Prefect and the flow.
PARALLEL = 2


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def ensure_work_pool(name: str) -> None:
    """Create the process work pool unless it exists (``prefect deploy`` refuses a missing pool)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass  # the worker created it at the same moment


def deploy_command(prefect_file: Path, name: str, pool: str) -> list[str]:
    """``prefect deploy`` for one deployment of the file, onto ``pool`` whatever the file says."""
    return [
        console_script("prefect"), "--no-prompt", "deploy",
        "--name", name, "--pool", pool, "--prefect-file", str(prefect_file),
    ]  # fmt: skip


def apply_one(prefect_file: Path, name: str, pool: str, timeout_s: float) -> str | None:
    """None on success, else the reason: the last meaningful line ``prefect deploy`` printed."""
    try:
        result = subprocess.run(
            deploy_command(prefect_file, name, pool),
            env={**os.environ, **_WIDE_CONSOLE},
            cwd=prefect_file.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"prefect deploy did not finish within {timeout_s:.0f} s"
    print(result.stdout + result.stderr, flush=True)
    if result.returncode == 0:
        return None
    return last_meaningful_line(result.stdout + result.stderr) or f"prefect deploy exited {result.returncode}"


def last_meaningful_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() not in ("", *_GENERIC_LINES)]
    return lines[-1] if lines else ""


def apply_all(prefect_file: Path, pool: str, timeout_s: float, parallel: int = PARALLEL) -> Outcome:
    names = deployment_names(prefect_file)
    with ThreadPoolExecutor(max_workers=parallel) as pool_of_deploys:
        reasons = list(
            pool_of_deploys.map(lambda name: apply_one(prefect_file, name, pool, timeout_s), names)
        )
    outcome = Outcome()
    for name, reason in zip(names, reasons, strict=True):
        if reason is None:
            outcome.applied.append(name)
            print(f"deployment {name}: applied", flush=True)
        else:
            outcome.failed[name] = reason
            print(f"deployment {name}: failed: {reason}", flush=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelops.stack.apply_deployments")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--prefect-file", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path, help="where to write the outcome (JSON)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per deployment")
    args = parser.parse_args(argv)
    ensure_work_pool(args.pool)
    outcome = apply_all(args.prefect_file.resolve(), args.pool, args.timeout)
    args.report.write_text(json.dumps(asdict(outcome)))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
