"""The local serving target: side-by-side rollout, swap on one stable URL, failed deploys change nothing."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from support import http_client
from support.network import free_port
from support.serving import build_saved_model, expected_score, sample_records
from support.stack import wait_for

from modelops.config import load_config
from modelops.serving import rest_client
from modelops.targets.base import DeployError
from modelops.targets.local import LocalTarget

pytestmark = pytest.mark.slow
MODEL = "risk"
RECORDS = sample_records(4, seed=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"this is not a protobuf")
    return {
        "v1": build_saved_model(root / "v1", bias=-1.4),
        "v2": build_saved_model(root / "v2", bias=0.5),
        "out_of_range": build_saved_model(root / "out_of_range", score_scale=10.0),
        "corrupt": corrupt,
    }


@pytest.fixture
def target(tmp_path):
    config = load_config(
        environ={"MODELOPS_SERVING__PORT": str(free_port()), "MODELOPS_SERVING__ROLLOUT_TIMEOUT_S": "90"}
    )
    local = LocalTarget(config, home=tmp_path / "serving", smoke_records=RECORDS)
    yield local
    local.stop(MODEL)


def scores(url: str) -> list[float]:
    return rest_client.predict(url, MODEL, RECORDS)


def test_deploy_swap_failed_deploys_and_stop(target, models):
    assert target.current(MODEL) is None

    first = target.deploy(MODEL, "1", models["v1"])
    assert first.url == target.config.serving_url and first.previous_version is None
    assert scores(first.url) == pytest.approx([expected_score(r, -1.4) for r in RECORDS], abs=1e-5)
    assert target.current(MODEL).version == "1"

    # traffic keeps flowing on the public URL while version 2 is rolled out
    outcomes: list[str] = []
    running = True

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while running:
                try:
                    rest_client.predict(first.url, MODEL, RECORDS[:1], client=client)
                    outcomes.append("ok")
                except rest_client.ServingClientError as exc:
                    outcomes.append(str(exc))
                time.sleep(0.01)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: outcomes, 60, "traffic flowing before the rollout")
        second = target.deploy(MODEL, "2", models["v2"])
        after_deploy = len(outcomes)
        wait_for(lambda: len(outcomes) >= after_deploy + 10, 60, "traffic answered after the rollout")
    finally:
        running = False
        worker.join()
    assert second.url == first.url and second.previous_version == "1"
    assert rest_client.model_status(second.url, MODEL) == [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert scores(second.url) == pytest.approx([expected_score(r, 0.5) for r in RECORDS], abs=1e-5)
    failures = [o for o in outcomes if o != "ok"]
    assert len(failures) <= 1, failures  # at most a connection caught in the old backlog
    old_pid = first.details["pid"]
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(old_pid, 0)

    # a model answering scores above 1 fails the smoke test; version 2 keeps serving untouched
    with pytest.raises(DeployError, match="not finite probabilities"):
        target.deploy(MODEL, "3", models["out_of_range"])
    # a SavedModel that cannot even load: the new process exits, version 2 keeps serving
    with pytest.raises(DeployError, match="exited with code"):
        target.deploy(MODEL, "4", models["corrupt"])
    now = target.current(MODEL)
    assert now.version == "2" and now.details["pid"] == second.details["pid"]
    assert rest_client.model_status(second.url, MODEL)[0]["version"] == "2"
    assert scores(second.url) == pytest.approx([expected_score(r, 0.5) for r in RECORDS], abs=1e-5)
    assert sorted(p.name for p in target.base_path(MODEL).iterdir()) == ["1", "2"]

    # state is on disk: a fresh target object (another process, e.g. the CLI) sees and stops it
    other = LocalTarget(target.config, home=target.home)
    assert other.current(MODEL).version == "2"
    other.stop(MODEL)
    assert other.current(MODEL) is None and target.current(MODEL) is None
    with pytest.raises(httpx.ConnectError):
        http_client.get(f"{second.url}/v1/models/{MODEL}", timeout=2)


def test_bad_arguments_are_refused_before_anything_starts(target, tmp_path):
    with pytest.raises(DeployError, match="not a number"):
        target.deploy(MODEL, "v1", tmp_path)
    with pytest.raises(DeployError, match="no saved_model.pb"):
        target.deploy(MODEL, "1", tmp_path)
    assert target.current(MODEL) is None


def test_public_port_held_by_another_process_fails_the_deploy(target, models):
    import socket

    port = target.port_for(MODEL)  # the model's own port (the first model's is serving.port)
    with socket.socket() as squatter:  # no SO_REUSEPORT: the new server cannot share the port
        squatter.bind((target.host, port))
        squatter.listen()
        with pytest.raises(DeployError, match=f"cannot listen on {target.host}:{port}"):
            target.deploy(MODEL, "1", models["v1"])
    assert target.current(MODEL) is None
    assert not (target.base_path(MODEL) / "1").exists()
