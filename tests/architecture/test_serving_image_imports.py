"""What ``modelops serve`` imports stays inside the serving image's packages.

The TF Serving stand-in image (``infra/docker/standin/``) runs ``modelops serve`` with only the
serving process's packages installed (``build-standin.sh``'s ``PACKAGES``): none of the stack's,
the pipeline's or the monitoring's. A top-level import of one of those anywhere under
``modelops.cli.serve`` breaks every container rollout, and only the Docker tests would notice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The project's dependencies that the serving image does not install (none is a dependency of
# tensorflow-cpu, httptools, uvloop, orjson, msgspec, pydantic, PyYAML, httpx, prometheus-client,
# grpcio, hpack or tensorflow-serving-api).
NOT_IN_THE_SERVING_IMAGE = (
    "psutil", "pandas", "prefect", "prefect_docker", "prefect_kubernetes", "mlflow", "psycopg2",
    "sqlalchemy", "scipy", "matplotlib", "docker", "kubernetes", "pymsteams", "pgserver",
)  # fmt: skip


def test_the_serve_command_imports_nothing_the_serving_image_lacks():
    blocked = ", ".join(repr(name) for name in NOT_IN_THE_SERVING_IMAGE)
    script = (
        "import argparse, sys\n"
        f"for name in ({blocked},): sys.modules[name] = None  # importing it raises ImportError\n"
        "from modelops.cli import serve\n"
        "serve.add_arguments(argparse.ArgumentParser())\n"
        "print('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]
