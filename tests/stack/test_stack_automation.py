"""A degraded event emitted the moment ``modelops up`` returns launches the retrain.

``up`` does not wait for the server to load the retrain trigger: Prefect's server loads an
automation as it is written (on PostgreSQL, by NOTIFY to its trigger service; on SQLite, after the
commit). This test holds ``up`` to that, on both backends: a fresh stack with the project's own
prefect.yaml, one ``modelops.performance.degraded`` event sent as soon as ``up`` exits, and the
retrain deployment's run must appear with the event's parameters.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest
from support.stack import wait_for
from support.stack_home import run_modelops, stack_env

from modelops.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

EMIT = (
    "import sys\n"
    "from modelops.integrations.events import emit_model_event\n"
    "emit_model_event('modelops.performance.degraded', sys.argv[1], '3', ks=0.12, threshold=0.3)\n"
)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_degraded_event_right_after_up_launches_the_retrain(tmp_path, backend):
    model = f"auto-{uuid.uuid4().hex[:8]}"
    env = stack_env(
        tmp_path / "home",
        PROJECT_ROOT / "prefect.yaml",
        MODELOPS_STACK__BACKEND=backend,
        MODELOPS_MONITORING__SCHEDULE_CRON="0 0 1 1 *",  # no scheduled check during the test
    )
    api = f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api"
    try:
        up = run_modelops(env, "up", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        emitted = subprocess.run(
            [sys.executable, "-c", EMIT, model],
            env={**env, "PREFECT_API_URL": api},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert emitted.returncode == 0, emitted.stderr

        def retrain_run() -> dict | None:
            body = {"deployments": {"name": {"any_": ["retrain"]}}, "limit": 10}
            runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
            return next((r for r in runs if r["parameters"].get("model_name") == model), None)

        run = wait_for(retrain_run, 120, "the retrain run the degraded event launches", interval=0.5)
        assert run["parameters"]["triggered_version"] == "3"
        assert float(run["parameters"]["ks"]) == pytest.approx(0.12)
    finally:
        run_modelops(env, "down", timeout=300)
