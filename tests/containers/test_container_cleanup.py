"""Container clean-up that races the engine's own ``auto_remove`` (the Docker worker's flow-run containers).

A CI run failed in teardown: ``down`` stopped a flow-run container, the engine began removing it
(``auto_remove``), and a second removal got 409 "removal ... is already in progress". Removing or
stopping such a container must wait for the engine, not fail.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from docker.errors import APIError, NotFound
from support.fakes.docker_env import STANDIN, require_engine

from modelops.integrations.docker_engine import remove_container, stop_container


def _gone(client: Any, container_id: str) -> bool:
    return not client.containers.list(all=True, filters={"id": container_id})


@pytest.mark.docker
def test_stop_then_remove_an_auto_removed_container_on_the_engine():
    """The ``down``-then-teardown sequence, several times: stop (the engine starts removing), remove."""
    client = require_engine()
    for attempt in range(5):
        container = client.containers.run(
            STANDIN,
            entrypoint=["sleep", "300"],
            name=f"cleanup-race-{uuid.uuid4().hex[:8]}",
            auto_remove=True,
            detach=True,
            labels={"org.modelops.test": "container-cleanup"},
        )
        try:
            stop_container(container, grace_s=0)
            remove_container(client, container)
            assert _gone(client, container.id), f"attempt {attempt}: {container.name} is still there"
            # gone already: both are no-ops
            assert stop_container(container, grace_s=0) is False
            remove_container(client, container.id)
        finally:
            try:
                client.api.remove_container(container.id, force=True)
            except (NotFound, APIError):
                pass


class _FakeResponse:
    """Named fake: the 409 needs the engine mid-removal, a window a real engine does not hold open."""

    def __init__(self, status_code: int, reason: str) -> None:
        self.status_code, self.reason, self.url = status_code, reason, "http+docker://fake"

    def json(self) -> dict[str, str]:
        return {"message": self.reason}


class _FakeApi:
    def __init__(self, removal_error: Exception, inspections_until_gone: int) -> None:
        self.removal_error, self.left = removal_error, inspections_until_gone
        self.inspections = 0

    def remove_container(self, reference: str, force: bool) -> None:
        assert force
        raise self.removal_error

    def inspect_container(self, reference: str) -> dict[str, str]:
        self.inspections += 1
        if self.inspections >= self.left:
            raise NotFound("gone", response=_FakeResponse(404, "No such container"))
        return {"Id": reference}


class _FakeClient:
    def __init__(self, api: _FakeApi) -> None:
        self.api = api


def _in_progress() -> APIError:
    message = "removal of container abc is already in progress"
    return APIError(message, response=_FakeResponse(409, "Conflict"), explanation=message)


def test_remove_waits_for_the_engines_removal_in_progress():
    api = _FakeApi(_in_progress(), inspections_until_gone=3)
    remove_container(_FakeClient(api), "abc")
    assert api.inspections == 3


def test_remove_names_a_removal_that_never_ends():
    api = _FakeApi(_in_progress(), inspections_until_gone=10**9)
    with pytest.raises(TimeoutError, match="container abc"):
        remove_container(_FakeClient(api), "abc", wait_s=0.5)


def test_other_conflicts_still_raise():
    other = APIError("conflict", response=_FakeResponse(409, "Conflict"), explanation="container is paused")
    with pytest.raises(APIError, match="paused"):
        remove_container(_FakeClient(_FakeApi(other, inspections_until_gone=1)), "abc")
