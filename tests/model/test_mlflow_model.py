"""The registered version as MLflow's own tools see it: a real sqlite registry, real TensorFlow, real HTTP.

* ``mlflow.pyfunc.load_model("models:/<name>@champion")`` scores raw records (missing values as NaN
  and None, unseen categories) exactly as the SavedModel does, and ``mlflow models serve`` answers;
* the input example is validated (a serving request that must score like the SavedModel);
* the version carries its training data set and training reference (``log_input``, an artifact);
* ``mlflow.models.evaluate`` against the champion lands on the challenger's run;
* ``validation_status`` tags and the model card follow approve, supersede and reject.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support.network import free_port
from support.stack import TINY_TRAINING

from modelops.config import ModelOpsConfig, TrainingSettings
from modelops.data.generator import generate_period, generate_training
from modelops.data.schema import HMEQ_SCHEMA

pytestmark = pytest.mark.slow

MODEL = "hmeq-mlflow"
PARTIAL_RECORD = {"LOAN": 15000, "DEBTINC": None, "REASON": "HomeImp", "JOB": "Astronaut"}
MLFLOW = Path(sys.executable).parent / "mlflow"


def _register(fitted: Any, frame: pd.DataFrame, uri: str, **extra: Any):
    from modelops.model.evaluation import evaluate, split_holdout
    from modelops.pipeline.training import register_fitted_model

    train, holdout = split_holdout(frame, HMEQ_SCHEMA, 0.25, 3)
    return register_fitted_model(
        fitted,
        evaluate(fitted, holdout),
        tracking_uri=uri,
        experiment=MODEL,
        model_name=MODEL,
        data_digest="0" * 64,
        data_source="generated:hmeq(rows=1600,seed=3)",
        n_train=len(train),
        extra_tags=extra,
        train_frame=train,
        reference_rows=500,
        seed=3,
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict[str, Any]:
    """Two versions of ``MODEL`` (different seeds) in a sqlite registry; version 1 is the champion."""
    from modelops.integrations.registry import CHAMPION, set_alias
    from modelops.model.network import fit_model

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    frame = generate_training(rows=1600, seed=3)
    settings = {k: v for k, v in TINY_TRAINING.items() if k != "train_rows"}
    versions = []
    for seed in (3, 4):
        fitted = fit_model(frame, HMEQ_SCHEMA, TrainingSettings(**settings, seed=seed), progress=None)
        versions.append(_register(fitted, frame, uri))
    set_alias(MODEL, CHAMPION, versions[0].version, uri)
    return {"uri": uri, "folder": folder, "versions": versions}


def raw_records(rows: int = 1000) -> pd.DataFrame:
    """Generated records as a caller sends them: NaN and None for missing values, unseen categories."""
    frame = generate_period(3, rows=rows, seed=17)[list(HMEQ_SCHEMA.features)].astype(object)
    frame = frame.where(frame.notna(), None)  # missing values as None (object columns) ...
    frame["LOAN"] = frame["LOAN"].astype(float)  # ... and as NaN in a float column
    frame.loc[frame.index[::7], "JOB"] = "Astronaut"  # never seen in training
    frame.loc[frame.index[::11], "REASON"] = "Holiday"
    frame.loc[frame.index[::13], ["DEBTINC", "LOAN"]] = np.nan
    frame.loc[frame.index[::17], "JOB"] = ""
    return frame


def saved_model_scores(registry: dict[str, Any], frame: pd.DataFrame, tmp_path: Path) -> np.ndarray:
    """What TF Serving is given: the SavedModel that ``download_serving_model`` lays out, scored."""
    from modelops.integrations.registry import download_serving_model
    from modelops.model.export import score_frame

    frame = frame.reindex(columns=list(HMEQ_SCHEMA.features))  # TF Serving gets every input
    folder = download_serving_model(MODEL, "champion", tmp_path / "models", registry["uri"])
    assert folder.parent == tmp_path / "models" / MODEL and (folder / "saved_model.pb").is_file()
    return score_frame(folder, frame, HMEQ_SCHEMA)


def test_pyfunc_load_model_scores_raw_records_like_the_saved_model(registry, tmp_path, monkeypatch):
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    frame = raw_records()
    assert frame.isna().any().sum() >= 10 and (frame["JOB"] == "Astronaut").sum() > 100
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    scores = np.asarray(model.predict(frame), dtype=float)
    expected = saved_model_scores(registry, frame, tmp_path)
    assert scores.shape == (1000,)
    np.testing.assert_array_equal(scores, expected)
    assert 0.02 < scores.std(), "the records really are scored differently"
    partial = pd.DataFrame([PARTIAL_RECORD | {"LOAN": 15000.0}])  # absent columns: missing
    np.testing.assert_array_equal(model.predict(partial), saved_model_scores(registry, partial, tmp_path))


def test_input_example_and_signature_come_from_raw_records_with_missing_values(registry, tmp_path):
    import mlflow.models

    from modelops.integrations.registry import resolve_version

    version = resolve_version(registry["uri"], MODEL, "1")
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}/1", dst_path=str(tmp_path), tracking_uri=registry["uri"]
        )
    )
    info = mlflow.models.Model.load(local / "MLmodel")
    assert "python_function" in info.flavors and "tensorflow" not in info.flavors
    inputs = {spec.name: spec for spec in info.signature.inputs.inputs}
    assert set(inputs) == set(HMEQ_SCHEMA.features)
    assert {inputs[n].type.name for n in HMEQ_SCHEMA.numeric} == {"double"}
    assert {inputs[n].type.name for n in HMEQ_SCHEMA.categorical} == {"string"}
    assert not any(spec.required for spec in inputs.values()), "every column may be missing"
    example = json.loads((local / "serving_input_example.json").read_text())
    rows = example["dataframe_split"]["data"]
    assert any(value is None for value in rows[1]) and "__unseen__" in rows[2]
    assert (local / "artifacts" / "saved_model" / "saved_model.pb").is_file()
    assert version.tags["validation_status"] in ("pending", "approved", "superseded")


def test_a_model_that_does_not_serve_its_example_is_not_registered(registry, monkeypatch):
    """The example check is an error, not a warning: served scores that differ stop the registration."""
    from mlflow import MlflowClient

    from modelops.integrations.registry import RegistryError
    from modelops.model.network import fit_model
    from modelops.model.pyfunc import SavedModelScorer

    frame = generate_training(rows=600, seed=5)
    settings = {k: v for k, v in TINY_TRAINING.items() if k != "train_rows"}
    fitted = fit_model(frame, HMEQ_SCHEMA, TrainingSettings(**settings), progress=None)
    real_predict = SavedModelScorer.predict

    def predict_off_by_a_bit(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return real_predict(self, context, model_input, params) + 0.01  # a wrapper that mangles inputs

    monkeypatch.setattr(SavedModelScorer, "predict", predict_off_by_a_bit)
    before = len(MlflowClient(registry["uri"]).search_model_versions(f"name='{MODEL}'"))
    with pytest.raises(RegistryError, match="scores its input example"):
        _register(fitted, frame, registry["uri"])
    assert len(MlflowClient(registry["uri"]).search_model_versions(f"name='{MODEL}'")) == before


def test_mlflow_models_serve_answers_with_the_saved_model_scores(registry, tmp_path):
    frame = raw_records(200)
    expected = saved_model_scores(registry, frame, tmp_path)
    port = free_port()
    path = f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # uvicorn: as in an activated venv
    env = dict(os.environ, MLFLOW_TRACKING_URI=registry["uri"], PATH=path)
    log = tmp_path / "serve.log"
    command = [str(MLFLOW), "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ping", server, log)
        records = json.loads(frame.to_json(orient="records"))  # NaN and None travel as null
        records.append(PARTIAL_RECORD)  # an integer, absent columns
        expected = np.append(expected, saved_model_scores(registry, pd.DataFrame([PARTIAL_RECORD]), tmp_path))
        body = json.dumps({"dataframe_records": records}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(30)
    scores = np.asarray(answer["predictions"], dtype=float)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


def _wait_ready(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow models serve not ready in {timeout} s: {log.read_text()[-3000:]}")


def test_version_logs_training_data_and_reference(registry):
    from mlflow import MlflowClient

    from modelops.integrations.registry import training_reference

    version = registry["versions"][0]
    reference = training_reference(MODEL, version.version, registry["uri"])
    assert reference is not None and len(reference) == 500
    assert list(reference.columns) == [*HMEQ_SCHEMA.features, "score"]
    assert reference["score"].between(0, 1).all() and reference["score"].std() > 0.01
    run = MlflowClient(registry["uri"]).get_run(version.run_id)
    contexts = {
        d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
        for d in run.inputs.dataset_inputs
    }
    assert contexts == {"training": "training", "reference": "reference"}
    rows = {d.dataset.name: json.loads(d.dataset.profile)["num_rows"] for d in run.inputs.dataset_inputs}
    assert rows == {"training": 1200, "reference": 500}
    tags = MlflowClient(registry["uri"]).get_model_version(MODEL, version.version).tags
    assert tags["reference_artifact"] == "reference/reference.parquet" and tags["reference_rows"] == "500"


def test_evaluate_against_the_champion_is_logged_on_the_challengers_run(registry):
    from mlflow import MlflowClient

    from modelops.integrations.registry import download_serving_model, resolve_version
    from modelops.model.export import score_frame
    from modelops.model.metrics import ks_statistic
    from modelops.pipeline.retraining import build_retraining_set, evaluate_against_champion

    uri = registry["uri"]
    recent = generate_period(2, rows=800, seed=9)
    dataset = build_retraining_set(recent, None, HMEQ_SCHEMA, holdout_fraction=0.25, min_records=400)
    config = ModelOpsConfig(mlflow={"tracking_uri": uri})
    outcome = evaluate_against_champion(config, MODEL, "2", "1", HMEQ_SCHEMA, dataset)

    client = MlflowClient(uri)
    candidate = resolve_version(uri, MODEL, "2")
    run = client.get_run(candidate.run_id)
    labels = dataset.recent_holdout["BAD"].to_numpy()
    folder = download_serving_model(MODEL, "2", Path(registry["folder"]) / "eval-models", uri)
    ks = ks_statistic(score_frame(folder, dataset.recent_holdout, HMEQ_SCHEMA), labels)
    assert run.data.metrics["recent_holdout_ks"] == pytest.approx(ks, abs=1e-6)
    assert outcome["candidate"]["recent_holdout_ks"] == pytest.approx(ks, abs=1e-6)
    (baseline_run,) = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{candidate.run_id}'"
    )
    assert baseline_run.data.tags["baseline_version"] == "1"
    assert baseline_run.data.metrics["recent_holdout_ks"] == pytest.approx(
        outcome["baseline"]["recent_holdout_ks"]
    )
    contexts = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset for d in run.inputs.dataset_inputs
    }
    assert json.loads(contexts["recent_window"].profile)["num_rows"] == 800
    assert outcome["verdict"].startswith("passed" if outcome["passed"] else "failed")
    tags = resolve_version(uri, MODEL, "2").tags
    assert tags["evaluation_vs_champion"] == outcome["verdict"][:500]
    assert tags["evaluation_baseline_version"] == "1"
    assert (
        "`mlflow.models.evaluate` against champion version 1" in resolve_version(uri, MODEL, "2").description
    )


def test_tags_and_model_card_follow_approve_supersede_and_reject(registry):
    from mlflow import MlflowClient

    from modelops.integrations.registry import CHALLENGER, get_alias_version, resolve_version, set_alias
    from modelops.pipeline.rollout import mark_rejected, promote_champion
    from modelops.targets.base import Rollout

    uri = registry["uri"]
    config = ModelOpsConfig(mlflow={"tracking_uri": uri})
    card = resolve_version(uri, MODEL, "2").description
    assert card.startswith(f"# {MODEL} version 2") and "**Status:** awaiting review" in card
    assert "## Data" in card and "generated:hmeq(rows=1600,seed=3)" in card
    assert "reference/reference.parquet" in card and "## Metrics" in card and "not reviewed yet" in card

    set_alias(MODEL, CHALLENGER, "2", uri)
    rollout = Rollout(target="local", model_name=MODEL, version="2", url="http://127.0.0.1:8501")
    promote_champion(config, rollout, "alice", "v2-tag", "better on the recent window")
    new, old = resolve_version(uri, MODEL, "2"), resolve_version(uri, MODEL, "1")
    assert new.tags["validation_status"] == "approved" and new.tags["approved_by"] == "alice"
    assert new.tags["approval_comment"] == "better on the recent window"
    assert old.tags["validation_status"] == "superseded" and old.tags["superseded_by"] == "2"
    assert (
        get_alias_version(MODEL, "champion", uri) == "2" and get_alias_version(MODEL, CHALLENGER, uri) is None
    )
    assert "**Status:** approved (alias champion)" in new.description
    assert "approved by alice at" in new.description and "better on the recent window" in new.description
    assert "image tag `v2-tag`" in new.description
    assert "**Status:** superseded" in old.description and "superseded by version 2" in old.description
    assert "alias champion" not in old.description

    set_alias(MODEL, CHALLENGER, "1", uri)  # v1 proposed again, and turned down
    mark_rejected(config, MODEL, "1", "bob", "rejected", "no longer competitive")
    rejected = MlflowClient(uri).get_model_version(MODEL, "1")
    assert rejected.tags["validation_status"] == "rejected" and rejected.tags["rejected_by"] == "bob"
    assert get_alias_version(MODEL, CHALLENGER, uri) is None
    assert "**Status:** rejected" in rejected.description
    assert (
        "rejected by bob (rejected) at" in rejected.description
        and "no longer competitive" in rejected.description
    )
    assert resolve_version(uri, MODEL, "2").tags["validation_status"] == "approved"
