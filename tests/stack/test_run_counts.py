"""The plain-HTTP count that lets ``modelops status`` skip Prefect's client when no run could be orphaned.

Against a real Prefect server (the shared test harness, where other modules' runs may live: every
assertion is on the change a test makes). The no-Prefect-import side, with a real ``modelops status``
on a real stack, is checked in ``tests/stack/test_stack_lifecycle.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.network import free_port

from modelops.config import ModelOpsConfig
from modelops.stack.run_counts import ACTIVE_STATE_TYPES, runs_that_could_be_orphaned


def test_the_counted_states_are_the_ones_reconcile_calls_active():
    from modelops.stack import reconcile

    assert list(ACTIVE_STATE_TYPES) == [state_type.value for state_type in reconcile.ACTIVE]


@pytest.fixture
def harness_config(prefect_harness) -> ModelOpsConfig:
    from prefect.settings import PREFECT_API_URL

    return ModelOpsConfig(prefect={"api_url": PREFECT_API_URL.value()})


@pytest.fixture
def client(prefect_harness) -> Iterator[object]:
    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        yield client


@pytest.fixture
def created(client) -> Iterator[list]:
    """Flow runs and deployments a test creates, deleted afterwards: the harness outlives the module."""
    runs: list = []
    yield runs
    for kind, object_id in reversed(runs):
        if kind == "deployment":
            client.delete_deployment(object_id)
        else:
            client.delete_flow_run(object_id)


def _run_in_state(client, created: list, state, flow_name: str, deployment_id=None):
    if deployment_id is None:
        run = client.create_flow_run(flow=_named_flow(flow_name), name=f"counted-{uuid.uuid4().hex[:6]}")
    else:
        run = client.create_flow_run_from_deployment(deployment_id)
    created.append(("run", run.id))
    client.set_flow_run_state(run.id, state, force=True)
    return run


def _named_flow(name: str):
    from prefect import flow

    return flow(name=name)(lambda: None)


@pytest.mark.parametrize("state_name", ["Running", "Paused", "Pending", "Cancelling"])
def test_each_active_run_counts_and_stops_counting_once_it_ends(harness_config, client, created, state_name):
    from prefect import states

    before = runs_that_could_be_orphaned(harness_config)
    assert before is not None
    run = _run_in_state(client, created, getattr(states, state_name)(), "counted-flow")
    assert runs_that_could_be_orphaned(harness_config) == before + 1
    client.set_flow_run_state(run.id, states.Completed(), force=True)
    assert runs_that_could_be_orphaned(harness_config) == before


def test_a_crashed_run_counts_only_for_the_lifecycle_deployment(harness_config, client, created):
    from prefect.states import Crashed

    tag = uuid.uuid4().hex[:6]
    lifecycle = f"lifecycle-{tag}/lifecycle-{tag}"
    flow_name, deployment_name = lifecycle.split("/")
    deployment_id = client.create_deployment(
        flow_id=client.create_flow_from_name(flow_name), name=deployment_name
    )
    created.append(("deployment", deployment_id))
    other_id = client.create_deployment(flow_id=client.create_flow_from_name(flow_name), name=f"other-{tag}")
    created.append(("deployment", other_id))

    before = runs_that_could_be_orphaned(harness_config, lifecycle)
    assert before is not None
    _run_in_state(client, created, Crashed(), flow_name, deployment_id=other_id)
    _run_in_state(client, created, Crashed(), "counted-flow")
    assert runs_that_could_be_orphaned(harness_config, lifecycle) == before, "not the lifecycle deployment"
    _run_in_state(client, created, Crashed(), flow_name, deployment_id=deployment_id)
    assert runs_that_could_be_orphaned(harness_config, lifecycle) == before + 1


def test_an_api_that_does_not_answer_with_counts_gives_no_count(harness_config):
    """``status`` then asks Prefect's client, which reports the count as unknown when the API is down."""
    nothing_listens = ModelOpsConfig(prefect={"api_url": f"http://127.0.0.1:{free_port()}/api"})
    assert runs_that_could_be_orphaned(nothing_listens) is None
    not_the_api = ModelOpsConfig(prefect={"api_url": f"{harness_config.prefect_api_url}/no-such-route"})
    assert runs_that_could_be_orphaned(not_the_api) is None
