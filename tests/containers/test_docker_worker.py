"""The stack's flows on a Docker work pool, on the real engine and registry.

``modelops up --config docker`` in a temporary home on free ports: prefect.docker.yaml's build/push steps
build the flow image (infra/docker/flow.Dockerfile on the python:3.11-slim stand-in; cached after the
first build on a machine) and push it to the private registry, the deployments go to a Docker pool, and
a Docker worker runs each flow run as a container of that image on the host network. Then:

    train (container) -> lifecycle (container; paused, approved through the REST API; the serving
    container deployed from inside it through the engine's socket) -> labelled drifted traffic
    -> a ks-check run (container) -> degraded event -> the automation's retrain run (container)

Each run is Completed on the stack's server, with its logs and artifacts there, and the engine's own
event log shows the container that ran it (labelled with the flow run's id, from the flow image,
exit code 0).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from support import http_client
from support.fakes.docker_env import STANDIN, forget, registry_address, require_engine
from support.network import free_ports
from support.stack import NO_SCHEDULED_CHECK, wait_for
from support.stack_home import run_modelops, stack_env

from modelops.config import PROJECT_ROOT
from modelops.integrations.docker_engine import remove_container

# A cold first build of the flow image installs TensorFlow & co. with pip inside the build (minutes).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

PYTHON_STANDIN = "modelops/python-standin:3.11-slim"
REVIEWER = "docker-pool-reviewer"
ROWS = 600
CLI = [sys.executable, "-c", "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"]


class DockerStack:
    def __init__(self, home: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.home = home
        self.model = f"dock-{suffix}"
        self.pool = f"docker-test-{suffix}"
        registry = registry_address()
        rest = free_ports(2)  # and its successor: the docker target's blue/green slots
        grpc = free_ports(2)
        self.env = stack_env(home, PROJECT_ROOT / "prefect.docker.yaml")
        self.env.update(
            MODELOPS_CONFIG="docker",
            MODELOPS_STACK__WORK_POOL=self.pool,
            MODELOPS_STACK__FLOW_IMAGE=f"{registry}/modelops/flows",
            MODELOPS_MODEL__NAME=self.model,
            MODELOPS_MODEL__EXPERIMENT=self.model,
            MODELOPS_SERVING__PORT=str(rest),
            # gRPC: blue = grpc_port, green = grpc_port - 1 (not TF Serving's fixed 8500 in a test)
            MODELOPS_SERVING__GRPC_PORT=str(grpc + 1),
            MODELOPS_SERVING__REGISTRY=registry,
            MODELOPS_SERVING__IMAGE_STREAM=self.model,
            MODELOPS_SERVING__BASE_IMAGE=STANDIN,
            MODELOPS_TRAINING__EPOCHS="3",
            MODELOPS_TRAINING__TRAIN_ROWS="2000",
            MODELOPS_TRAINING__HIDDEN_UNITS="[8]",
            MODELOPS_MONITORING__MIN_SAMPLE="200",
            MODELOPS_MONITORING__WINDOW=f"{{kind: count, size: {ROWS}}}",
            MODELOPS_MONITORING__KS_THRESHOLD="0.3",
            MODELOPS_MONITORING__RETRAIN_COOLDOWN_S="0",
            MODELOPS_MONITORING__SCHEDULE_CRON=NO_SCHEDULED_CHECK,
        )
        self.api = f"http://127.0.0.1:{self.env['MODELOPS_STACK__PREFECT_PORT']}/api"
        self.mlflow = f"http://127.0.0.1:{self.env['MODELOPS_STACK__MLFLOW_PORT']}"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.env['MODELOPS_STACK__POSTGRES_PORT']}/modelops"
        self.log = home / "commands.log"

    # -- commands --------------------------------------------------------------------------------
    def modelops(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = run_modelops(self.env, *args, timeout=timeout)
        with self.log.open("a") as out:
            out.write(f"$ modelops {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}\n")
        if check:
            assert result.returncode == 0, f"modelops {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        out = (self.home / f"{args[0]}.out").open("a")
        return subprocess.Popen([*CLI, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)

    # -- Prefect's REST API ----------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = http_client.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        response = http_client.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def run_deployment(self, name: str, parameters: dict[str, Any] | None = None) -> str:
        deployment = self.get(f"/deployments/name/{name}")
        return self.post(
            f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters or {}}
        )["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/flow_runs/{run_id}")

    def wait_final(self, run_id: str, timeout: float) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run = self.flow_run(run_id)
            return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        return wait_for(final, timeout, f"flow run {run_id} finished", interval=2)

    def runs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.post("/flow_runs/filter", {"limit": 50, **body})

    def logs(self, run_id: str) -> list[str]:
        logs = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        return [entry["message"] for entry in logs]

    def artifacts(self, key: str) -> list[dict[str, Any]]:
        return self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})

    def events(self, name: str) -> list[dict[str, Any]]:
        body = {"filter": {"resource": {"id": [f"modelops.model.{self.model}"]}, "event": {"name": [name]}}}
        return self.post("/events/filter", body)["events"]

    def paused_approval(self, version: str, timeout: float = 900, other_than: str | None = None) -> str:
        """The id of the approval run of ``version`` once it is paused (waiting for a reviewer) and
        its form is stored (Prefect refuses an answer sent before the form's schema is there)."""

        def form_stored(run: dict[str, Any]) -> bool:
            schema_key = run["state"]["state_details"]["run_input_keyset"]["schema"]
            return http_client.get(
                f"{self.api}/flow_runs/{run['id']}/input/{schema_key}", timeout=30
            ).is_success

        def paused() -> str | None:
            runs = self.runs(
                {
                    "flow_runs": {
                        "tags": {"all_": [f"model:{self.model}"]},
                        "state": {"type": {"any_": ["PAUSED"]}},
                    }
                }
            )
            ids = [run["id"] for run in runs if run["id"] != other_than and form_stored(run)]
            return ids[0] if ids else None

        return wait_for(paused, timeout, f"the approval of {self.model} v{version} paused", interval=2)

    def approve_through_the_api(self, version: str) -> str:
        """Resume the paused approval run with the form's answer, as the UI does (POST .../resume)."""
        run_id = self.paused_approval(version)
        answer = {
            "approved": True,
            "image_tag": f"v{version}",
            "reviewer": REVIEWER,
            "comment": "docker pool",
        }
        body = self.post(f"/flow_runs/{run_id}/resume", {"run_input": answer})
        assert body["status"] == "ACCEPT", body
        return run_id

    # -- MLflow and the scoring log --------------------------------------------------------------
    def alias(self, alias: str) -> str | None:
        response = http_client.get(
            f"{self.mlflow}/api/2.0/mlflow/registered-models/alias",
            params={"name": self.model, "alias": alias},
            timeout=10,
        )
        return response.json()["model_version"]["version"] if response.status_code == 200 else None

    def version_tags(self, version: str) -> dict[str, str]:
        response = http_client.get(
            f"{self.mlflow}/api/2.0/mlflow/model-versions/get",
            params={"name": self.model, "version": version},
            timeout=10,
        )
        response.raise_for_status()
        return {tag["key"]: tag["value"] for tag in response.json()["model_version"].get("tags", [])}

    def logged(self) -> int:
        connection = psycopg2.connect(self.dsn)
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM modelops.scoring_log WHERE model_name = %s AND label IS NOT NULL",
                (self.model,),
            )
            (count,) = cursor.fetchone()
        connection.close()
        return int(count)


def _container_events(client, run_id: str, since: float) -> list[dict[str, Any]]:
    """The engine's own record of the containers it ran for this flow run (by Prefect's label)."""
    stream = client.events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"type": "container", "label": f"io.prefect.flow-run-id={run_id}"},
        decode=True,
    )
    return list(stream)


@pytest.fixture(scope="module")
def docker_stack(tmp_path_factory: pytest.TempPathFactory):
    client = require_engine()
    if not client.images.list(name=PYTHON_STANDIN):
        give_up = pytest.fail if os.environ.get("MODELOPS_REQUIRE_DOCKER") == "1" else pytest.skip
        give_up(f"the stand-in base {PYTHON_STANDIN} is missing: run scripts/docker-engine.sh start")
    stack = DockerStack(tmp_path_factory.mktemp("docker-pool"))
    started = time.time()
    sidecar = None
    result: dict[str, Any] = {"stack": stack, "client": client, "since": started}
    try:
        up = stack.modelops("up", timeout=2700)
        result["up"] = up.stdout
        result["train"] = stack.wait_final(
            stack.run_deployment("train/train", {"model_name": stack.model}), 900
        )
        lifecycle_id = stack.run_deployment(
            "lifecycle/lifecycle", {"model_name": stack.model, "candidate_version": "1"}
        )
        approval_id = stack.approve_through_the_api("1")
        result["approval_id"] = approval_id
        # while it ran: the lifecycle's container was running on the engine
        result["lifecycle_containers_while_paused"] = client.containers.list(
            filters={"label": f"io.prefect.flow-run-id={lifecycle_id}"}, ignore_removed=True
        )
        result["lifecycle"] = stack.wait_final(lifecycle_id, 900)
        url = stack.version_tags("1").get("serving_url")
        result["serving_url"] = url

        # drifted, labelled traffic against the served champion, shipped by the sidecar
        sidecar = stack.spawn("ship")
        traffic = stack.spawn(
            "traffic", "--model", stack.model, "--period", "4", "--drift", "3", "--rows", str(ROWS),
            "--url", str(url), "--retry-for", "60",
        )  # fmt: skip
        assert traffic.wait(timeout=600) == 0, (stack.home / "traffic.out").read_text()
        wait_for(lambda: stack.logged() >= ROWS, 300, "the labelled records shipped")

        result["ks_check"] = stack.wait_final(stack.run_deployment("ks-check/ks-check"), 900)

        def retrain_run() -> dict[str, Any] | None:
            runs = stack.runs({"deployments": {"name": {"any_": ["retrain"]}}})
            return runs[0] if runs else None

        first = wait_for(retrain_run, 300, "the automation launched a retrain run", interval=2)
        result["retrain"] = stack.wait_final(first["id"], 1200)

        # A restart loses nothing on the Docker pool: the retrained version's review waits in its
        # lifecycle container; `down` stops it, `up` reopens the approval in a new lifecycle run.
        waiting = stack.paused_approval("2")
        result["down"] = stack.modelops("down", timeout=300).stdout
        result["running_after_down"] = client.containers.list(
            filters={"label": f"io.prefect.work-pool-name={stack.pool}"}, ignore_removed=True
        )
        result["up_again"] = stack.modelops("up", timeout=1200).stdout
        result["reopened_approval"] = stack.paused_approval("2", other_than=waiting)
        crashed = {"state": {"type": {"any_": ["CRASHED"]}}}
        result["ended_lifecycles"] = stack.runs(
            {"deployments": {"name": {"any_": ["lifecycle"]}}, "flow_runs": crashed}
        )
        yield result
    finally:
        if sidecar is not None:
            sidecar.terminate()
            sidecar.wait(timeout=60)
        stack.modelops("down", timeout=300, check=False)
        # what outlives the worker: flow-run containers still waiting (the retrained version's review)
        for container in client.containers.list(  # ignore_removed: auto_remove may remove one as we list
            all=True, filters={"label": f"io.prefect.work-pool-name={stack.pool}"}, ignore_removed=True
        ):
            remove_container(client, container)  # auto_remove may be removing it already
        from modelops.config import load_config
        from modelops.targets.docker import DockerTarget

        config = load_config("docker", environ=stack.env)
        try:
            DockerTarget(config, client=client).stop(stack.model)
        except Exception:  # noqa: BLE001 - best effort: the serving containers of this test's model
            for container in client.containers.list(
                all=True, filters={"label": f"org.modelops.model.name={stack.model}"}
            ):
                remove_container(client, container)
        for version in ("v1", "v2"):
            forget(client, f"{registry_address()}/{config.serving.project}/{stack.model}:{version}")


def _ran_in_a_container(result: dict[str, Any], run: dict[str, Any]) -> None:
    stack, client = result["stack"], result["client"]
    assert run["work_pool_name"] == stack.pool, run["work_pool_name"]
    base_url, _, container_id = (run["infrastructure_pid"] or "").rpartition(":")
    assert base_url and len(container_id) == 64, run["infrastructure_pid"]  # <engine url>:<container id>

    def exited() -> list[dict[str, Any]] | None:
        # the run reports Completed a moment before its process (and so its container) exits
        events = _container_events(client, run["id"], result["since"])
        return events if "die" in [event["Action"] for event in events] else None

    events = wait_for(exited, 120, f"the engine's 'die' event of run {run['name']}'s container", interval=1)
    assert "start" in [event["Action"] for event in events]
    die = next(event for event in events if event["Action"] == "die")
    assert die["id"] == container_id
    assert die["Actor"]["Attributes"]["exitCode"] == "0"
    image = die["Actor"]["Attributes"]["image"]
    assert image.startswith(f"{registry_address()}/modelops/flows:"), image


def test_up_builds_and_pushes_the_flow_image_and_starts_a_docker_worker(docker_stack):
    stack = docker_stack["stack"]
    assert "the flow image" in docker_stack["up"], docker_stack["up"]
    pool = stack.get(f"/work_pools/{stack.pool}")
    assert pool["type"] == "docker"
    defaults = {
        key: value.get("default")
        for key, value in pool["base_job_template"]["variables"]["properties"].items()
    }
    assert defaults["network_mode"] == "host"
    workers = stack.post(f"/work_pools/{stack.pool}/workers/filter", {})
    assert [w["name"] for w in workers if w["status"] == "ONLINE"] == ["modelops-worker"]
    deployment = stack.get("/deployments/name/ks-check/ks-check")
    image = deployment["job_variables"]["image"]
    assert image.startswith(f"{registry_address()}/modelops/flows:0.1.0-"), image
    # pushed: the registry has the tag
    repository, tag = image.rsplit(":", 1)
    name = repository.split("/", 1)[1]
    assert (
        tag in http_client.get(f"http://{registry_address()}/v2/{name}/tags/list", timeout=10).json()["tags"]
    )


def test_the_train_and_lifecycle_runs_completed_in_containers(docker_stack):
    stack = docker_stack["stack"]
    for key in ("train", "lifecycle"):
        run = docker_stack[key]
        assert run["state"]["type"] == "COMPLETED", (key, run["state"])
        _ran_in_a_container(docker_stack, run)
    assert len(docker_stack["lifecycle_containers_while_paused"]) == 1  # it waited for approval in one
    assert stack.alias("champion") == "1"
    assert docker_stack["serving_url"]  # deployed by the lifecycle, from inside its container
    decisions = stack.artifacts(f"approval-decision-{stack.model}")
    assert decisions and decisions[0]["flow_run_id"] == docker_stack["lifecycle"]["id"]
    assert any("Finished in state Completed" in line for line in stack.logs(docker_stack["lifecycle"]["id"]))


def test_the_ks_check_ran_in_a_container_and_its_degraded_event_launched_the_retrain(docker_stack):
    stack = docker_stack["stack"]
    check = docker_stack["ks_check"]
    assert check["state"]["type"] == "COMPLETED", check["state"]
    _ran_in_a_container(docker_stack, check)
    assert any("Finished in state Completed" in line for line in stack.logs(check["id"]))
    assert stack.artifacts(f"ks-{stack.model}"), "the KS report artifact is on the stack's server"
    degraded = stack.events("modelops.performance.degraded")
    assert degraded, "the degraded event from the container reached the stack's server"
    retrain = docker_stack["retrain"]
    assert retrain["parameters"]["model_name"] == stack.model
    assert retrain["parameters"]["trigger_event_id"] == degraded[0]["id"]
    assert retrain["state"]["type"] == "COMPLETED", retrain["state"]
    _ran_in_a_container(docker_stack, retrain)
    assert stack.alias("challenger") == "2"


def test_down_stops_flow_run_containers_and_up_reopens_the_waiting_approval(docker_stack):
    stopped = [line for line in docker_stack["down"].splitlines() if line.startswith("flow-run container")]
    assert stopped, docker_stack["down"]
    assert docker_stack["running_after_down"] == []
    reopened_count = re.search(r"(\d+) approval\(s\) reopened", docker_stack["up_again"])
    assert reopened_count and int(reopened_count.group(1)) >= 1, docker_stack["up_again"]
    messages = [(run["state"] or {}).get("message") or "" for run in docker_stack["ended_lifecycles"]]
    assert any("reopened in lifecycle run" in message for message in messages), messages
    # the reopened approval is a new paused run, waiting in a new container of the pool
    stack = docker_stack["stack"]
    (reopened,) = stack.runs({"flow_runs": {"id": {"any_": [docker_stack["reopened_approval"]]}}})
    assert reopened["state"]["type"] == "PAUSED"
