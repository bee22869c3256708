"""The server serves what the project's exporter writes: train a tiny model, export, serve, compare scores."""

from __future__ import annotations

import pytest
from support.network import free_port
from support.serving import ServerProcess

from modelops.serving import rest_client

pytestmark = pytest.mark.slow


def test_exported_model_scores_the_same_over_rest_as_in_process(tmp_path):
    from modelops.config import TrainingSettings
    from modelops.data.generator import generate_period, generate_training
    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.model.export import export_saved_model
    from modelops.model.network import fit_model

    settings = TrainingSettings(epochs=2, hidden_units=(8,), train_rows=600)
    fitted = fit_model(generate_training(rows=600, seed=1), HMEQ_SCHEMA, settings, progress=None)
    export_saved_model(fitted, tmp_path, "hmeq-risk", 1)
    traffic = generate_period(1, rows=40, seed=2)  # raw records with NaN numbers and missing categories
    assert traffic.isna().any().any()
    with ServerProcess(tmp_path / "hmeq-risk", free_port(), "hmeq-risk") as server:
        served = rest_client.predict(server.url, "hmeq-risk", traffic)
        rest_client.smoke_test(server.url, "hmeq-risk", traffic.head(5), expected_version=1)
    assert served == pytest.approx(fitted.score(traffic).tolist(), abs=1e-5)
