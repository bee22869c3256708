"""The stack's MLflow tracking server in one process: ``mlflow server ...``, with uvicorn run in-process.

    python -m modelops.stack.mlflow_process [mlflow server options]

``mlflow server`` imports MLflow, checks and migrates the backend store, then starts ``python -m
uvicorn mlflow.server.fastapi_app:app`` as a child process, which imports MLflow and the app all over
again while the parent only waits. On this project's 2-core machines that second import is ~3 CPU-seconds
of ``modelops up`` (where the CPU is the bottleneck) and ~250 MB of resident memory for as long as the
stack runs. This module runs MLflow's own command line unchanged, but hands the uvicorn command it
builds to uvicorn's command line in this process, with the environment MLflow prepared for its child
(``os.environ`` updated first, as the child would have inherited it). Everything MLflow validates and
sets up before it launches the server still happens, by MLflow's code; uvicorn handles SIGTERM/SIGINT.

MLflow launches its server through ``mlflow.server._exec_cmd`` (a private name, checked with the
MLflow version in ``requirements/constraints*.txt``). When an MLflow release no longer has it, or
builds a command other than uvicorn's (``--gunicorn-opts``, ``--waitress-opts``), the command runs as
a child process exactly as ``mlflow server`` does: slower, never broken.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow.server
from mlflow.cli import cli as mlflow_cli
from uvicorn.main import main as uvicorn_cli

UVICORN_PREFIX = [sys.executable, "-m", "uvicorn"]
_spawn = getattr(mlflow.server, "_exec_cmd", None)  # MLflow's own launcher: the fallback


def runs_in_process(command: Sequence[str]) -> bool:
    return list(command[: len(UVICORN_PREFIX)]) == UVICORN_PREFIX


def launch_server(command: Sequence[str], extra_env: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """Stands in for ``mlflow.server._exec_cmd``: serve here when ``command`` is uvicorn's, else spawn it."""
    if not runs_in_process(command):
        assert _spawn is not None
        return _spawn(command, extra_env=extra_env, **kwargs)
    os.environ.update(extra_env or {})
    return uvicorn_cli.main(args=list(command[len(UVICORN_PREFIX) :]))  # serves until a signal, then exits


def main(argv: list[str] | None = None) -> int:
    if _spawn is not None:
        mlflow.server._exec_cmd = launch_server  # type: ignore[assignment]
    mlflow_cli.main(args=["server", *(sys.argv[1:] if argv is None else argv)], prog_name="mlflow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
