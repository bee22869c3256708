"""Reliability of serving on the local target: the server killed during traffic, then restarted.

The real scoring client replays records at a steady rate against the public URL while the serving
process is SIGKILLed. The client must count and log the failures (and spool them under
``errors/``) without crashing, a health check must report the target unhealthy, and a redeploy of
the same champion version from the served copy must bring the service back on the same URL.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time

import orjson
import pytest
from support.network import free_port
from support.serving import build_saved_model, sample_records
from support.stack import serving_health, wait_for

from modelops.config import load_config
from modelops.scoring.spool import ERRORS_DIR
from modelops.serving import rest_client
from modelops.targets.local import LocalTarget

pytestmark = pytest.mark.slow
MODEL = "risk"


@pytest.fixture
def target(tmp_path):
    config = load_config(
        environ={"MODELOPS_SERVING__PORT": str(free_port()), "MODELOPS_SERVING__ROLLOUT_TIMEOUT_S": "120"}
    )
    local = LocalTarget(config, home=tmp_path / "serving", smoke_records=sample_records(4, seed=3))
    yield local
    local.stop(MODEL)


def _lines(folder, pattern: str) -> list[dict]:
    return [orjson.loads(line) for path in folder.glob(pattern) for line in path.read_bytes().splitlines()]


def test_serving_killed_during_traffic_is_noticed_counted_and_restored(target, tmp_path, caplog):
    from modelops.data.generator import generate_period
    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.scoring.client import TrafficSettings, run_traffic
    from modelops.scoring.source import records_from_frame

    export = build_saved_model(tmp_path / "export", bias=-1.4)
    first = target.deploy(MODEL, "1", export)
    shutil.rmtree(export)  # the exported model is gone: a restart has only the served copy
    assert serving_health(target, MODEL)[0]

    spool = tmp_path / "spool"
    # paced at 100/s: ~60 s of traffic, so that it outlasts the kill and a redeploy on a loaded machine
    records = records_from_frame(generate_period(1, rows=6000, seed=3), HMEQ_SCHEMA, period=1)
    settings = TrafficSettings(
        url=first.url, model_name=MODEL, spool_dir=spool, rate=100, concurrency=2, timeout_s=2,
        version_refresh_s=1, spool_max_age_s=1,
    )  # fmt: skip
    outcome: dict = {}

    def traffic() -> None:
        try:
            outcome["summary"] = run_traffic(records, settings)
        except BaseException as exc:  # a crash of the client is the failure this test looks for
            outcome["error"] = exc

    caplog.set_level(logging.WARNING, logger="modelops.scoring.client")
    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    wait_for(lambda: len(_lines(spool, "scores-*")) >= 150, 60, "traffic scored by version 1")

    os.kill(first.details["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    why = wait_for(lambda: _unhealthy(target), 60, "the health check reports the target unhealthy")
    detected_s = time.monotonic() - killed_at
    assert "no live serving process" in why or "status endpoint failed" in why, why
    with pytest.raises(rest_client.ServingClientError):
        rest_client.model_status(first.url, MODEL, timeout=2)
    time.sleep(1.0)  # the client keeps meeting a dead server meanwhile

    restarted = target.deploy(MODEL, "1", target.base_path(MODEL) / "1")  # redeploy the champion
    restored_s = time.monotonic() - killed_at
    assert (restarted.version, restarted.url) == ("1", first.url)
    healthy, detail = serving_health(target, MODEL)
    assert healthy, detail
    restored_wall = time.time()
    assert client.is_alive(), "traffic still runs after the restart (make the replay longer)"

    client.join(240)
    assert not client.is_alive(), "the client finished its replay"
    assert "error" not in outcome, f"the client crashed: {outcome.get('error')!r}"
    summary = outcome["summary"]
    assert summary.sent == len(records) and summary.ok + summary.errors == summary.sent
    assert summary.errors > 0 and summary.ok > 0, summary.as_dict()
    assert set(summary.errors_by_kind) <= {"connect", "timeout"}, summary.errors_by_kind
    assert summary.versions == {"1": summary.ok}, "only the champion version answered"
    logged = [r.getMessage() for r in caplog.records if "request failed" in r.getMessage()]
    assert logged and "unreachable" in logged[0], logged[:3]
    status_warnings = [r for r in caplog.records if r.getMessage().startswith("status ")]
    assert len(status_warnings) <= 2, f"the outage flooded the log: {len(status_warnings)} status warnings"

    scored = _lines(spool, "scores-*")
    failed = _lines(spool / ERRORS_DIR, "errors-*")
    assert len(scored) == summary.ok and len(failed) == summary.errors, "every record is scored or an error"
    assert {r["request_id"] for r in scored}.isdisjoint(r["request_id"] for r in failed)
    assert {f["kind"] for f in failed} <= {"connect", "timeout"}
    after_restart = [r for r in scored if _epoch(r["scored_at"]) > restored_wall]
    assert after_restart and {r["model_version"] for r in after_restart} == {"1"}, "service is back"
    print(
        f"\nserving killed during traffic: {summary.errors} of {summary.sent} records failed (counted, "
        f"logged, spooled to errors/), 0 lost; unhealthy noticed in {detected_s:.1f} s; same version "
        f"serving again {restored_s:.1f} s after the kill; {len(after_restart)} records scored after it"
    )


def test_redeploying_a_version_from_its_served_copy_keeps_serving(target, tmp_path):
    """A restart redeploys from the served folder itself: the copy must not pull the rug from under it."""
    first = target.deploy(MODEL, "1", build_saved_model(tmp_path / "export", bias=-1.4))
    served = target.base_path(MODEL) / "1"
    again = target.deploy(MODEL, "1", served)
    assert again.version == "1" and again.details["pid"] != first.details["pid"]
    assert (served / "saved_model.pb").is_file()
    assert sorted(p.name for p in target.base_path(MODEL).iterdir()) == ["1"], "no staging/backup left"
    assert serving_health(target, MODEL)[0]


def _unhealthy(local: LocalTarget) -> str | None:
    healthy, why = serving_health(local, MODEL)
    return None if healthy else why


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()
