"""Apply the deployments of a ``prefect.yaml`` to the running Prefect server, one by one.

Run by ``modelops up`` as ``python -m modelops.stack.apply_deployments --pool P --prefect-file F``
with the stack's environment (PREFECT_API_URL, PREFECT_HOME). It makes sure the process work pool
exists, then runs ``prefect deploy --name <each> --pool <pool>`` in this process (one Prefect import
for all), so one broken deployment is reported by name and does not stop the others. Every outcome
is one line:

    MODELOPS-DEPLOY ok <name>
    MODELOPS-DEPLOY failed <name>: <reason>
"""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import yaml

MARK = "MODELOPS-DEPLOY"


def deployment_names(prefect_file: Path) -> list[str]:
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    return [d["name"] for d in spec.get("deployments") or [] if isinstance(d, dict) and d.get("name")]


def ensure_work_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass  # the worker created it at the same moment


def apply_one(prefect_file: Path, name: str, pool: str) -> str | None:
    """None on success, else the reason (last meaningful line of Prefect's output).

    ``--pool`` puts every deployment on the stack's pool (``stack.work_pool``), whatever the file says,
    so the stack's own worker runs them.
    """
    from prefect.cli import _app

    captured = io.StringIO()
    try:
        with redirect_stdout(captured):
            _app._run_cli(
                ["--no-prompt", "deploy", "--name", name, "--pool", pool, "--prefect-file", str(prefect_file)]
            )
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a flow file that does not import, a bad entrypoint, …
        print(captured.getvalue())
        return f"{type(exc).__name__}: {exc}"
    output = captured.getvalue()
    print(output)
    if code == 0 and "Deployment" in output:
        return None
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else f"prefect deploy exited with code {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelops.stack.apply_deployments")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--prefect-file", required=True, type=Path)
    args = parser.parse_args(argv)
    prefect_file = args.prefect_file.resolve()
    names = deployment_names(prefect_file)
    ensure_work_pool(args.pool)
    failures = 0
    for name in names:
        reason = apply_one(prefect_file, name, args.pool)
        if reason is None:
            print(f"{MARK} ok {name}", flush=True)
        else:
            failures += 1
            print(f"{MARK} failed {name}: {reason}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
