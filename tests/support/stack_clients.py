"""A user's Python client of the stack: a small flow with an artifact, run from a chosen folder with
no Prefect setting in its environment (what ``tests/stack/test_stack_lifecycle.py`` and the backend
tests use to check where a flow called from Python lands)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

CLIENT_FLOW = textwrap.dedent(
    """
    import json
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run
    from flows.base import flow

    @flow(name="client-probe", flow_run_name="client-probe-{label}")
    def client_probe(label: str) -> str:
        create_markdown_artifact("# from a Python client", key=f"client-probe-{label}")
        return flow_run.id

    print("RUN " + json.dumps({"id": client_probe("python")}), flush=True)
    """
)


def client_env(home: Path) -> dict[str, str]:
    """A user's shell: no Prefect setting at all, its own (empty) Prefect home, the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MODELOPS_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(home / "client-prefect-home"), PYTHONPATH=str(PROJECT_ROOT))
    return env


def run_client(cwd: Path, env: dict[str, str], script: str = CLIENT_FLOW) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
