"""Reliability of registration when the MLflow server dies: a retry, or a clear error, never half a version.

A real ``mlflow server`` (sqlite + local artifact store, free port) is SIGKILLed while
``modelops.integrations.registry.log_and_register`` runs — at fixed points (inside the model upload,
between logging and registering, between registering and setting the alias) and at random moments.

* Restarted within the MLflow client's HTTP retry window: the registration completes.
* Down for longer: an error naming the server, and afterwards no alias points at a version whose
  SavedModel cannot be downloaded; a new attempt then registers cleanly.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import pytest
from support.network import free_port
from support.stack import TINY_TRAINING, MlflowServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted():
    """A tiny trained model (fit once for the module) and its evaluation."""
    from modelops.config import TrainingSettings
    from modelops.data.generator import generate_training
    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.model.evaluation import evaluate, split_holdout
    from modelops.model.network import fit_model

    frame = generate_training(rows=TINY_TRAINING["train_rows"], seed=3)
    settings = TrainingSettings(**TINY_TRAINING)
    train, holdout = split_holdout(frame, HMEQ_SCHEMA, 0.25, 3)
    model = fit_model(train, HMEQ_SCHEMA, settings, progress=None)
    return model, evaluate(model, holdout)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    mlflow_server = MlflowServer(tmp_path_factory.mktemp("mlflow"), free_port())
    mlflow_server.start()
    yield mlflow_server
    mlflow_server.stop()


@pytest.fixture
def server(mlflow_server):
    """The module's server, running (each test kills it and brings it back); one model name per test."""
    if mlflow_server.process is None or mlflow_server.process.poll() is not None:
        mlflow_server.start()
    return mlflow_server


@pytest.fixture
def quick_client_retries(monkeypatch):
    """MLflow's client retries every request with exponential backoff (defaults: 7 tries, ~4 min)."""

    def set_retries(max_retries: int, backoff_factor: int) -> None:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(backoff_factor))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    return set_retries


def _register(fitted, uri: str, model_name: str):
    from modelops.integrations.registry import log_and_register
    from modelops.model.export import serving_module

    model, evaluation = fitted
    return log_and_register(
        tracking_uri=uri,
        experiment=model_name,
        model_name=model_name,
        serving_module=serving_module(model),
        schema=model.schema,
        params={"epochs": model.settings.epochs},
        metrics=evaluation.metrics.as_dict(),
        history=model.history,
        plots={},
        artifacts={"schema.json": model.schema.to_dict()},
        input_example=None,
        data_digest="0" * 64,
        data_source="generated:reliability",
    )


def registry_problems(uri: str, model_name: str, scratch) -> list[str]:
    """What would make the registry lie: an alias on a version that is not READY or has no SavedModel."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException:
        return []  # nothing registered at all: consistent
    problems = []
    for alias, version in (registered.aliases or {}).items():
        model_version = client.get_model_version(model_name, version)
        if model_version.status != "READY":
            problems.append(f"alias {alias} -> version {version} in status {model_version.status}")
            continue
        folder = scratch / f"{alias}-{version}-{uuid.uuid4().hex[:6]}"
        try:
            local = mlflow.artifacts.download_artifacts(
                f"models:/{model_name}@{alias}", dst_path=str(folder), tracking_uri=uri
            )
        except Exception as exc:  # noqa: BLE001 - any failure to fetch the model is the problem
            problems.append(f"alias {alias} -> version {version}: model not downloadable ({exc})")
            continue
        if not list(Path(local).rglob("saved_model.pb")):
            problems.append(f"alias {alias} -> version {version}: no saved_model.pb")
    return problems


def _versions(uri: str, model_name: str) -> list[str]:
    from mlflow import MlflowClient

    return sorted(v.version for v in MlflowClient(uri).search_model_versions(f"name='{model_name}'"))


def _aliases(uri: str, model_name: str) -> dict[str, str]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return dict(MlflowClient(uri).get_registered_model(model_name).aliases or {})
    except MlflowException:
        return {}


def _kill_before(monkeypatch, owner, attribute: str, server: MlflowServer, restart: bool) -> None:
    """Make the server die (SIGKILL) just before ``owner.attribute`` runs, once; optionally restart it."""
    original = getattr(owner, attribute)
    fired = []

    def wrapper(*args, **kwargs):
        if not fired:
            fired.append(time.monotonic())
            server.kill()
            if restart:
                threading.Thread(target=server.start, kwargs={"wait": False}, daemon=True).start()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, wrapper)


def _kill_inside_folder_upload(monkeypatch, server: MlflowServer, after_files: int) -> None:
    """SIGKILL the server once ``after_files`` files of a folder upload (the SavedModel) went up."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    upload_folder, upload_file = HttpArtifactRepository.log_artifacts, HttpArtifactRepository.log_artifact
    inside: list[int] = []
    fired: list[str] = []

    def log_artifacts(self, local_dir, artifact_path=None):
        inside.append(0)
        try:
            return upload_folder(self, local_dir, artifact_path)
        finally:
            inside.pop()

    def log_artifact(self, local_file, artifact_path=None):
        if inside:
            inside[-1] += 1
            if inside[-1] == after_files + 1 and not fired:
                fired.append(local_file)
                server.kill()
        return upload_file(self, local_file, artifact_path)

    monkeypatch.setattr(HttpArtifactRepository, "log_artifacts", log_artifacts)
    monkeypatch.setattr(HttpArtifactRepository, "log_artifact", log_artifact)


def test_server_restarting_between_log_and_register_is_absorbed_by_client_retries(
    fitted, server, quick_client_retries, monkeypatch, tmp_path
):
    import mlflow

    quick_client_retries(max_retries=7, backoff_factor=1)  # ~60 s of retries; a restart takes 5-15 s
    model_name = f"mlflow-restart-{uuid.uuid4().hex[:6]}"
    _kill_before(monkeypatch, mlflow, "register_model", server, restart=True)
    starts = server.starts
    started = time.monotonic()
    registered = _register(fitted, server.url, model_name)
    took = time.monotonic() - started
    assert server.starts == starts + 1, "the server was killed and restarted during the registration"
    assert registered.version == "1"
    assert _aliases(server.url, model_name) == {"challenger": "1"}
    assert registry_problems(server.url, model_name, tmp_path) == []
    print(
        "\nMLflow killed between log and register and restarted: "
        f"registered by the client's retries in {took:.1f} s"
    )


@pytest.mark.parametrize(
    "kill_point",
    ["inside the model upload", "between log and register", "between register and alias", "random"],
)
def test_server_down_mid_registration_is_a_clear_error_and_nothing_half_registered(
    fitted, server, quick_client_retries, monkeypatch, tmp_path, kill_point
):
    import mlflow
    import mlflow.tensorflow
    from mlflow import MlflowClient

    quick_client_retries(max_retries=1, backoff_factor=1)
    model_name = f"mlflow-down-{uuid.uuid4().hex[:6]}"
    if kill_point == "inside the model upload":
        _kill_inside_folder_upload(monkeypatch, server, after_files=2)
    elif kill_point == "between log and register":
        _kill_before(monkeypatch, mlflow, "register_model", server, restart=False)
    elif kill_point == "between register and alias":
        _kill_before(monkeypatch, MlflowClient, "set_registered_model_alias", server, restart=False)
    else:
        delay = random.uniform(0.05, 0.8)  # a registration takes ~1-3 s: somewhere inside it
        timer = threading.Timer(delay, server.kill)
        timer.start()

    started = time.monotonic()
    try:
        _register(fitted, server.url, model_name)
        outcome = "registered before the kill"
    except Exception as exc:  # noqa: BLE001 - the error is what is being checked
        message = f"{type(exc).__name__}: {exc}"
        assert f"127.0.0.1:{server.port}" in message or "Connection refused" in message, message[:500]
        outcome = f"error after {time.monotonic() - started:.1f} s: {message.splitlines()[0][:160]}"
    if kill_point == "random":
        timer.cancel()  # registered before the timer fired: it must not kill the restarted server
        timer.join()
        outcome = f"kill at {delay:.1f} s; {outcome}"
    server.kill()
    server.start()  # the server comes back: what does the registry say now?
    assert registry_problems(server.url, model_name, tmp_path) == []
    left = {"versions": _versions(server.url, model_name), "aliases": _aliases(server.url, model_name)}

    # a new attempt (what a Prefect retry or a rerun of `modelops train` does) registers cleanly
    assert mlflow.active_run() is None, "no run left active in this process after the failure"
    retry = _register(fitted, server.url, model_name)
    assert _aliases(server.url, model_name)["challenger"] == retry.version
    assert registry_problems(server.url, model_name, tmp_path) == []
    print(f"\nkill {kill_point}: {outcome}; left behind {left}; retry registered version {retry.version}")
