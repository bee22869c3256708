"""Apply the deployments of a ``prefect.yaml`` to the running Prefect server, each on its own.

Run by ``modelops up`` as ``python -m modelops.stack.apply_deployments --pool P --prefect-file F
--report R`` with the stack's environment (PREFECT_API_URL, PREFECT_HOME), in the background while the
servers and the worker start. It creates the work pool or sets its template again (each type with the
stack's defaults: :func:`ensure_work_pool`), then runs Prefect's own ``prefect --no-prompt deploy --name
<each> --pool P --prefect-file F`` for every deployment in the file, one after the other in this process
(Prefect and the flows' modules imported once, not once per deployment: ~0.6 s per deployment after the
first instead of 4-8 s). That holds for a file that builds an image too: its first deployment goes alone
with the build's time, and the others' builds are cache hits. Every deployment after one that hung gets
a process of its own. Either way one broken deployment is reported by name and does not stop the others.
Success is the command's exit status. With
``--wait-for-server S``, ``up`` starts this step while the Prefect server starts: it imports the flows
in a thread while it waits up to S seconds for the server's health endpoint. The outcome goes
to the report file as JSON::

    {"applied": ["train", ...], "failed": {"broken": "<last line Prefect printed>"}}

and every command's output, with one ``deployment <name>: applied | failed`` line each, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import yaml
from prefect.cli import app as prefect_cli
from prefect.flows import load_flow_from_entrypoint

from modelops.config import load_config
from modelops.integrations.prefect_client import share_tls_context
from modelops.stack import automations_ready, docker_pool, kubernetes_pool, work_pools
from modelops.stack.components import AUTOMATIONS_CHECK, console_script, deployment_names, http_ok

# Prefect's console wraps at the terminal width; a wide one keeps each error message on one line.
_WIDE_CONSOLE = {"COLUMNS": "300", "TERM": "dumb"}
_GENERIC_LINES = {"An exception occurred."}


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    """Create the work pool, or set its template again (``prefect deploy`` refuses a missing pool).

    Each type gets the stack's defaults, set on every ``up`` so that changed ports, configs or the
    interpreter reach the runs: a process pool starts ``prefect.engine`` directly
    (:func:`modelops.stack.work_pools.process_pool_template`), a Docker pool
    (:func:`modelops.stack.docker_pool.base_job_template`) and a Kubernetes pool get their own.
    """
    if pool_type == "docker":
        _ensure_docker_pool(name)
        return
    if pool_type == "kubernetes":
        _ensure_kubernetes_pool(name)
        return
    template = work_pools.process_pool_template(standby=load_config().stack.engine_standby)
    outcome = work_pools.ensure_pool(name, "process", template)
    print(f"work pool {name} (process): {outcome}", flush=True)


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


class _InProcess:
    """Whether deployments may still run in this process: not after one hung (its thread still runs)."""

    usable = True


def apply_one(prefect_file: Path, name: str, pool: str, timeout_s: float) -> str | None:
    """None on success, else the reason: the last meaningful line ``prefect deploy`` printed.

    In this process unless an earlier deployment hung here (its thread still holds this process's
    stdout and argv): then in a ``prefect deploy`` process of its own."""
    if _InProcess.usable:
        return _apply_in_process(prefect_file, name, pool, timeout_s)
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


class _LiveOutput(io.StringIO):
    """Keeps what a deploy prints (its last line is the failure's reason) and passes it on as it comes:
    a cold flow-image build prints its progress for minutes, and ``deploy.log`` shows it meanwhile."""

    def __init__(self, live: TextIO) -> None:
        super().__init__()
        self.live = live

    def write(self, text: str) -> int:
        self.live.write(text)
        self.live.flush()
        return super().write(text)


def _apply_in_process(prefect_file: Path, name: str, pool: str, timeout_s: float) -> str | None:
    """``prefect deploy`` through Prefect's CLI entry point in a thread of this process (one at a time:
    it reads sys.argv and prints to the redirected sys.stdout), with the same output and exit status."""
    output = _LiveOutput(sys.stdout)
    status: dict[str, object] = {}

    def deploy() -> None:
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                sys.argv = ["prefect", *deploy_command(prefect_file, name, pool)[1:]]
                prefect_cli()
            status["code"] = 0
        except SystemExit as exc:
            status["code"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - reported for this deployment, the others go on
            status["code"] = 1
            print(f"{type(exc).__name__}: {exc}", file=output)

    argv = sys.argv
    thread = threading.Thread(target=deploy, name=f"prefect-deploy-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():  # it keeps sys.stdout redirected while it runs: take the real ones back
        _InProcess.usable = False
        sys.stdout, sys.stderr, sys.argv = sys.__stdout__, sys.__stderr__, argv
        return f"prefect deploy did not finish within {timeout_s:.0f} s"
    sys.argv = argv
    if status.get("code") == 0:
        return None
    return last_meaningful_line(output.getvalue()) or f"prefect deploy exited {status.get('code')}"


def warm_up(prefect_file: Path) -> threading.Thread:
    """Import each deployment's flow (and so its modules) in a background thread while the server
    starts: the deploys then only load the flow files again (a deploy that needs a module the thread
    is importing waits for it). A flow that fails or hangs is reported by its own deploy."""
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    entrypoints = [d.get("entrypoint") for d in spec.get("deployments") or [] if isinstance(d, dict)]

    def load_all() -> None:
        for entrypoint in filter(None, entrypoints):
            with contextlib.suppress(Exception):
                load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)

    thread = threading.Thread(target=load_all, name="import-flows", daemon=True)
    thread.start()
    return thread


def wait_for_server(api_url: str, timeout_s: float) -> bool:
    """Until the Prefect server's health endpoint answers (``up`` starts this step beside it)."""
    deadline = time.monotonic() + timeout_s
    while not http_ok(f"{api_url}/health"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def last_meaningful_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() not in ("", *_GENERIC_LINES)]
    return lines[-1] if lines else ""


def wait_for_triggers(outcome: Outcome, timeout_s: float) -> None:
    """Until the server acts on events for the automations just written (:mod:`automations_ready`);
    when it does not within ``timeout_s``, ``up`` reports it as it reports a failed deployment."""
    try:
        acting = asyncio.run(automations_ready.wait_until_acting(timeout_s))
    except Exception as exc:  # noqa: BLE001 - reported by name, as a failed deployment is
        reason = (
            str(exc)
            if isinstance(exc, automations_ready.AutomationsNotActing)
            else f"{type(exc).__name__}: {exc}"
        )
        outcome.failed[AUTOMATIONS_CHECK] = reason
        print(f"{AUTOMATIONS_CHECK}: failed: {reason}", flush=True)
        return
    print(
        f"{AUTOMATIONS_CHECK}: the server acts on events {acting.seconds:.1f} s after the last deployment "
        f"({acting.events_sent} probe event(s) sent)",
        flush=True,
    )


def builds_image(prefect_file: Path) -> bool:
    """The file has top-level build steps (prefect.docker.yaml builds the flow image)."""
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    return bool(spec.get("build"))


def apply_all(
    prefect_file: Path,
    pool: str,
    timeout_s: float,
    build_timeout_s: float | None = None,
) -> Outcome:
    """Every deployment, one after the other. When the file builds an image, each deployment gets
    ``build_timeout_s``: the first one's build fills Docker's layer cache (a cold build takes minutes),
    and every deploy of such a file runs its build and push steps again (cache hits, but still a
    build-context upload and a registry round trip each, which a loaded machine can make slow)."""
    if builds_image(prefect_file):
        timeout_s = build_timeout_s or timeout_s
    names = deployment_names(prefect_file)
    reasons = [apply_one(prefect_file, name, pool, timeout_s) for name in names]
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
    parser.add_argument(
        "--wait-for-server",
        type=float,
        default=None,
        metavar="S",
        help="import the flows, then wait up to S seconds for the Prefect server (PREFECT_API_URL)",
    )
    args = parser.parse_args(argv)
    os.environ.update(_WIDE_CONSOLE)  # the deploys that run in this process print to this console
    share_tls_context()  # `prefect deploy` opens ~10 clients per deployment, each building a TLS context
    prefect_file = args.prefect_file.resolve()
    if args.wait_for_server is not None:
        t0 = time.monotonic()
        warm_up(prefect_file)
        healthy = wait_for_server(os.environ["PREFECT_API_URL"], args.wait_for_server)
        waited = f"{time.monotonic() - t0:.1f} s"
        print(f"Prefect server {'healthy after' if healthy else 'not healthy after'} {waited}", flush=True)
    try:
        ensure_work_pool(args.pool, args.pool_type)
    except Exception as exc:  # reported, as a deployment's failure is: the worker waits for the report
        outcome = Outcome(failed={f"work pool {args.pool}": f"{type(exc).__name__}: {exc}"})
        print(f"work pool {args.pool}: failed: {type(exc).__name__}: {exc}", flush=True)
    else:
        outcome = apply_all(prefect_file, args.pool, args.timeout, build_timeout_s=args.build_timeout)
        if set(outcome.applied) & set(deployment_names(prefect_file, with_triggers=True)):
            wait_for_triggers(outcome, args.timeout)
    args.report.write_text(json.dumps(asdict(outcome)))
    return 1 if outcome.failed else 0


def exit_now(code: int) -> None:
    """End this process without the interpreter's teardown. `up` waits for this process's exit, and
    tearing down what Prefect and the flows imported takes ~0.8 s here; the report is written and
    every command ran to its end, so only the output needs flushing first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
