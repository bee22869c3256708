"""Two models through the whole loop on one stack, side by side, driven with the CLI as a team would.

One embedded stack (real Prefect server, worker, deployments and the retrain automation from the
project's ``prefect.yaml``, real MLflow, real PostgreSQL, the local serving target over real HTTP):

    train alpha and beta at once → a lifecycle each, approved with ``modelops approve`` → both served
    → interleaved traffic (alpha: the training period; beta: a drifted one) shipped by the sidecar
    → one run of the scheduled ks-check deployment checks both champions
    → only beta degrades → the automation retrains beta → its review is approved → beta v2 serves

Alpha's champion and URL never change; beta keeps its URL across its new version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from support import http_client
from support.network import free_port
from support.stack import NO_SCHEDULED_CHECK, WHOLE_LOOP_TIMEOUT, wait_for
from support.stack_home import STARTUP_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.e2e, WHOLE_LOOP_TIMEOUT]

ALPHA, BETA = "alpha-loans", "beta-loans"
REVIEWER = "two-models-reviewer"
ROWS = 1000
CLI = [sys.executable, "-c", "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"]


class Stack:
    """The environment of one stack on free ports, and the commands a user runs against it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = {name: free_port() for name in ("prefect", "mlflow", "postgres", "serving")}
        config = home / "two-models.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "environment": "two-models",
                    "training": {"train_rows": 4000, "epochs": 8},
                    # the test runs the check itself: no scheduled run (every 10 min by default) may
                    # check beta's drifted traffic half-shipped and retrain it early
                    "monitoring": {
                        "min_sample": 200,
                        "window": {"kind": "count", "size": ROWS},
                        "schedule_cron": NO_SCHEDULED_CHECK,
                    },
                    "models": {
                        # alpha never degrades on the period it was trained on; beta's drift must show
                        ALPHA: {"monitoring": {"ks_threshold": 0.05}},
                        BETA: {"monitoring": {"ks_threshold": 0.3, "retrain_cooldown_s": 0}},
                    },
                }
            )
        )
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MODELOPS_", "PREFECT_", "MLFLOW_"))
        }
        self.env.update(
            MODELOPS_CONFIG=str(config),
            MODELOPS_STACK__HOME=str(home),
            MODELOPS_STACK__PREFECT_PORT=str(self.ports["prefect"]),
            MODELOPS_STACK__MLFLOW_PORT=str(self.ports["mlflow"]),
            MODELOPS_STACK__POSTGRES_PORT=str(self.ports["postgres"]),
            MODELOPS_STACK__STARTUP_TIMEOUT_S=STARTUP_TIMEOUT_S,
            MODELOPS_SERVING__PORT=str(self.ports["serving"]),
        )
        self.api = f"http://127.0.0.1:{self.ports['prefect']}/api"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.ports['postgres']}/modelops"
        self.log = home / "commands.log"

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        with self.log.open("a") as out:
            out.write(
                f"$ modelops {' '.join(args)}  -> {result.returncode}\n{result.stdout}{result.stderr}\n"
            )
        if check:
            assert result.returncode == 0, f"modelops {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        out = (self.home / f"{args[0]}-{len(list(self.home.glob('*.out')))}.out").open("w")
        return subprocess.Popen([*CLI, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def approve(self, model: str, version: str) -> None:
        """Answer the model's approval form as soon as its lifecycle has paused for it.

        The wait for the form is a query of Prefect's API, not a `modelops approve` every 2 s: each of
        those is a whole process (~1.7 CPU-s), and the form takes half a minute or more to appear.
        """
        form = f"the approval form of {model} v{version}"
        wait_for(lambda: self.paused_approval(model, version), 600, form)

        def answered() -> bool:
            result = self.run(
                "approve", "--model", model, "--tag", f"v{version}", "--reviewer", REVIEWER, check=False
            )
            return result.returncode == 0

        wait_for(answered, 120, f"approval of {model} v{version} accepted", interval=2)

    def paused_approval(self, model: str, version: str) -> bool:
        response = http_client.post(
            f"{self.api}/flow_runs/filter",
            json={
                "flow_runs": {
                    "name": {"any_": [f"approve-{model}-v{version}"]},
                    "state": {"type": {"any_": ["PAUSED"]}},
                }
            },
            timeout=10,
        )
        response.raise_for_status()
        return bool(response.json())

    def alias(self, model: str, alias: str) -> str | None:
        response = http_client.get(
            f"http://127.0.0.1:{self.ports['mlflow']}/api/2.0/mlflow/registered-models/alias",
            params={"name": model, "alias": alias},
            timeout=10,
        )
        return response.json()["model_version"]["version"] if response.status_code == 200 else None

    def version_tags(self, model: str, version: str) -> dict[str, str]:
        response = http_client.get(
            f"http://127.0.0.1:{self.ports['mlflow']}/api/2.0/mlflow/model-versions/get",
            params={"name": model, "version": version},
            timeout=10,
        )
        response.raise_for_status()
        return {tag["key"]: tag["value"] for tag in response.json()["model_version"].get("tags", [])}

    def serving_urls(self) -> dict[str, str]:
        rows = json.loads(self.run("status", "--json", timeout=120).stdout)
        return {
            row["name"].split(":", 1)[1]: row["url"] for row in rows if row["name"].startswith("serving:")
        }

    def served_version(self, url: str, model: str) -> str | None:
        response = http_client.get(f"{url}/v1/models/{model}", timeout=5)
        states = response.json()["model_version_status"]
        return next((s["version"] for s in states if s["state"] == "AVAILABLE"), None)

    def logged(self, model: str) -> int:
        with psycopg2.connect(self.dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM modelops.scoring_log WHERE model_name = %s", (model,))
            (count,) = cursor.fetchone()
        connection.close()
        return int(count)

    def retrain_runs(self) -> list[dict[str, Any]]:
        response = http_client.post(
            f"{self.api}/flow_runs/filter",
            json={"deployments": {"name": {"any_": ["retrain"]}}, "limit": 50},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def events(self, model: str, name: str) -> list[dict[str, Any]]:
        response = http_client.post(
            f"{self.api}/events/filter",
            json={"filter": {"resource": {"id": [f"modelops.model.{model}"]}, "event": {"name": [name]}}},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["events"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    stack = Stack(tmp_path_factory.mktemp("two-models"))
    sidecar = None
    try:
        stack.run("up", timeout=900)
        # Both models at once, as two data scientists would: the trainings, then the lifecycles.
        training = {model: stack.spawn("train", "--model-name", model) for model in (ALPHA, BETA)}
        codes = {model: process.wait(timeout=900) for model, process in training.items()}
        assert codes == {ALPHA: 0, BETA: 0}, [
            out.read_text()[-3000:] for out in stack.home.glob("train-*.out")
        ]
        for model in (ALPHA, BETA):
            stack.run("lifecycle", "--model", model, "--version", "1")
        for model in (ALPHA, BETA):
            stack.approve(model, "1")
        for model in (ALPHA, BETA):
            wait_for(lambda m=model: stack.alias(m, "champion") == "1", 600, f"{model} v1 champion")
        urls_before = stack.serving_urls()

        sidecar = stack.spawn("ship")
        replay = ("--rows", str(ROWS), "--retry-for", "30")
        traffic = [
            stack.spawn("traffic", "--model", ALPHA, "--period", "1", *replay),
            stack.spawn("traffic", "--model", BETA, "--period", "4", "--drift", "3", *replay),
        ]
        assert [process.wait(timeout=600) for process in traffic] == [0, 0]
        for model in (ALPHA, BETA):
            wait_for(lambda m=model: stack.logged(m) >= ROWS, 300, f"{model}'s records shipped")

        subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "deployment", "run", "ks-check/ks-check"],
            env={**stack.env, "PREFECT_API_URL": stack.api},
            capture_output=True,
            check=True,
            timeout=120,
        )
        wait_for(lambda: stack.alias(BETA, "challenger") == "2", 900, "beta retrained as v2 (challenger)")
        stack.approve(BETA, "2")
        wait_for(lambda: stack.alias(BETA, "champion") == "2", 600, "beta v2 champion")
        yield {"stack": stack, "urls_before": urls_before, "urls_after": stack.serving_urls()}
    finally:
        if sidecar is not None:
            sidecar.terminate()
            sidecar.wait(timeout=60)
        stack.run("down", timeout=300, check=False)


def test_each_model_is_served_at_its_own_url_recorded_on_its_version(loop):
    stack, urls = loop["stack"], loop["urls_before"]
    assert set(urls) == {ALPHA, BETA} and urls[ALPHA] != urls[BETA]
    for model in (ALPHA, BETA):
        assert stack.version_tags(model, "1").get("serving_url") == urls[model]
    other = {ALPHA: BETA, BETA: ALPHA}
    for model, url in urls.items():  # each URL serves its model only: the other's name is unknown there
        assert http_client.get(f"{url}/v1/models/{other[model]}", timeout=5).status_code == 404


def test_only_the_drifting_model_degraded(loop):
    stack = loop["stack"]
    assert stack.events(ALPHA, "modelops.performance.ok")
    assert not stack.events(ALPHA, "modelops.performance.degraded")
    assert stack.events(BETA, "modelops.performance.degraded")


def test_only_the_drifting_model_was_retrained(loop):
    stack = loop["stack"]
    runs = stack.retrain_runs()
    assert {run["parameters"]["model_name"] for run in runs} == {BETA}
    worked = [run for run in runs if run["state"]["type"] == "COMPLETED" and run["name"].endswith("-v2")]
    assert len(worked) == 1, [(run["name"], run["state"]["type"]) for run in runs]
    assert stack.alias(ALPHA, "challenger") in (None, "1")  # no new alpha version


def test_the_other_models_champion_and_url_never_changed(loop):
    stack = loop["stack"]
    before, after = loop["urls_before"], loop["urls_after"]
    assert stack.alias(ALPHA, "champion") == "1"
    assert after[ALPHA] == before[ALPHA]
    assert stack.served_version(after[ALPHA], ALPHA) == "1"


def test_the_retrained_model_serves_its_new_version_on_the_same_url(loop):
    stack = loop["stack"]
    before, after = loop["urls_before"], loop["urls_after"]
    assert after[BETA] == before[BETA]
    assert stack.served_version(after[BETA], BETA) == "2"
    assert stack.version_tags(BETA, "2").get("serving_url") == after[BETA]
