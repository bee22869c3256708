"""The train flow against a real MLflow (sqlite registry in a temp dir) and a real Prefect API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

HMEQ_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "hmeq"


@pytest.fixture(scope="module")
def env_config(tmp_path_factory) -> Path:
    """An environment config with a sqlite MLflow in a temp dir and a small, quick training."""
    folder = tmp_path_factory.mktemp("mlflow")
    config = {
        "environment": "test",
        "model": {"name": "hmeq-test", "experiment": "hmeq-test"},
        "training": {
            "epochs": 6,
            "batch_size": 64,
            "learning_rate": 0.003,
            "hidden_units": [16, 8],
            "train_rows": 3000,
        },
        "mlflow": {"tracking_uri": f"sqlite:///{folder}/mlflow.db"},
    }
    path = folder / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(prefect_harness, env_config) -> dict:
    from flows.train import train

    return train(config=str(env_config), extra_tags={"retrained_from": "7", "reason": "test"})


def test_train_registers_a_challenger_with_lineage(trained, env_config):
    from modelops.config import load_config
    from modelops.integrations import registry

    uri = load_config(str(env_config)).mlflow_uri
    assert trained["model_name"] == "hmeq-test"
    assert trained["version"] == "1"
    assert registry.get_alias_version("hmeq-test", "challenger", uri) == "1"
    version = registry.resolve_version(uri, "hmeq-test", "challenger")
    assert version.run_id == trained["run_id"]
    tags = version.tags
    assert tags["data_digest"] == trained["data_digest"] and len(tags["data_digest"]) == 64
    assert tags["run_id"] == trained["run_id"]
    assert tags["data_source"].startswith("generated:hmeq(rows=3000")
    assert tags["retrained_from"] == "7" and tags["reason"] == "test"
    metrics = registry.version_metrics("hmeq-test", "1", uri)
    assert 0.3 < metrics["ks"] < 0.75, metrics
    assert 0.6 < metrics["auc"] < 0.95
    assert metrics["gini"] == pytest.approx(2 * metrics["auc"] - 1)
    for name in ("accuracy", "log_loss", "ks", "auc"):
        assert trained["metrics"][name] == pytest.approx(metrics[name])


def test_run_has_params_and_plot_artifacts(trained, env_config):
    from modelops.config import load_config
    from modelops.integrations import registry

    client = registry.client_for(load_config(str(env_config)).mlflow_uri)
    run = client.get_run(trained["run_id"])
    assert run.data.params["epochs"] == "6" and run.data.params["hidden_units"] == "16,8"
    assert run.data.tags["data_digest"] == trained["data_digest"]
    plots = {a.path for a in client.list_artifacts(trained["run_id"], "plots")}
    assert plots == {"plots/roc_curve.png", "plots/ks_curve.png"}
    local = Path(client.download_artifacts(trained["run_id"], "plots/ks_curve.png"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_training_moves_challenger_and_resolution_errors(trained, env_config):
    from modelops.config import load_config
    from modelops.integrations import registry

    uri = load_config(str(env_config)).mlflow_uri
    registry.set_alias("hmeq-test", "champion", trained["version"], uri)
    assert registry.get_alias_version("hmeq-test", "champion", uri) == "1"
    registry.set_version_tags("hmeq-test", 1, {"approved_by": "alice"}, uri)
    assert registry.resolve_version(uri, "hmeq-test", "1").tags["approved_by"] == "alice"
    with pytest.raises(registry.RegistryError, match="no-such-model"):
        registry.resolve_version(uri, "no-such-model", "1")
    with pytest.raises(registry.RegistryError, match=r"no version '99'.*versions: \[1\]"):
        registry.resolve_version(uri, "hmeq-test", "99")
    with pytest.raises(registry.RegistryError, match="no alias 'staging'.*champion"):
        registry.resolve_version(uri, "hmeq-test", "staging")
    assert registry.get_alias_version("hmeq-test", "staging", uri) is None
    assert registry.get_alias_version("no-such-model", "champion", uri) is None


def test_download_serving_model_gives_tf_serving_layout_that_scores(trained, env_config, tmp_path):
    from modelops.config import load_config
    from modelops.integrations import registry

    uri = load_config(str(env_config)).mlflow_uri
    folder = registry.download_serving_model("hmeq-test", "challenger", tmp_path / "models", uri)
    assert folder == tmp_path / "models" / "hmeq-test" / "1"
    assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    script = (
        "import sys, numpy as np; from modelops.data.generator import generate_period; "
        "from modelops.data.schema import HMEQ_SCHEMA; from modelops.model.export import score_frame; "
        "s = score_frame(sys.argv[1], generate_period(1, rows=200), HMEQ_SCHEMA); "
        "assert s.shape == (200,) and ((s > 0) & (s < 1)).all(); print('OK', float(s.mean()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("OK")


def test_train_from_csv_with_schema(prefect_harness, env_config, tmp_path):
    from flows.train import train
    from modelops.data.generator import generate_training

    generate_training(rows=2500, seed=7).to_csv(tmp_path / "loans.csv", sep=";", index=False)
    (tmp_path / "schema.yaml").write_text(
        "target: BAD\nnumeric: [LOAN, DEBTINC, DELINQ, DEROG]\ncategorical: [JOB]\nseparator: ';'\n"
    )
    result = train(
        csv=str(tmp_path / "loans.csv"), schema=str(tmp_path / "schema.yaml"), model_name="csv-model",
        config=str(env_config),
    )  # fmt: skip
    assert result["version"] == "1" and result["data_source"] == str((tmp_path / "loans.csv").resolve())
    assert result["metrics"]["ks"] > 0.2


@pytest.mark.skipif(not (HMEQ_DIR / "raw_data.csv").exists(), reason=f"no real HMEQ data at {HMEQ_DIR}")
def test_train_on_real_hmeq_csv(prefect_harness, env_config, tmp_path):
    from flows.train import train

    (tmp_path / "hmeq.yaml").write_text(
        "target: BAD\nnumeric: [LOAN, MORTDUE, VALUE, YOJ, DEROG, DELINQ, CLAGE, NINQ, CLNO, DEBTINC]\n"
        "categorical: [REASON, JOB]\n"
    )
    result = train(
        csv=str(HMEQ_DIR / "raw_data.csv"), schema=str(tmp_path / "hmeq.yaml"), model_name="hmeq-real",
        config=str(env_config),
    )  # fmt: skip
    assert result["metrics"]["n"] == pytest.approx(5960 * 0.2, abs=2)
    assert result["metrics"]["ks"] > 0.4
