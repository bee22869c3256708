"""The scoring client against a real HTTP server (a TF-Serving-API stub in a subprocess)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from support import http_client

from modelops.data.schema import HMEQ_SCHEMA
from modelops.scoring.client import TrafficSettings, run_traffic
from modelops.scoring.source import load_replay_records
from modelops.scoring.spool import ERRORS_DIR, list_spool_files

MODEL = "hmeq-risk"
STUB = textwrap.dedent(
    """
    import json, math, pathlib
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    MODEL = "hmeq-risk"

    def score(instance):
        loan = instance["LOAN"]
        return 0.5 if loan != loan else 1 / (1 + math.exp(-(loan / 10000 - 1.5)))

    async def models(request):
        rest = request.path_params["rest"]
        if request.method == "GET":
            version_file = pathlib.Path("version.txt")  # a test "rolls out" a new version by writing it
            VERSION = version_file.read_text().strip() if version_file.exists() else "7"
            if rest != MODEL:
                return JSONResponse({"error": f"Servable not found for request: Latest({rest})"}, 404)
            status = {"version": VERSION, "state": "AVAILABLE", "status": {"error_code": "OK"}}
            return JSONResponse({"model_version_status": [status]})
        name, _, verb = rest.partition(":")
        if name != MODEL or verb != "predict":
            return JSONResponse({"error": f"Servable not found for request: Latest({name})"}, 404)
        body = json.loads(await request.body())  # accepts NaN tokens, as TF Serving does
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return JSONResponse({"error": "'instances' must be a non-empty list"}, 400)
        for instance in instances:
            if instance.get("JOB") == "Boom":
                return JSONResponse({"error": "Could not parse example input, value: 'Boom'"}, 400)
            if not isinstance(instance.get("LOAN"), float):
                return JSONResponse({"error": "LOAN must be a number"}, 400)
        return JSONResponse({"predictions": [[score(i)] for i in instances]})

    app = Starlette(routes=[Route("/v1/models/{rest:path}", models, methods=["GET", "POST"])])
    """
)


@pytest.fixture
def stub_server(tmp_path: Path, port: int):
    (tmp_path / "tf_serving_stub.py").write_text(STUB)
    (tmp_path / "version.txt").write_text("7")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tf_serving_stub:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                http_client.get(f"{url}/v1/models/{MODEL}", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("TF Serving stub did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def hmeq_csv(path: Path, n: int, boom_every: int = 0) -> Path:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "BAD": rng.integers(0, 2, n),
            "LOAN": (1000 + 211 * np.arange(n)).astype(float),  # unique: tests key records by LOAN
            "MORTDUE": np.where(rng.random(n) < 0.2, np.nan, rng.normal(70000, 20000, n)),
            "VALUE": rng.normal(100000, 30000, n),
            "REASON": rng.choice(["DebtCon", "HomeImp", None], n),
            "JOB": rng.choice(["Other", "Mgr", "Office", None], n),
            "YOJ": rng.integers(0, 20, n),
            "DEROG": 0,
            "DELINQ": 0,
            "CLAGE": rng.normal(180, 50, n),
            "NINQ": 1,
            "CLNO": 20,
            "DEBTINC": np.where(rng.random(n) < 0.2, np.nan, rng.normal(33, 8, n)),
        }
    )
    frame.loc[0, "LOAN"] = np.nan
    if boom_every:
        frame.loc[frame.index % boom_every == 1, "JOB"] = "Boom"
    frame.to_csv(path, index=False)
    return path


def read_lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


@pytest.mark.parametrize("batch_size", [1, 16])
def test_replay_scores_every_record_and_spools_it(stub_server, tmp_path, batch_size):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 150), schema=None, rows=None)
    records = type(records)(records.instances, records.labels, records.schema, 2, records.source)
    spool = tmp_path / "spool"
    settings = TrafficSettings(
        url=stub_server, model_name=MODEL, spool_dir=spool, concurrency=4, batch_size=batch_size
    )
    summary = run_traffic(records, settings)

    assert (summary.sent, summary.ok, summary.errors) == (150, 150, 0)
    assert summary.p50_ms is not None and summary.p99_ms >= summary.p50_ms
    assert summary.versions == {"7": 150}
    files = list_spool_files(spool)
    assert files and all(f.finished for f in files), "the client must finish its spool files on exit"
    lines = read_lines([f.path for f in files])
    assert len(lines) == 150 and len({line["request_id"] for line in lines}) == 150
    by_loan = {}
    for line in lines:
        uuid.UUID(line["request_id"])
        assert line["model_name"] == MODEL and line["model_version"] == "7" and line["period"] == 2
        assert line["decision"] == int(line["score"] >= 0.5)
        assert set(line["features"]) == set(HMEQ_SCHEMA.features)
        assert line["latency_ms"] > 0
        by_loan[line["features"]["LOAN"]] = line
    nan_line = by_loan[None]  # missing LOAN went as NaN, came back scored 0.5, is logged as null
    assert nan_line["score"] == 0.5
    frame = pd.read_csv(tmp_path / "p.csv")
    for row in frame.dropna(subset=["LOAN"]).itertuples():
        line = by_loan[row.LOAN]
        assert line["label"] == row.BAD
        assert math.isclose(line["score"], 1 / (1 + math.exp(-(row.LOAN / 10000 - 1.5))))
        assert line["features"]["REASON"] == ("" if pd.isna(row.REASON) else row.REASON)


def test_server_down_is_counted_not_a_crash(tmp_path, port):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 40))
    spool = tmp_path / "spool"
    settings = TrafficSettings(
        url=f"http://127.0.0.1:{port}", model_name=MODEL, spool_dir=spool, concurrency=3
    )
    summary = run_traffic(records, settings)
    assert (summary.sent, summary.ok, summary.errors) == (40, 0, 40)
    assert summary.errors_by_kind == {"connect": 40}
    assert list_spool_files(spool) == [], "failed records must not be spooled as scored"
    errors = read_lines(sorted((spool / ERRORS_DIR).glob("errors-*")))
    assert len(errors) == 40 and {e["kind"] for e in errors} == {"connect"}
    assert all("features" in e and "request_id" in e for e in errors)


def test_4xx_answers_are_counted_and_the_rest_scored(stub_server, tmp_path, caplog):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 100, boom_every=10))
    spool = tmp_path / "spool"
    settings = TrafficSettings(url=stub_server, model_name=MODEL, spool_dir=spool, concurrency=4)
    with caplog.at_level("WARNING"):
        summary = run_traffic(records, settings)
    assert (summary.sent, summary.ok, summary.errors) == (100, 90, 10)
    assert summary.errors_by_kind == {"http_4xx": 10}
    assert "HTTP 400" in caplog.text and "Boom" in caplog.text
    assert len(read_lines([f.path for f in list_spool_files(spool)])) == 90
    errors = read_lines(sorted((spool / ERRORS_DIR).glob("errors-*")))
    assert len(errors) == 10 and all(e["status"] == 400 and e["features"]["JOB"] == "Boom" for e in errors)


def test_unknown_model_is_a_counted_404(stub_server, tmp_path):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 10))
    settings = TrafficSettings(
        url=stub_server, model_name="nope", spool_dir=tmp_path / "spool", concurrency=2
    )
    summary = run_traffic(records, settings)
    assert (summary.ok, summary.errors, summary.errors_by_kind) == (0, 10, {"http_4xx": 10})


def test_rate_limit_paces_the_requests(stub_server, tmp_path):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 30))
    settings = TrafficSettings(
        url=stub_server, model_name=MODEL, spool_dir=tmp_path / "spool", rate=50, concurrency=4
    )
    started = time.monotonic()
    summary = run_traffic(records, settings)
    assert summary.ok == 30
    assert time.monotonic() - started >= 29 / 50 * 0.95


def test_cli_traffic_exits_3_when_nothing_was_scored(tmp_path, port):
    csv = hmeq_csv(tmp_path / "p.csv", 5)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "modelops"), "traffic", "--csv", str(csv), "--url",
         f"http://127.0.0.1:{port}", "--spool", str(tmp_path / "spool"), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["errors"] == 5
    assert "all 5 records failed" in result.stderr


def test_a_rollout_during_the_run_is_seen_in_the_logged_versions(stub_server, tmp_path):
    records = load_replay_records(csv=hmeq_csv(tmp_path / "p.csv", 60))
    settings = TrafficSettings(
        url=stub_server, model_name=MODEL, spool_dir=tmp_path / "spool", rate=60, version_refresh_s=0.1
    )
    timer = threading.Timer(0.5, lambda: (tmp_path / "version.txt").write_text("8"))
    timer.start()
    summary = run_traffic(records, settings)
    timer.join()
    assert summary.ok == 60 and set(summary.versions) == {"7", "8"}
    lines = read_lines([f.path for f in list_spool_files(tmp_path / "spool")])
    first_new = min(line["scored_at"] for line in lines if line["model_version"] == "8")
    assert all(line["scored_at"] <= first_new for line in lines if line["model_version"] == "7")


def test_without_a_url_traffic_goes_to_the_models_own_port(
    stub_server, tmp_path, monkeypatch, prefect_harness
):
    """The `traffic` flow, like `modelops traffic --model M`, finds M's URL in the local target's
    port map (another model's port next to it must not be used)."""
    from flows.traffic import traffic
    from modelops.config import load_config
    from modelops.scoring.endpoint import find_serving_url

    home = tmp_path / "home"
    port = int(stub_server.rsplit(":", 1)[1])
    (home / "serving").mkdir(parents=True)
    (home / "serving" / "ports.json").write_text(json.dumps({"other-model": port + 1, MODEL: port}))
    monkeypatch.setenv("MODELOPS_STACK__HOME", str(home))
    monkeypatch.setenv("MODELOPS_SERVING__PORT", str(port + 2))  # the config's URL: nobody listens there
    monkeypatch.setenv("MODELOPS_MLFLOW__TRACKING_URI", f"http://127.0.0.1:{port + 3}")  # no registry

    assert find_serving_url(load_config(), MODEL) == (stub_server, "the local target's port for the model")
    assert find_serving_url(load_config(), "unknown")[1] == "the config's serving URL"
    summary = traffic(period=1, rows=20, model_name=MODEL, spool=str(tmp_path / "spool"))
    assert summary["ok"] == 20 and summary["errors"] == 0, summary
