"""Reliability of a rollout: a broken model fails its smoke test on the local target.

The lifecycle's own release step (build → ``deploy`` → ``promote-champion`` → announce) runs as
``deployment_stage`` runs it after an approval, in a flow on a real Prefect server, against a real
MLflow registry (sqlite) and real serving processes. Version 1 becomes the champion; version 2
answers scores above 1, so the target's smoke test refuses it. Expected: version 1 keeps serving
(same process), the ``champion`` alias does not move, ``modelops.deploy.failed`` is stored by
Prefect, and people are notified.

Prebuild would already refuse this particular model (it scores it in a fresh process); the test
hands it to ``deploy`` directly because a model can pass prebuild and still fail in the server
(it cannot start there, the port is taken, the served answers differ): that is the guarantee of
the deploy step being tested.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from support.network import free_port
from support.serving import build_saved_model, expected_score, sample_records
from support.stack import TeamsReceiver, model_events, wait_for, write_config

pytestmark = pytest.mark.slow
WEBHOOK_ENV = "MODELOPS_RELIABILITY_TEAMS_WEBHOOK"


def _register(tracking_uri: str, model_name: str, saved_model: Path) -> str:
    """A registry version whose artifact is ``saved_model`` (and the schema.json prebuild reads)."""
    import mlflow

    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.integrations.registry import client_for, ensure_experiment

    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, model_name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifacts(str(saved_model), "model")
        mlflow.log_dict(HMEQ_SCHEMA.to_dict(), "schema.json")
    if not client.search_registered_models(f"name='{model_name}'"):
        client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return str(version.version)


def _rollout_flow():
    from prefect import flow

    from flows import lifecycle
    from modelops.approval import ApprovalDecision
    from modelops.config import load_config
    from modelops.integrations.registry import download_serving_model
    from modelops.pipeline.prebuild import PrebuiltModel

    @flow(name="reliability-rollout", flow_run_name="rollout-{model_name}-v{version}")
    def rollout_candidate(config_path: str, model_name: str, version: str) -> str:
        """deployment_stage after an approval: deploy, then promote only if the rollout is healthy."""
        from modelops.data.schema import HMEQ_SCHEMA

        config = load_config(config_path)
        switches = {"teams": True, "email": False}
        model_dir = download_serving_model(
            model_name, version, config.stack_home / "models", config.mlflow_uri
        )
        model = PrebuiltModel(model_name, version, model_dir, HMEQ_SCHEMA, report=None)  # type: ignore[arg-type]
        decision = ApprovalDecision(
            model_name, version, True, "approved", reviewer="alice", image_tag=f"v{version}"
        )
        return lifecycle.release(config, model, decision, switches).version

    return rollout_candidate


def test_broken_model_keeps_the_champion_serving_and_the_alias_in_place(
    prefect_harness, tmp_path, monkeypatch
):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from modelops.config import load_config
    from modelops.integrations.prefect_client import prefect_client
    from modelops.integrations.registry import (
        CHALLENGER,
        CHAMPION,
        get_alias_version,
        resolve_version,
        set_alias,
    )
    from modelops.serving import rest_client
    from modelops.targets.local import LocalTarget

    model_name = f"rollout-{uuid.uuid4().hex[:8]}"
    receiver = TeamsReceiver()
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    config_path = write_config(
        tmp_path / "config",
        model={"name": model_name, "experiment": model_name},
        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"},
        stack={"home": str(tmp_path / "home")},
        serving={"target": "local", "port": free_port(), "rollout_timeout_s": 120},
        notifications={"teams": {"enabled": True, "webhook": {"env": WEBHOOK_ENV}}},
    )
    (tmp_path / "mlflow").mkdir()
    config = load_config(config_path)
    uri = config.mlflow_uri
    good = _register(uri, model_name, build_saved_model(tmp_path / "export" / "good", bias=-1.4))
    broken = _register(uri, model_name, build_saved_model(tmp_path / "export" / "broken", score_scale=10.0))
    assert (good, broken) == ("1", "2")
    target = LocalTarget(config)
    rollout_candidate = _rollout_flow()
    try:
        assert rollout_candidate(str(config_path), model_name, good) == "1"
        assert get_alias_version(model_name, CHAMPION, uri) == "1"
        champion = target.current(model_name)
        records = sample_records(4, seed=11)

        set_alias(model_name, CHALLENGER, broken, uri)
        started = time.monotonic()
        state = rollout_candidate(str(config_path), model_name, broken, return_state=True)
        failed_in = time.monotonic() - started
        assert state.is_failed(), state
        assert "smoke test" in state.message and "previous version kept" in state.message, state.message

        # the previous champion keeps serving: same process, same version, same scores on the same URL
        now = target.current(model_name)
        assert now.version == "1" and now.details["pid"] == champion.details["pid"]
        assert rest_client.model_status(config.serving_url, model_name)[0]["version"] == "1"
        assert rest_client.predict(config.serving_url, model_name, records) == pytest.approx(
            [expected_score(r, -1.4) for r in records], abs=1e-5
        )
        assert sorted(p.name for p in target.base_path(model_name).iterdir()) == ["1"]

        # the registry: champion unchanged, the broken version never marked deployed
        assert get_alias_version(model_name, CHAMPION, uri) == "1"
        assert get_alias_version(model_name, CHALLENGER, uri) == "2"
        assert "deployed_at" not in resolve_version(uri, model_name, "2").tags
        assert "deployed_at" in resolve_version(uri, model_name, "1").tags

        # promote never ran for version 2: the flow run holds a failed deploy and no promotion
        with prefect_client(sync_client=True) as client:
            flow_run = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )[0]
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
        by_name = {t.name.rsplit("-", 1)[0]: t.state.type.value for t in task_runs}
        assert by_name.get("deploy") == "FAILED" and "promote-champion" not in by_name, by_name

        # Prefect stored modelops.deploy.failed for version 2, and no modelops.model.deployed for it
        failed = wait_for(
            lambda: model_events(model_name, "modelops.deploy.failed"), 30, "deploy.failed event"
        )
        assert [e["payload"]["version"] for e in failed] == ["2"]
        assert "smoke test" in failed[0]["payload"]["error"]
        deployed = wait_for(lambda: model_events(model_name, "modelops.model.deployed"), 30, "deployed event")
        assert [e["payload"]["version"] for e in deployed] == ["1"]

        # people were told (a Teams Workflow card)
        texts = wait_for(lambda: [t for t in receiver.texts() if "rollout failed" in t], 10, "notification")
        assert len(texts) == 1 and "previous champion keeps serving" in texts[0] and "v2" in texts[0]
        print(
            f"\nbroken model rollout: refused in {failed_in:.1f} s; version 1 kept serving (same pid), "
            "champion alias unchanged, deploy.failed stored, 1 notification"
        )
    finally:
        target.stop(model_name)
        receiver.close()
