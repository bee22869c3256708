"""The server serves what the project's exporter writes: train a tiny model, export, serve, compare scores.

The in-process call the server makes (``SignatureRunner``) takes a fast path through private TF APIs
when it answers exactly like the public call; both are compared here on real records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.network import free_port
from support.serving import ServerProcess

from modelops.data.generator import generate_period
from modelops.serving import repository, rest_client
from modelops.serving.predict_request import parse_predict_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny model from the project's trainer, exported as version 1 under ``<dir>/hmeq-risk``."""
    from modelops.config import TrainingSettings
    from modelops.data.generator import generate_training
    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.model.export import export_saved_model
    from modelops.model.network import fit_model

    base = tmp_path_factory.mktemp("exported")
    settings = TrainingSettings(epochs=2, hidden_units=(8,), train_rows=600)
    fitted = fit_model(generate_training(rows=600, seed=1), HMEQ_SCHEMA, settings, progress=None)
    export_saved_model(fitted, base, "hmeq-risk", 1)
    return base / "hmeq-risk", fitted


def test_exported_model_scores_the_same_over_rest_as_in_process(exported):
    base, fitted = exported
    traffic = generate_period(1, rows=40, seed=2)  # raw records with NaN numbers and missing categories
    assert traffic.isna().any().any()
    with ServerProcess(base, free_port(), "hmeq-risk") as server:
        served = rest_client.predict(server.url, "hmeq-risk", traffic)
        rest_client.smoke_test(server.url, "hmeq-risk", traffic.head(5), expected_version=1)
    assert served == pytest.approx(fitted.score(traffic).tolist(), abs=1e-5)


def _columns(version: repository.ModelVersion, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return parse_predict_request({"instances": records}, version.inputs_by_signature, 4096).columns


def test_the_fast_call_is_on_and_answers_exactly_like_the_public_call(exported):
    base, _ = exported
    version = repository.load_version(base / "1", 1)
    runner = version.signatures["serving_default"]
    assert runner.fast_call is not None, "the fast call was refused for the project's own model"
    dtypes = {spec.name: "DT_STRING" if spec.kind == "string" else "DT_FLOAT" for spec in runner.inputs}
    records = rest_client.to_instances(generate_period(2, rows=64, seed=4), dtypes)
    assert any(value == "" for record in records for value in record.values())  # missing categories
    for batch in (records[:1], records):
        columns = _columns(version, batch)
        as_bytes = {  # strings as gRPC's decoder hands them over
            name: np.array([str(v).encode() for v in column], dtype=object)
            if column.dtype == object
            else column
            for name, column in columns.items()
        }
        expected = runner.public_call(columns)
        for got in (runner(columns), runner(as_bytes)):
            assert got.keys() == expected.keys()
            for name in got:
                assert got[name].dtype == expected[name].dtype
                np.testing.assert_array_equal(got[name], expected[name])


def test_a_fast_call_that_answers_differently_is_left_off(exported, monkeypatch):
    base, _ = exported

    real_fast_call = repository._fast_call

    def off_by_one(function, inputs, outputs):
        fast = real_fast_call(function, inputs, outputs)
        return lambda columns: {name: value + 1 for name, value in fast(columns).items()}

    monkeypatch.setattr(repository, "_fast_call", off_by_one)
    version = repository.load_version(base / "1", 1)
    runner = version.signatures["serving_default"]
    assert runner.fast_call is None
    columns = _columns(version, [{spec.name: 0.0 if spec.kind != "string" else "" for spec in runner.inputs}])
    np.testing.assert_array_equal(runner(columns)["score"], runner.public_call(columns)["score"])
