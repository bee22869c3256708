"""Five ``degraded`` events within a minute start exactly one retrain.

Two mechanisms, both tested for real:

* **Concurrency:** the retrain deployment carries prefect.yaml's ``concurrency_limit`` (limit 1,
  ``CANCEL_NEW``) and its event trigger. A stand-in flow (it only holds the slot for a while and
  leaves a marker, so the test is quick) is deployed with exactly that limit and trigger to a
  process work pool served by a real ``prefect worker``; five events are emitted at once. Five
  runs are created; one does the work, the other four are cancelled by the server. The stand-in
  holds the slot until the test releases it, so the outcome does not depend on timing.
* **Guard:** once a retrain has registered a challenger, later triggers find it awaiting review
  and skip (``modelops.pipeline.retraining.retrain_guard``, called first by the real ``retrain`` flow),
  tested against a real MLflow registry with aliases.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
from support.stack import BIN, PROJECT_ROOT, wait_for, write_config

HOLD_S = 300  # the stand-in keeps the slot until released (this is only the bound if never released)
EVENTS = 5


def _retrain_spec() -> dict:
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    (retrain,) = [d for d in spec["deployments"] if d["name"] == "retrain"]
    return retrain


def _stand_in_source(folder: Path, work: Path) -> Path:
    path = folder / "retrain_stand_in.py"
    path.write_text(
        textwrap.dedent(
            f'''
            """Stand-in for flows.retrain:retrain (same parameters): holds the slot until released."""
            import json
            import time
            from pathlib import Path

            from prefect import flow
            from prefect.runtime import flow_run

            WORK = Path({str(work)!r})


            @flow(name="retrain-stand-in")
            def retrain(model_name=None, ks=None, trigger_event_id=None, triggered_version=None):
                marker = {{"run": str(flow_run.id), "model_name": model_name, "ks": ks,
                          "ks_type": type(ks).__name__, "event": trigger_event_id,
                          "version": triggered_version}}
                (WORK / f"{{flow_run.id}}.json").write_text(json.dumps(marker))
                deadline = time.monotonic() + {HOLD_S}
                while not (WORK / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                return marker
            '''
        )
    )
    return path


@pytest.mark.slow
def test_five_degraded_events_start_one_retrain(prefect_harness, tmp_path):
    from prefect import Flow, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from prefect.settings import PREFECT_API_URL
    from pydantic import TypeAdapter

    from modelops.integrations.events import emit_model_event

    spec = _retrain_spec()
    limit = spec["concurrency_limit"]
    assert limit == {"limit": 1, "collision_strategy": "CANCEL_NEW"}, "prefect.yaml's retrain limit changed"
    triggers = [TypeAdapter(DeploymentTriggerTypes).validate_python(dict(t)) for t in spec["triggers"]]
    assert len(triggers) == 1 and triggers[0].expect == {"modelops.performance.degraded"}

    work = tmp_path / "work"
    work.mkdir()
    source = _stand_in_source(tmp_path, work)
    pool = f"reliability-{uuid.uuid4().hex[:6]}"
    model = f"degraded-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    stand_in = Flow.from_source(source=str(tmp_path), entrypoint=f"{source.name}:retrain")
    deployment_id = stand_in.deploy(
        name="retrain",
        work_pool_name=pool,
        concurrency_limit=ConcurrencyLimitConfig(**limit),
        triggers=triggers,
        tags=spec.get("tags"),
        print_next_steps=False,
    )
    worker_log = tmp_path / "worker.log"
    env = dict(
        os.environ,
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_HOME=str(tmp_path / "prefect-home"),
    )
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        time.sleep(2)  # the trigger service loads the new automation
        started = time.monotonic()
        for _ in range(EVENTS):
            emit_model_event("modelops.performance.degraded", model, "1", ks=0.21, threshold=0.3)
        emitted_in = time.monotonic() - started

        def runs():
            with get_client(sync_client=True) as client:
                found = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
            return [r for r in found if r.parameters.get("model_name") == model]

        def all_created():
            found = runs()
            return found if len(found) == EVENTS else None

        created = wait_for(all_created, 60, f"{EVENTS} runs created")
        assert {r.parameters["triggered_version"] for r in created} == {"1"}
        assert len({r.parameters["trigger_event_id"] for r in created}) == EVENTS, "one run per event"

        def others_decided():  # one run holds the slot (running); none is waiting for it any more
            found = runs()
            decided = all(r.state and (r.state.is_final() or r.state.is_running()) for r in found)
            return found if decided and any(r.state.is_running() for r in found) else None

        wait_for(others_decided, 180, f"one run running, the others final (worker log: {worker_log})", 1.0)
        (work / "release").touch()

        def settled():
            found = runs()
            return found if all(r.state and r.state.is_final() for r in found) else None

        final = wait_for(settled, 180, f"all runs final (worker log: {worker_log})", 1.0)
        states = sorted(r.state.type.value for r in final)
        assert states == ["CANCELLED"] * (EVENTS - 1) + ["COMPLETED"], (
            states,
            worker_log.read_text()[-3000:],
        )
        markers = [json.loads(p.read_text()) for p in work.glob("*.json")]
        assert len(markers) == 1, f"exactly one run did the work: {markers}"
        (done,) = [r for r in final if r.state.type.value == "COMPLETED"]
        assert markers[0]["run"] == str(done.id)
        assert markers[0]["ks"] == 0.21 and markers[0]["ks_type"] == "float", "the KS keeps its type"
        print(
            f"\n{EVENTS} degraded events in {emitted_in:.2f} s: {len(created)} runs created, 1 completed "
            f"(did the work), {EVENTS - 1} cancelled by the deployment's concurrency limit"
        )
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:  # a worker ignores one SIGTERM: stop it firmly
            worker.kill()
            worker.wait(5)
        with get_client(sync_client=True) as client:
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
            client.delete_deployment(deployment_id)
            assert not client.read_deployments(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )


# --------------------------------------------------------------------------------------- the guard
@pytest.fixture
def registry(tmp_path):
    """A real MLflow registry (sqlite) with three versions of a model, no aliases yet."""
    from mlflow import MlflowClient

    from modelops.integrations.registry import client_for

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client: MlflowClient = client_for(uri)
    name = f"guard-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(3):
        client.create_model_version(name, str(source))
    return uri, name, client


def test_retrain_guard_follows_the_aliases(registry):
    from modelops.pipeline.retraining import retrain_guard

    uri, name, client = registry
    assert retrain_guard(name, uri) is None, "no champion, no challenger: retrain"
    client.set_registered_model_alias(name, "champion", "1")
    assert retrain_guard(name, uri) is None, "a champion alone: retrain"
    client.set_registered_model_alias(name, "challenger", "2")
    reason = retrain_guard(name, uri)
    assert reason and "version 2 (alias challenger) already awaits review" in reason
    client.set_registered_model_alias(name, "champion", "2")  # approved and promoted, alias not yet removed
    assert retrain_guard(name, uri) is None, "the challenger is the champion now: nothing awaits review"
    client.set_registered_model_alias(name, "challenger", "3")
    client.delete_registered_model_alias(name, "champion")
    assert "version 3" in retrain_guard(name, uri), "a first candidate awaiting review, no champion yet"
    client.delete_registered_model_alias(name, "challenger")  # rejected: the alias is freed
    assert retrain_guard(name, uri) is None
    assert retrain_guard(f"{name}-absent", uri) is None, "an unknown model: nothing awaits review"
    client.set_registered_model_alias(name, "champion", "2")
    assert "no longer the champion" in retrain_guard(name, uri, triggered_version="1"), "a stale event"
    assert retrain_guard(name, uri, triggered_version="2") is None
    client.set_model_version_tag(
        name, "3", "trigger", "modelops.performance.degraded"
    )  # v3 came from a retrain
    assert "retrained" in retrain_guard(name, uri, triggered_version="2", cooldown_s=300), (
        "inside the cooldown"
    )
    assert retrain_guard(name, uri, triggered_version="2", cooldown_s=0) is None


@pytest.mark.slow
def test_the_retrain_flow_skips_while_a_challenger_awaits_review(prefect_harness, registry, tmp_path):
    """The real retrain flow: five triggers in a row while v2 awaits review all skip, touching no data."""
    from flows.retrain import retrain

    uri, name, client = registry
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    config = write_config(tmp_path / "config", model={"name": name}, mlflow={"tracking_uri": uri})
    outcomes = [retrain(model_name=name, ks=0.2, config=str(config)) for _ in range(EVENTS)]
    assert all("version 2 (alias challenger) already awaits review" in o["skipped"] for o in outcomes)
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'")) == ["1", "2", "3"]
