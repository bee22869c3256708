"""`modelops status` also watches the local target's model server: healthy, then noticed dead."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from support.network import free_port
from support.serving import build_saved_model, sample_records

from modelops.config import load_config
from modelops.stack.manager import serving_status
from modelops.targets.local import LocalTarget

pytestmark = pytest.mark.slow
MODEL = "risk"


def test_status_reports_the_model_server_and_notices_when_it_dies(tmp_path):
    config = load_config(
        environ={"MODELOPS_STACK__HOME": str(tmp_path / "home"), "MODELOPS_SERVING__PORT": str(free_port())}
    )
    target = LocalTarget(config, smoke_records=sample_records(3, seed=1))
    try:
        target.deploy(MODEL, "1", build_saved_model(tmp_path / "export", bias=-1.4))
        (row,) = serving_status(config)
        assert (row.name, row.url, row.running, row.healthy) == (
            f"serving:{MODEL}",
            config.serving_url,
            True,
            True,
        )
        assert row.detail == "version 1" and row.rss_bytes > 0

        os.kill(row.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(row.pid) and psutil.Process(row.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed server did not go away"
            time.sleep(0.1)
        (dead,) = serving_status(config)
        assert not dead.running and not dead.healthy
        assert "redeploy" in dead.detail
    finally:
        target.stop(MODEL)
