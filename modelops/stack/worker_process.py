"""The stack's worker process: ``prefect worker start --pool P ...``, started beside the Prefect server.

    python -m modelops.stack.worker_process [--wait-for-pool S [--unless FILE]] --pool P [worker options]

``modelops up`` starts the worker together with the servers instead of after them: Prefect's CLI takes
seconds to import, and that now overlaps the servers' start. The worker must not start before its work
pool exists, though: a worker creates a missing pool with Prefect's default job template (without the
stack's command, :mod:`modelops.stack.work_pools`) and keeps that template until its next heartbeat,
and a worker started against an API that does not answer yet retries only every ~20 s and loses its
first events. So this process imports Prefect's CLI, waits up to S seconds until the Prefect server
(``$PREFECT_API_URL``) lists pool P (the deployment step, :mod:`modelops.stack.apply_deployments`,
creates it with the stack's template as soon as the server answers), then runs Prefect's own ``prefect
worker start`` in this process, as the ``prefect`` command does. It starts anyway after S seconds, or
as soon as FILE exists (the deployment step's report: the step ended without making the pool).
With ``--wake-on-events`` the worker also polls as soon as a run of its pool is scheduled
(:mod:`modelops.stack.worker_wakeup`), so its periodic poll can be slow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse
from pathlib import Path

from prefect.cli import app as prefect_cli

from modelops.stack import worker_wakeup
from modelops.stack.components import http_ok

POLL_S = 0.1


def pool_exists(api_url: str, pool: str) -> bool:
    return http_ok(f"{api_url}/work_pools/{urllib.parse.quote(pool, safe='')}", timeout_s=1.0)  # 404: not yet


def wait_for_pool(api_url: str, pool: str, timeout_s: float, unless: Path | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pool_exists(api_url, pool):
        if time.monotonic() > deadline or (unless is not None and unless.exists()):
            return False
        time.sleep(POLL_S)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelops.stack.worker_process", add_help=False, allow_abbrev=False
    )
    parser.add_argument("--wait-for-pool", type=float, default=0.0, metavar="S")
    parser.add_argument("--unless", type=Path, default=None, metavar="FILE")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--wake-on-events", action="store_true")
    known, other_args = parser.parse_known_args(argv)
    api_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    waited = known.wait_for_pool
    if waited > 0 and api_url and not wait_for_pool(api_url, known.pool, waited, known.unless):
        print(
            f"worker: work pool {known.pool!r} not found at {api_url}; starting anyway (Prefect's worker "
            "creates a missing pool and keeps trying to connect)",
            flush=True,
        )
    if known.wake_on_events:
        worker_wakeup.install(known.pool, log=lambda line: print(line, flush=True))
    sys.argv = ["prefect", "worker", "start", "--pool", known.pool, *other_args]
    prefect_cli()  # exits with the worker's status, as the `prefect` command does
    return 0


if __name__ == "__main__":
    sys.exit(main())
