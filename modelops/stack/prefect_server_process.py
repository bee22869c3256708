"""The stack's Prefect server: ``prefect server start ...``, with block types registered after ``up``.

    python -m modelops.stack.prefect_server_process --register-blocks-after FILE [--at-most S] [options]

A Prefect server registers every block type it knows (Prefect's own and those of the installed
collections: prefect-docker and prefect-kubernetes, which import the Docker and Kubernetes SDKs) before
it answers its first request: ~2-3 CPU-seconds on a fresh database, on the path of ``modelops up``,
whose processes keep both cores of this project's machines busy. Nothing in ``up`` needs those types
(``Block.save`` registers the type of the block it saves), only the UI's block catalog does. So the
stack starts the server with ``PREFECT_SERVER_REGISTER_BLOCKS_ON_START=false`` (set by
:func:`modelops.stack.components.prefect_server`), and this process runs Prefect's own registration
(``run_block_auto_registration``, what the server runs at start) in a thread once the server answers
and FILE is written after this start (the deployment step's report: ``up`` is done with its slow
part), or S seconds after the start at the latest.
Then it runs Prefect's ``prefect server start [options]`` in this process, as the ``prefect`` command does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

from prefect.cli import app as prefect_cli
from prefect.server.database import provide_database_interface
from prefect.server.models.block_registration import run_block_auto_registration

from modelops.stack.components import heartbeat_after, http_ok

POLL_S = 0.2


def wait_for_report(health_url: str, report: Path, at_most_s: float) -> bool:
    """Wait until the server answers (its migrations are done) and ``report`` is written after now (not
    a previous ``up``'s); False when ``at_most_s`` passed first (the server answering or not)."""
    started = time.time()
    deadline = time.monotonic() + at_most_s
    while not (heartbeat_after(report, started) and http_ok(health_url, timeout_s=1.0)):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


async def register_block_types() -> None:
    """What the Prefect server does at start with ``PREFECT_SERVER_REGISTER_BLOCKS_ON_START`` on."""
    database = provide_database_interface()
    session = await database.session()
    async with session:
        await run_block_auto_registration(session=session)
    await (await database.engine()).dispose()  # this thread's event loop ends here


def register_later(health_url: str, report: Path, at_most_s: float) -> threading.Thread:
    def run() -> None:
        t0 = time.monotonic()
        if wait_for_report(health_url, report, at_most_s):
            cause = "after the deployment step"
        else:
            cause = f"after waiting {at_most_s:g} s for the deployment step"
        try:
            asyncio.run(register_block_types())
        except Exception as exc:  # noqa: BLE001 - the server serves without them; the next start retries
            print(f"block types: registration failed ({type(exc).__name__}: {exc})", flush=True)
            return
        print(f"block types: registered {cause}, {time.monotonic() - t0:.1f} s after the start", flush=True)

    thread = threading.Thread(target=run, name="register-block-types", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelops.stack.prefect_server_process", add_help=False, allow_abbrev=False
    )
    parser.add_argument("--register-blocks-after", type=Path, required=True, metavar="FILE")
    parser.add_argument("--at-most", type=float, default=300.0, metavar="S")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    known, server_args = parser.parse_known_args(argv)
    health_url = f"http://{known.host}:{known.port}/api/health"
    register_later(health_url, known.register_blocks_after, known.at_most)
    sys.argv = ["prefect", "server", "start", "--host", known.host, "--port", str(known.port), *server_args]
    prefect_cli()  # serves until a signal; exits with the server's status, as the `prefect` command does
    return 0


if __name__ == "__main__":
    sys.exit(main())
