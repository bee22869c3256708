"""Several models served side by side on one stack, and restarts that lose no serving.

One stack for the module (``modelops up`` on free ports in a temporary home). Two models are
registered in its MLflow, deployed on the local target and promoted, as the lifecycle does. Then,
in order: each model answers on its own URL only; ``kill -9`` of a model server under the real
``modelops traffic`` client is repaired by the supervisor; ``kill -9`` of the worker too; and
``modelops down && modelops up`` serves both champions again on the same URLs (one from its served
copy, one from the registry because its copy was deleted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psutil
import pytest
from support import http_client
from support.network import free_ports
from support.serving import build_saved_model, expected_score, sample_records
from support.stack import wait_for
from support.stack_home import PROBE_FLOW, prefect_yaml, run_modelops, stack_env, stack_status

from modelops.config import load_config
from modelops.serving import rest_client

pytestmark = pytest.mark.slow

MODELS = {"risk-a": -1.4, "risk-b": 0.5}  # name -> bias of its SavedModel (tells their scores apart)
RECORDS = sample_records(4, seed=11)
PREFECT = str(Path(sys.executable).parent / "prefect")
# A deadline for the restart to happen, not a speed goal: what makes it fast (the supervisor's warm
# standby taking the job) is asserted by its pid, and the time it took is printed.
RESTART_DEADLINE_S = 60.0


def _serving_port() -> int:
    """A free port with four free neighbours (the later models take the next ports, as after 8501)."""
    return free_ports(5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("several")
    flow_file = root / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = root / "prefect.yaml"
    prefect_file.write_text(prefect_yaml(flow_file, "stack-test"))
    env = stack_env(
        root / "home",
        prefect_file,
        MODELOPS_SERVING__PORT=str(_serving_port()),
        MODELOPS_SERVING__ROLLOUT_TIMEOUT_S="120",
    )
    result = run_modelops(env, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield env, root
    finally:
        down = run_modelops(env, "down", timeout=180)
        print(down.stdout, down.stderr)


def _config(env: dict[str, str]):
    return load_config(environ={k: v for k, v in env.items() if k.startswith("MODELOPS_")})


def _register(uri: str, model: str, export: Path) -> str:
    """A registry version whose artifact is the SavedModel (what download_serving_model lays out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(model)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(model)
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(export), "model")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name='{model}'"):
        client.create_registered_model(model)
    version = client.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return str(version.version)


@pytest.fixture(scope="module")
def served(stack):
    """Both models registered, deployed on the local target and promoted champion: {model: rollout}."""
    from modelops.pipeline.rollout import promote_champion
    from modelops.targets.local import LocalTarget

    env, root = stack
    config = _config(env)
    target = LocalTarget(config, smoke_records=RECORDS)
    rollouts = {}
    for model, bias in MODELS.items():
        export = build_saved_model(root / "exports" / model, bias=bias)
        version = _register(config.mlflow_uri, model, export)
        rollouts[model] = target.deploy(model, version, export)
        promote_champion(config, rollouts[model], "tester", f"{model}-v{version}")
    return rollouts


def _answers(url: str, model: str) -> bool:
    return rest_client.served_version(rest_client.model_status(url, model, timeout=2)) is not None


def _refused(url: str, model: str) -> bool:
    try:
        rest_client.model_status(url, model, timeout=2)
    except rest_client.ServingClientError as exc:
        return exc.kind == "connect"
    return False


def _scores_right(url: str, model: str) -> bool:
    scores = rest_client.predict(url, model, RECORDS, timeout=5)
    return scores == pytest.approx([expected_score(r, MODELS[model]) for r in RECORDS], abs=1e-5)


def _rows(env: dict[str, str]) -> dict[str, dict]:
    return {row["name"]: row for row in stack_status(env)}


def test_each_model_answers_only_on_its_own_url(stack, served):
    env, _ = stack
    config = _config(env)
    urls = {model: rollout.url for model, rollout in served.items()}
    assert len(set(urls.values())) == 2, urls
    assert urls["risk-a"] == config.serving_url, "the first model keeps serving.port"

    wrong_model_404s = 0
    for model, url in urls.items():
        for _ in range(10):
            response = http_client.post(
                f"{url}/v1/models/{model}:predict",
                content=rest_client.encode_payload({"instances": [RECORDS[0]]}),
                timeout=5,
            )
            wrong_model_404s += response.status_code == 404
            assert response.status_code == 200, response.text
        assert _scores_right(url, model)
        other = next(m for m in urls if m != model)
        assert http_client.get(f"{url}/v1/models/{other}", timeout=5).status_code == 404  # not served here
    assert wrong_model_404s == 0

    rows = _rows(env)
    for model, url in urls.items():
        assert rows[f"serving:{model}"]["url"] == url and rows[f"serving:{model}"]["healthy"], rows
    table = run_modelops(env, "status", timeout=60).stdout
    assert all(url in table for url in urls.values()), table

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow_uri)
    for model, url in urls.items():
        champion = client.get_model_version_by_alias(model, "champion")
        assert champion.tags["serving_url"] == url


def test_traffic_finds_the_models_url_without_url(stack, served, tmp_path):
    env, _ = stack
    result = run_modelops(
        env, "traffic", "--model", "risk-b", "--period", "1", "--rows", "20", "--json",
        "--spool", str(tmp_path / "spool"), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"to {served['risk-b'].url} (the local target's port for the model)" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["ok"]) == (20, 20)


def _lines(folder: Path, pattern: str) -> list[dict]:
    return [orjson.loads(line) for path in folder.glob(pattern) for line in path.read_bytes().splitlines()]


def _standby_pid(env: dict[str, str]) -> int:
    """The pid of the supervisor's current warm standby (the last one its log says it started)."""
    log = (Path(env["MODELOPS_STACK__HOME"]) / "logs" / "supervisor.log").read_text()
    return int(re.findall(r"warm standby starting: pid (\d+)", log)[-1])


def test_a_killed_model_server_is_served_again_by_the_warm_standby_and_traffic_loses_nothing(
    stack, served, tmp_path
):
    env, _ = stack
    model, url = "risk-a", served["risk-a"].url
    # the supervisor's warm standby (TensorFlow imported) is ready to take over
    wait_for(lambda: "warm standby ready" in _rows(env)["supervisor"]["detail"], 180, "a warm standby")
    standby = _standby_pid(env)
    spool = tmp_path / "spool"
    rows = 1500  # 30 s at 50/s: outlasts the kill and the restart
    client = subprocess.Popen(
        [str(Path(sys.executable).parent / "modelops"), "traffic", "--model", model, "--period", "1",
         "--rows", str(rows), "--rate", "50", "--concurrency", "2", "--timeout", "5", "--json",
         "--spool", str(spool)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(_lines(spool, "scores-*")) >= 100, 60, "100 records scored before the kill")
        before = _rows(env)[f"serving:{model}"]
        os.kill(before["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _refused(url, model), 10, "the killed server stops answering", interval=0.05)
        wait_for(lambda: _answers(url, model), RESTART_DEADLINE_S, f"{model} answers again", interval=0.1)
        answered_s = time.monotonic() - killed
        out, err = client.communicate(timeout=180)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, out + err
    after = _rows(env)[f"serving:{model}"]
    assert after["pid"] != before["pid"] and after["url"] == url and after["healthy"]
    assert psutil.Process(after["pid"]).ppid() == standby, "forked from the warm standby (one model load)"
    assert _standby_pid(env) == standby and "warm standby ready" in _rows(env)["supervisor"]["detail"], (
        "the standby stays ready for the next restart or rollout"
    )
    assert after["restarts"] == 1 and before["restarts"] == 0
    assert _scores_right(url, model)
    supervisor_log = Path(env["MODELOPS_STACK__HOME"]) / "logs" / "supervisor.log"
    assert f"serving:{model} (pid {before['pid']}) died; restarted as pid {after['pid']}" in (
        supervisor_log.read_text()
    )

    summary = json.loads(out)
    scored, failed = _lines(spool, "scores-*"), _lines(spool / "errors", "errors-*")
    assert summary["sent"] == rows and summary["ok"] + summary["errors"] == rows, summary
    assert len(scored) == summary["ok"] and len(failed) == summary["errors"], "every request is in a spool"
    assert {r["request_id"] for r in scored}.isdisjoint(r["request_id"] for r in failed)
    assert summary["retries"] > 0, "the client met the outage and resent"
    print(
        f"\nkill -9 of serving:{model}: answered again after {answered_s:.1f} s; traffic {rows} requests: "
        f"{len(scored)} scored and spooled, {len(failed)} spooled as errors, {summary['retries']} resends"
    )


def test_a_killed_worker_is_restarted_and_runs_deployments(stack, served, tmp_path):
    env, _ = stack
    before = _rows(env)["worker"]
    state_file = Path(env["MODELOPS_STACK__HOME"]) / "stack.json"
    os.kill(before["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def recorded_worker() -> int | None:
        pid = json.loads(state_file.read_text())["components"]["worker"]["pid"]
        return pid if pid != before["pid"] else None

    new_pid = wait_for(recorded_worker, RESTART_DEADLINE_S, "a new worker in stack.json", interval=0.1)
    restarted_s = time.monotonic() - killed
    after = _rows(env)["worker"]
    assert after["pid"] == new_pid
    assert after["restarts"] == 1 and before["restarts"] == 0
    supervisor_log = Path(env["MODELOPS_STACK__HOME"]) / "logs" / "supervisor.log"
    assert f"worker (pid {before['pid']}) died; restarted as pid {after['pid']}" in supervisor_log.read_text()
    wait_for(lambda: _rows(env)["worker"]["healthy"], 120, "the new worker online")

    out = tmp_path / "probe.json"
    client_env = {
        **env,
        "PREFECT_API_URL": f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api",
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
    }
    result = subprocess.run(
        [PREFECT, "deployment", "run", "stack-probe/probe", "--param", f"out={out}",
         "--watch", "--watch-timeout", "180"],
        env=client_env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(out.read_text())["PREFECT_API_URL"] == client_env["PREFECT_API_URL"]
    print(f"\nkill -9 of the worker: restarted (new pid) after {restarted_s:.1f} s")


def test_down_and_up_serve_every_champion_again_on_the_same_url(stack, served):
    env, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    urls = {model: rollout.url for model, rollout in served.items()}
    down = run_modelops(env, "down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    for model, url in urls.items():
        assert f"serving: stopped {model}" in down.stdout
        with pytest.raises(rest_client.ServingClientError):
            rest_client.model_status(url, model, timeout=2)
    # risk-b's served copy is gone: `up` takes the registry's champion instead
    shutil.rmtree(home / "serving" / "models" / "risk-b" / served["risk-b"].version)

    up = run_modelops(env, "up", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    for model, url in urls.items():
        assert f"serving:{model}: version {served[model].version} serves at {url}" in up.stdout, up.stdout
        assert _scores_right(url, model)
        assert urlsplit(url).port == urlsplit(_rows(env)[f"serving:{model}"]["url"]).port
    rows = _rows(env)
    assert all(row["healthy"] for row in rows.values()), rows
    assert {"supervisor", "serving:risk-a", "serving:risk-b"} <= set(rows)
