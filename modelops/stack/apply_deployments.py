"""Apply the deployments of a ``prefect.yaml`` to the running Prefect server, each on its own.

Run by ``modelops up`` as ``python -m modelops.stack.apply_deployments --pool P --prefect-file F
--report R`` with the stack's environment (PREFECT_API_URL, PREFECT_HOME), in the background while
the worker starts. It makes sure the work pool exists (a Docker pool with the stack's defaults),
then runs Prefect's own ``prefect --no-prompt deploy --name <each> --pool P --prefect-file F`` for
every deployment in the file, each in its own process (two at a time; when the file builds an image,
the first one alone): one broken deployment is reported by name and does not stop the others.
Success is the command's exit status. The outcome goes to the report file as JSON::

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
from urllib.parse import urlsplit

import yaml
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from modelops.config import load_config
from modelops.stack import docker_pool, kubernetes_pool
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


def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    """Create the work pool unless it exists (``prefect deploy`` refuses a missing pool).

    A Docker pool gets the stack's defaults (:func:`modelops.stack.docker_pool.base_job_template`), set
    again on every ``up`` so changed ports or configs reach the containers.
    """
    if pool_type == "docker":
        _ensure_docker_pool(name)
        return
    if pool_type == "kubernetes":
        _ensure_kubernetes_pool(name)
        return
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass  # the worker created it at the same moment


def _ensure_docker_pool(name: str) -> None:
    config = load_config()  # the stack's: MODELOPS_CONFIG and the overrides are in this environment
    dsn = config.database.url or os.environ.get("MODELOPS_DATABASE_URL")
    if dsn and urlsplit(dsn).password:
        docker_pool.save_database_secret(dsn)
        print(f"database URL saved as Secret block {docker_pool.DATABASE_SECRET_BLOCK}", flush=True)
    template = docker_pool.base_job_template(config, dsn, os.environ.get("DOCKER_HOST"))
    print(f"work pool {name} (docker): {docker_pool.ensure_pool(name, template)}", flush=True)


def _ensure_kubernetes_pool(name: str) -> None:
    """infra/k8s/worker/base-job-template.json with the config's namespace and flow image, and the
    stack's MLflow URL as a plain value (the database URL stays the Secret ``modelops-database``)."""
    config = load_config()
    image = f"{config.stack.flow_image}:{docker_pool.flow_image_tag(config)}"
    template = kubernetes_pool.base_job_template(
        config, image=image, env={"MLFLOW_TRACKING_URI": config.mlflow_uri}
    )
    print(f"work pool {name} (kubernetes): {kubernetes_pool.ensure_pool(name, template)}", flush=True)


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


def builds_image(prefect_file: Path) -> bool:
    """The file has top-level build steps (prefect.docker.yaml builds the flow image)."""
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    return bool(spec.get("build"))


def apply_all(
    prefect_file: Path,
    pool: str,
    timeout_s: float,
    parallel: int = PARALLEL,
    build_timeout_s: float | None = None,
) -> Outcome:
    """Every deployment, two at a time. When the file builds an image, the first deployment goes
    alone (with ``build_timeout_s``): its build fills Docker's layer cache, so the others' builds of
    the same sources are cache hits instead of parallel cold builds."""
    names = deployment_names(prefect_file)
    reasons: list[str | None] = []
    rest = names
    if names and builds_image(prefect_file):
        # Every deploy of such a file runs its build and push steps: after the first, cache hits, but
        # still a build-context upload and a registry round trip each (minutes on a loaded machine).
        timeout_s = build_timeout_s or timeout_s
        reasons.append(apply_one(prefect_file, names[0], pool, timeout_s))
        rest = names[1:]
    with ThreadPoolExecutor(max_workers=parallel) as pool_of_deploys:
        reasons += pool_of_deploys.map(lambda name: apply_one(prefect_file, name, pool, timeout_s), rest)
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
    parser.add_argument("--pool-type", default="process", choices=["process", "docker", "kubernetes"])
    parser.add_argument(
        "--build-timeout",
        type=float,
        default=None,
        help="seconds for the first deploy of a file that builds an image",
    )
    args = parser.parse_args(argv)
    ensure_work_pool(args.pool, args.pool_type)
    prefect_file = args.prefect_file.resolve()
    outcome = apply_all(prefect_file, args.pool, args.timeout, build_timeout_s=args.build_timeout)
    args.report.write_text(json.dumps(asdict(outcome)))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
