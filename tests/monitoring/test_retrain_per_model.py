"""A burst of degraded events for two models: exactly one retrain per model, none dropped.

Against real components: a Prefect test server, the real ``retrain`` flow deployed with
``prefect.yaml``'s trigger (and no deployment-wide concurrency limit) to a process work pool served
by a real ``prefect worker``, an ``mlflow server``, PostgreSQL's scoring log, tiny real models.

Three ``degraded`` events for model A and two for model B are emitted together: five runs. The
test holds a real PostgreSQL lock on the scoring log, so the run that took a model's slot is still
inside its retrain (waiting to read the data) when its duplicates start: the outcome does not depend
on timing. Both models' slot holders are running at the same time (A's retrain does not hold up
B's); the three duplicates end Completed at once, each saying which run holds its model's slot.
Released, each holder registers exactly one new version, trained with its model's own settings.
"""

from __future__ import annotations

import math
import os
import subprocess
import uuid
from typing import Any

import psycopg2
import pytest
import yaml
from support.network import free_port
from support.scoring_log import insert_scores
from support.stack import (
    BIN,
    PROJECT_ROOT,
    TINY_TRAINING,
    MlflowServer,
    stop_process_group,
    wait_for,
    write_config,
)

from modelops.data.generator import generate_period
from modelops.data.schema import HMEQ_SCHEMA

pytestmark = pytest.mark.slow

EVENTS = {"a": 3, "b": 2}


def _retrain_spec() -> dict[str, Any]:
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    (retrain,) = [d for d in spec["deployments"] if d["name"] == "retrain"]
    return retrain


def _labelled_traffic(dsn: str, model: str, version: str, seed: int) -> None:
    recent = generate_period(3, rows=600, seed=seed)
    features = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in recent[list(HMEQ_SCHEMA.features)].to_dict("records")
    ]
    insert_scores(dsn, model, version, [0.5] * len(recent), recent["BAD"].tolist(), features=features)


def _runs(deployment_id, models: set[str]) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        found = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return [r for r in found if r.parameters.get("model_name") in models]


def _log_text(run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def test_a_burst_for_two_models_retrains_each_exactly_once(prefect_harness, scoring_db, tmp_path):
    from mlflow import MlflowClient
    from prefect import Flow
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from prefect.settings import PREFECT_API_URL
    from pydantic import TypeAdapter

    from flows.train import train
    from modelops.integrations.events import emit_model_event
    from modelops.integrations.prefect_client import prefect_client
    from modelops.integrations.registry import CHAMPION, set_alias

    spec = _retrain_spec()
    assert "concurrency_limit" not in spec, (
        "a deployment-wide limit would cancel one model's retrain for another's"
    )
    triggers = [TypeAdapter(DeploymentTriggerTypes).validate_python(dict(t)) for t in spec["triggers"]]

    tag = uuid.uuid4().hex[:6]
    models = {key: f"burst-{key}-{tag}" for key in EVENTS}
    mlflow = MlflowServer(tmp_path / "mlflow", free_port())
    mlflow.start()
    config = write_config(
        tmp_path / "config",
        model={"name": models["a"], "experiment": models["a"]},
        mlflow={"tracking_uri": mlflow.url},
        database={"url": scoring_db},
        training=TINY_TRAINING,
        monitoring={"window": {"kind": "count", "size": 300}, "min_sample": 100},
        models={models["b"]: {"training": {"epochs": 1}}},  # B's own training settings
    )
    worker = None
    pool = f"burst-{tag}"
    deployment_id = None
    try:
        for seed, model in enumerate(models.values()):
            champion = train(model_name=model, config=str(config))
            set_alias(model, CHAMPION, champion["version"], mlflow.url)
            _labelled_traffic(scoring_db, model, champion["version"], seed=30 + seed)

        with prefect_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        retrain = Flow.from_source(source=str(PROJECT_ROOT), entrypoint=spec["entrypoint"])
        deployment_id = retrain.deploy(
            name=f"retrain-{tag}",
            work_pool_name=pool,
            triggers=triggers,
            tags=spec.get("tags"),
            parameters={"start_review": False},  # no lifecycle deployment on this server
            print_next_steps=False,
        )
        worker_log = tmp_path / "worker.log"
        env = dict(
            os.environ,
            PREFECT_API_URL=PREFECT_API_URL.value(),
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            MODELOPS_CONFIG=str(config),
            MODELOPS_PROJECT_ROOT=str(PROJECT_ROOT),
        )
        with worker_log.open("w") as log:
            worker = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
            )  # fmt: skip

        # Hold the scoring log: a slot holder waits inside its retrain until the test lets go.
        blocker = psycopg2.connect(scoring_db)
        blocker.cursor().execute("LOCK TABLE modelops.scoring_log IN ACCESS EXCLUSIVE MODE")
        try:
            for key, count in EVENTS.items():
                for _ in range(count):
                    emit_model_event(
                        "modelops.performance.degraded", models[key], "1", ks=0.12, threshold=0.3
                    )

            total = sum(EVENTS.values())
            created = wait_for(
                lambda: (
                    (found := _runs(deployment_id, set(models.values()))) and len(found) == total and found
                ),
                90,
                f"{total} runs created by the automation",
            )
            assert len({r.parameters["trigger_event_id"] for r in created}) == total, "one run per event"

            def holders_waiting_duplicates_done():
                found = _runs(deployment_id, set(models.values()))
                running = [r for r in found if r.state.is_running()]
                done = [r for r in found if r.state.is_final()]
                return (
                    (running, done)
                    if len(running) == len(EVENTS) and len(done) == total - len(EVENTS)
                    else None
                )

            running, skipped = wait_for(
                holders_waiting_duplicates_done,
                240,
                f"one running retrain per model, the duplicates finished (worker log: {worker_log})",
                1.0,
            )
            holder_of = {r.parameters["model_name"]: r for r in running}
            assert set(holder_of) == set(models.values()), "both models retrain at the same time"
            for run in skipped:
                model = run.parameters["model_name"]
                assert run.state.is_completed(), (run.name, run.state)
                holder = holder_of[model]
                expected = f"a retrain of {model} is already running (run {holder.name} ({holder.id}))"
                wait_for(lambda: expected in _log_text(run.id), 60, f"{run.name} logs: {expected}")  # noqa: B023
            assert sorted(r.parameters["model_name"] for r in skipped) == sorted(
                [models["a"]] * (EVENTS["a"] - 1) + [models["b"]] * (EVENTS["b"] - 1)
            )
        finally:
            blocker.close()  # rolls back: the lock is released

        def holders_finished():
            found = [
                run for run in _runs(deployment_id, set(models.values())) if run.id in {h.id for h in running}
            ]
            return found if all(run.state.is_final() for run in found) else None

        finished = wait_for(holders_finished, 600, f"both retrains finished (worker log: {worker_log})", 1.0)
        client = MlflowClient(mlflow.url)
        for run in finished:
            model = run.parameters["model_name"]
            assert run.state.is_completed(), (run.name, run.state.message, _log_text(run.id)[-3000:])
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model}'"))
            assert versions == [1, 2], f"exactly one new version of {model}"
            assert run.name == f"retrain-{model}-v2" and f"model:{model}" in run.tags
            new = client.get_model_version(model, "2")
            params = client.get_run(new.run_id).data.params
            assert params["epochs"] == ("1" if model == models["b"] else str(TINY_TRAINING["epochs"]))
            assert (
                client.get_run(new.run_id).info.experiment_id
                == client.get_experiment_by_name(model).experiment_id
            )
    finally:
        if worker is not None:
            stop_process_group(worker)
        if deployment_id is not None:
            with prefect_client(sync_client=True) as client:
                client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
                client.delete_deployment(deployment_id)
        mlflow.stop()


def test_the_slot_is_per_model_and_names_its_holder(prefect_harness):
    """``exclusive_slot``: taken for one model, free for another, free again once released."""
    from prefect.states import Running

    from flows.retrain import retrain
    from modelops.integrations.flow_runs import exclusive_slot, slot_holder
    from modelops.integrations.prefect_client import prefect_client

    tag = uuid.uuid4().hex[:6]
    with prefect_client(sync_client=True) as client:
        holder = client.create_flow_run(retrain, name=f"retrain-holder-{tag}")
        client.set_flow_run_state(holder.id, Running())
    slot_a, slot_b = f"modelops-retrain-a-{tag}", f"modelops-retrain-b-{tag}"
    with exclusive_slot(slot_a, holder.id) as held:
        assert held
        with exclusive_slot(slot_a, None) as second:
            assert not second, "a second holder of the same model's slot"
        with exclusive_slot(slot_b, None) as other:
            assert other, "another model's slot is free"
        found = slot_holder(slot_a)
        assert found is not None and found.id == holder.id
        assert slot_holder(slot_a, besides=holder.id) is None
    with exclusive_slot(slot_a, None) as again:
        assert again, "released at the end of the block"


def test_a_slot_left_taken_by_a_forgotten_holder_is_taken_over(prefect_harness):
    """After a server restart the limit may count a slot whose lease (kept in memory) is gone."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from modelops.integrations.flow_runs import exclusive_slot
    from modelops.integrations.prefect_client import prefect_client

    slot = f"modelops-retrain-restarted-{uuid.uuid4().hex[:6]}"
    with prefect_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=slot, limit=1, active_slots=1)
        )
    with exclusive_slot(slot, None) as held:
        assert held, "no running run wants the slot: the count is a leftover"
