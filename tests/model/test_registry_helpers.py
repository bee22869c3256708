"""Registry helpers against a real (sqlite) MLflow registry, without training a model."""

from __future__ import annotations

import pytest

from modelops.integrations import registry


def test_run_url_only_for_a_tracking_server():
    assert (
        registry.run_url("http://127.0.0.1:5000/", "3", "abc")
        == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    )
    assert registry.run_url("sqlite:////tmp/x/mlflow.db", "3", "abc") is None


def test_artifacts_of_a_sqlite_store_live_beside_the_database(tmp_path, monkeypatch):
    assert (
        registry.local_artifact_root(f"sqlite:///{tmp_path}/mlflow.db") == (tmp_path / "mlartifacts").as_uri()
    )
    monkeypatch.chdir(tmp_path)
    assert (
        registry.local_artifact_root("sqlite:///rel/mlflow.db") == (tmp_path / "rel" / "mlartifacts").as_uri()
    )
    assert registry.local_artifact_root("http://127.0.0.1:5000") is None


def test_empty_registry_gives_clear_errors(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(
        registry.RegistryError, match=r"'hmeq-risk' does not exist .* registered models: none"
    ):
        registry.resolve_version(uri, "hmeq-risk", "champion")
    assert registry.get_alias_version("hmeq-risk", "champion", uri) is None
    with pytest.raises(registry.RegistryError, match="does not exist"):
        registry.download_serving_model("hmeq-risk", "1", tmp_path / "models", uri)
    assert not (tmp_path / "models").exists()
