"""No usage telemetry leaves a modelops process unless the user opts in (MLflow's is on by default)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
if sys.argv[1] == "with-modelops":
    import modelops
import mlflow
from mlflow.telemetry.client import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
print(is_telemetry_disabled(), get_telemetry_client() is None)
"""
# MLflow turns its telemetry off by itself under these (CI systems, a running pytest test); the
# control below needs an environment where it would be on.
MLFLOW_OFF_SWITCHES = {
    "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI",
    "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN",
    "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
    "RUNBOT_WORKER_ID",
}  # fmt: skip
NOWHERE = "http://127.0.0.1:9"  # the control's telemetry thread gets a refused connection, not the internet


def _probe(mode: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in MLFLOW_OFF_SWITCHES}
    proxies = {"HTTPS_PROXY": NOWHERE, "HTTP_PROXY": NOWHERE, "NO_PROXY": ""}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **proxies, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.split()


def test_mlflow_telemetry_is_off_in_a_modelops_process():
    assert _probe("mlflow-alone")[0] == "False"  # control: this environment would send it
    assert _probe("with-modelops") == ["True", "True"]  # off, and no client was created


def test_a_user_who_opts_in_keeps_the_setting():
    assert _probe("with-modelops", MLFLOW_DISABLE_TELEMETRY="false")[0] == "False"
