"""The whole loop, driven like a user: `modelops demo --auto-approve` on a fresh embedded stack.

Real Prefect server + worker + deployments + automation, real MLflow, real PostgreSQL (embedded),
the local serving target over real HTTP; approvals go through Prefect's REST resume endpoint as
the UI's form does. The test then checks the outcome through each system's own API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg2
import pytest
from support import http_client
from support.network import free_port
from support.stack import WHOLE_LOOP_TIMEOUT, wait_for
from support.stack_home import STARTUP_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.e2e, WHOLE_LOOP_TIMEOUT]

REVIEWER = "e2e-reviewer"
MODEL = "hmeq-risk"
LOOP_EVENTS = [
    ("modelops.champion.approved", "1"),
    ("modelops.model.deployed", "1"),
    ("modelops.performance.ok", "1"),
    ("modelops.performance.degraded", "1"),
    ("modelops.model.retrained", "2"),
    ("modelops.champion.approved", "2"),
    ("modelops.model.deployed", "2"),
    ("modelops.performance.ok", "2"),
]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("e2e-home")
    serving_port = free_port()
    ports = {
        "MODELOPS_STACK__PREFECT_PORT": free_port(),
        "MODELOPS_STACK__MLFLOW_PORT": free_port(),
        "MODELOPS_STACK__POSTGRES_PORT": free_port(),
        "MODELOPS_SERVING__PORT": serving_port,
    }
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODELOPS_", "PREFECT_", "MLFLOW_"))
    }
    env.update({key: str(value) for key, value in ports.items()})
    env["MODELOPS_STACK__HOME"] = str(home)
    env["MODELOPS_STACK__STARTUP_TIMEOUT_S"] = STARTUP_TIMEOUT_S
    result_file = home / "result.json"
    command = [
        sys.executable,
        "-c",
        "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    log = home / "demo.log"
    try:
        with log.open("w") as out:
            completed = subprocess.run(
                [*command, "demo", "--auto-approve", REVIEWER, "--result-json", str(result_file)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1500,
            )
        output = log.read_text()
        assert completed.returncode == 0, f"demo failed:\n{output[-6000:]}"
        yield {
            "result": json.loads(result_file.read_text()),
            "output": output,
            "home": home,
            "prefect": f"http://127.0.0.1:{ports['MODELOPS_STACK__PREFECT_PORT']}/api",
            "mlflow": f"http://127.0.0.1:{ports['MODELOPS_STACK__MLFLOW_PORT']}",
            "dsn": f"postgresql://postgres@127.0.0.1:{ports['MODELOPS_STACK__POSTGRES_PORT']}/modelops",
        }
    finally:
        subprocess.run([*command, "down"], env=env, timeout=180, capture_output=True)


def _query(dsn: str, sql: str, *params):
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def test_registry_has_two_versions_and_champion_is_the_retrained_one(loop):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=loop["mlflow"])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    assert versions == [1, 2]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "2"
    assert champion.tags["approved_by"] == REVIEWER
    assert champion.tags["target"] == "local"
    assert champion.tags["trigger"] == "modelops.performance.degraded"
    assert float(champion.tags["recent_holdout_candidate_ks"]) > float(
        champion.tags["recent_holdout_champion_ks"]
    )


def test_both_approvals_are_audited(loop):
    rows = _query(
        loop["dsn"], "SELECT model_version, approved, reviewer, image_tag FROM modelops.approvals ORDER BY id"
    )
    assert rows == [("1", True, REVIEWER, "v1"), ("2", True, REVIEWER, "v2")]


def test_every_scored_record_is_logged_once(loop):
    ((logged, distinct),) = _query(
        loop["dsn"], "SELECT count(*), count(DISTINCT request_id) FROM modelops.scoring_log"
    )
    assert logged == distinct == loop["result"]["sent"]
    assert loop["result"]["sent"] >= 4 * 2000 - 20  # three periods on v1, one recovery replay on v2


def test_ks_falls_below_then_recovers_above_the_threshold(loop):
    checks = _query(
        loop["dsn"],
        "SELECT model_version, status, ks, threshold FROM modelops.ks_checks ORDER BY checked_at, id",
    )
    v1 = [c for c in checks if c[0] == "1"]
    v2 = [c for c in checks if c[0] == "2"]
    assert any(status == "ok" for _, status, _, _ in v1)
    assert any(status == "degraded" and ks < threshold for _, status, ks, threshold in v1)
    assert v2 and v2[-1][1] == "ok" and v2[-1][2] >= v2[-1][3]


def test_exactly_one_retrain_did_the_work(loop):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=loop["mlflow"])
    retrained = [v for v in client.search_model_versions(f"name='{MODEL}'") if v.tags.get("trigger")]
    assert len(retrained) == 1
    runs = http_client.post(
        f"{loop['prefect']}/flow_runs/filter", json={"deployments": {"name": {"any_": ["retrain"]}}}
    ).json()
    trained = [r for r in runs if r["state_type"] == "COMPLETED" and not _skipped(loop, r["id"])]
    assert len(trained) == 1


def _skipped(loop, run_id: str) -> bool:
    logs = http_client.post(
        f"{loop['prefect']}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    return any("skipped" in entry["message"] for entry in logs)


def _model_events(prefect_api: str) -> list[tuple[str, str | None]]:
    page = http_client.post(
        f"{prefect_api}/events/filter", json={"filter": {"event": {"prefix": ["modelops."]}}, "limit": 50}
    ).json()
    events = list(page["events"])
    while page.get("next_page"):
        page = http_client.get(page["next_page"]).json()
        events += page["events"]
    events.sort(key=lambda e: e["occurred"])
    return [(e["event"], e["payload"].get("version")) for e in events]


def test_events_happen_in_the_order_of_the_loop(loop):
    # The demo ends when the last check's row is in PostgreSQL; its event reaches the server's event
    # store a moment later (emitted after the row, delivered asynchronously): wait for it, then compare.
    events = wait_for(
        lambda: (found := _model_events(loop["prefect"])) and LOOP_EVENTS[-1] in found and found,
        60,
        "the last check's event stored",
    )
    assert ("modelops.model.registered", "1") in events
    position = 0
    for expected in LOOP_EVENTS:
        assert expected in events[position:], f"{expected} missing after position {position} in {events}"
        position = events.index(expected, position) + 1


def test_the_demo_prints_a_timeline_with_links(loop):
    assert "Timeline" in loop["output"]
    assert "Registry aliases: champion -> v2" in loop["output"]
    assert loop["prefect"].removesuffix("/api") in loop["output"]


def test_the_demo_prints_where_the_time_went(loop):
    output = loop["output"]
    assert "Where the time went" in output
    table = output[output.index("Where the time went") :]
    for step in loop["result"]["steps"]:
        assert step["name"] in table
    timing = loop["result"]["timing"]
    top = [row for row in timing["rows"] if row["level"] == 0]
    assert [row["name"] for row in top][1:-1] == [step["name"] for step in loop["result"]["steps"]]
    assert sum(row["seconds"] for row in top) == pytest.approx(timing["total_s"], abs=0.01)
    assert json.loads((loop["home"] / "demo-timing.json").read_text()) == timing


def test_ks_check_is_scheduled_from_the_config(loop):
    deployment = http_client.get(f"{loop['prefect']}/deployments/name/ks-check/ks-check").json()
    crons = [s["schedule"].get("cron") for s in deployment["schedules"] if s["active"]]
    assert "*/10 * * * *" in crons  # monitoring.schedule_cron of infra/config/local.yaml
    assert deployment["work_pool_name"] == "modelops-local"


def test_after_each_period_the_demo_asks_the_ks_check_deployment_for_a_run(loop):
    """One completed ks-check run per period check: asked for (the cron stays as it is), or the
    scheduled run when the cron's run falls due at that moment (LoopDriver.check_now); every run the demo
    asked for is one of its checks."""
    runs = http_client.post(
        f"{loop['prefect']}/flow_runs/filter",
        json={
            "deployments": {"name": {"any_": ["ks-check"]}},
            "flow_runs": {"parent_task_run_id": {"is_null_": True}},
        },
    ).json()
    by_id = {r["id"]: r for r in runs}
    checks = loop["result"]["checks"]
    used = [c["run_id"] for c in checks]
    assert len(set(used)) == len(used) >= 2, used
    assert {by_id[run_id]["state_type"] for run_id in used} == {"COMPLETED"}
    asked = {r["id"] for r in runs if not r["auto_scheduled"]}
    assert asked == {run_id for run_id in used if not by_id[run_id]["auto_scheduled"]}
    assert len(asked) >= 1


def test_the_automation_templated_the_retrain_parameters_from_the_event(loop):
    runs = http_client.post(
        f"{loop['prefect']}/flow_runs/filter", json={"deployments": {"name": {"any_": ["retrain"]}}}
    ).json()
    assert runs, "the automation started no retrain run"
    first = min(runs, key=lambda r: r["expected_start_time"])
    parameters = first["parameters"]
    assert parameters["model_name"] == MODEL
    assert isinstance(parameters["ks"], float) and parameters["ks"] < 0.3
    assert parameters["triggered_version"] == "1"
    assert len(parameters["trigger_event_id"]) == 36  # the degraded event's id
