"""What stays cheap to import: the stack's light API, ``modelops --help``, ``status`` and ``down``, and
the client image's commands.

``modelops.stack`` must not import Prefect or MLflow (``use_stack_environment`` runs before they
read their settings); ``modelops --help`` imports no command module; ``modelops ship`` / ``traffic``
run in the client image (infra/docker/client.Dockerfile), which has no Prefect, MLflow or TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelops.stack.apply_deployments import last_meaningful_line

HEAVY = ("prefect", "mlflow", "tensorflow")
# Not installed in the client image: importing any of them fails there as it does in this probe.
NOT_IN_CLIENT_IMAGE = (*HEAVY, "keras", "psutil", "pgserver", "docker", "kubernetes", "scipy", "starlette")
_CLIENT_IMAGE = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {NOT_IN_CLIENT_IMAGE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _heavy_modules_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    report = f"import json, sys\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    result = _python(f"{code}\n{report}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_stack_package_imports_no_prefect_or_mlflow():
    assert _heavy_modules_after("import modelops.stack") == []


def test_help_imports_no_command_module():
    code = (
        "import contextlib, io\nfrom modelops.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert _heavy_modules_after(code) == []


def test_down_imports_no_prefect_mlflow_or_pandas():
    """``modelops down`` runs at the end of every stack's life: stopping processes needs none of them."""
    code = (
        "from modelops.cli import build_parser\n"
        "args = build_parser(['down']).parse_args(['down'])\nimport modelops.stack.teardown"
    )
    assert _heavy_modules_after(code, (*HEAVY, "pandas", "docker")) == []


def test_status_imports_no_prefect_mlflow_or_pandas():
    """Prefect's client is imported for the orphan count only when a run could be orphaned
    (``modelops.stack.run_counts``; a real ``status`` on a real stack: test_stack_lifecycle.py)."""
    code = "from modelops.cli import build_parser\nbuild_parser(['status']).parse_args(['status'])"
    assert _heavy_modules_after(code, (*HEAVY, "pandas")) == []


def test_the_serving_client_imports_no_pandas():
    assert _heavy_modules_after("import modelops.serving.rest_client", ("pandas", "prefect")) == []


@pytest.mark.parametrize("command", ["ship", "traffic", "labels"])
def test_the_scoring_commands_import_no_prefect_where_it_is_installed(command):
    """Prefect is read only for a secret kept in a Prefect block (``modelops.secrets``): ~1 CPU-s less
    at every start of the log sidecar, the scoring client and the label loader."""
    code = f"from modelops.cli import build_parser\nbuild_parser([{command!r}])"
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("command", ["ship", "traffic"])
def test_the_client_image_commands_run_without_prefect_mlflow_or_tensorflow(command):
    result = _python(f"{_CLIENT_IMAGE}\nfrom modelops.cli import main\nmain([{command!r}, '--help'])")
    assert result.returncode == 0, result.stderr
    assert f"usage: modelops {command}" in result.stdout


def test_a_failed_deployment_is_named_by_the_last_line_prefect_printed():
    error = "FileNotFoundError: [Errno 2] No such file: 'flows/x.py'"
    assert last_meaningful_line(f"Traceback ...\n{error}\n\nAn exception occurred.\n") == error
    assert last_meaningful_line("\n\n") == ""


@pytest.mark.parametrize("command", ["ship", "labels"])
def test_the_log_sidecar_and_the_label_loader_import_no_pandas(command):
    """They move rows between files and PostgreSQL: pandas (~0.3 CPU-s) is for the scoring log's readers."""
    code = f"from modelops.cli import build_parser\nbuild_parser([{command!r}])"
    assert _heavy_modules_after(code, ("pandas",)) == []


def test_up_imports_no_pandas_or_mlflow_when_no_model_was_served(tmp_path):
    """``up`` serves again what the local target served before; the registry client (pandas, ~0.9 CPU-s
    with the model code under it) only when a served copy is gone (``modelops/stack/serving_restore.py``)."""
    code = (
        f"import os\nos.environ['MODELOPS_STACK__HOME'] = {str(tmp_path)!r}\n"
        "from modelops.cli import build_parser\nbuild_parser(['up'])\n"
        "from modelops.config import load_config\n"
        "from modelops.stack.serving_restore import restore_serving\n"
        "assert restore_serving(load_config(), print) == []"
    )
    assert _heavy_modules_after(code, ("pandas", "mlflow", "tensorflow")) == []
