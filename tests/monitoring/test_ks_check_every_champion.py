"""One scheduled-style ``ks_check(every_champion=True)`` checks every model with a champion.

A real MLflow registry (sqlite) holds four models: three with a ``champion`` alias, one with only a
challenger. PostgreSQL's scoring log holds labelled traffic for each: ``steady`` separates well,
``drifting`` barely. The config gives each its own threshold and window under ``models``. One run
of the flow (a real Prefect test server) must check exactly the three champions, each in its own
subflow run named with model and version and with its own settings, emit ``degraded`` only for the
drifting one, and carry on past ``broken``, whose check fails in the database (a real trigger
refuses its ``ks_checks`` row).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from support.scoring_log import insert_scores, labelled_sample
from support.stack import model_events, wait_for

from modelops.config import ModelOpsConfig

pytestmark = pytest.mark.slow


def _registry(tmp_path: Path, champions: dict[str, int], challengers: tuple[str, ...]) -> str:
    """A sqlite MLflow registry; ``champions``: model → the version the champion alias points to."""
    from modelops.integrations.registry import client_for

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    source = tmp_path / "model"
    source.mkdir()
    for name, version in {**champions, **dict.fromkeys(challengers, 1)}.items():
        client.create_registered_model(name)
        for _ in range(version):
            client.create_model_version(name, str(source))
        alias = "challenger" if name in challengers else "champion"
        client.set_registered_model_alias(name, alias, str(version))
    return uri


def _refuse_checks_of(dsn: str, model: str) -> None:
    """A real database failure for one model only: its ks_checks rows are refused."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION modelops.refuse_check() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'ks_checks of % refused by the test', NEW.model_name; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON modelops.ks_checks FOR EACH ROW "
            f"WHEN (NEW.model_name = '{model}') EXECUTE FUNCTION modelops.refuse_check()"
        )
    connection.close()


def _stored_checks(dsn: str) -> dict[str, tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT model_name, model_version, status, threshold, n FROM modelops.ks_checks")
        rows = cursor.fetchall()
    connection.close()
    return {row[0]: row[1:] for row in rows}


def _runs_of(parent_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )


def test_one_run_checks_every_champion_with_its_own_settings(prefect_harness, scoring_db, tmp_path):
    from flows.ks_check import EVERY_CHAMPION_RUN, ks_check
    from modelops.integrations.prefect_client import prefect_client

    tag = uuid.uuid4().hex[:6]
    steady, drifting, broken, waiting = (
        f"{kind}-{tag}" for kind in ("steady", "drifting", "broken", "waiting")
    )
    uri = _registry(tmp_path, {steady: 2, drifting: 1, broken: 1}, challengers=(waiting,))
    for model, version, separation, rows in (
        (steady, "2", 2.0, 900),
        (drifting, "1", 0.3, 900),
        (broken, "1", 2.0, 300),
    ):
        insert_scores(scoring_db, model, version, *labelled_sample(rows, separation, seed=len(model) + rows))
    insert_scores(scoring_db, waiting, "1", *labelled_sample(300, 0.0, seed=3))
    _refuse_checks_of(scoring_db, broken)
    config = ModelOpsConfig(
        database={"url": scoring_db},
        mlflow={"tracking_uri": uri},
        monitoring={"ks_threshold": 0.3, "min_sample": 200, "window": {"kind": "count", "size": 2000}},
        models={
            steady: {"monitoring": {"ks_threshold": 0.4, "window": {"size": 800}}},
            # KS of barely separated scores is ~0.1: below this model's own threshold, above a low one
            drifting: {"monitoring": {"ks_threshold": 0.35, "min_sample": 100, "window": {"size": 500}}},
        },
    )

    state = ks_check(every_champion=True, config=config, review_timeout_s=0, return_state=True)
    outcome = state.result()

    assert set(outcome["checks"]) == {steady, drifting, broken}, "every champion, nothing else"
    checks = outcome["checks"]
    assert (checks[steady]["status"], checks[steady]["threshold"], checks[steady]["n"]) == ("ok", 0.4, 800)
    assert (checks[drifting]["status"], checks[drifting]["threshold"], checks[drifting]["n"]) == (
        "degraded",
        0.35,
        500,
    )
    assert checks[broken]["status"] == "error" and "refused by the test" in checks[broken]["error"]
    assert outcome["degraded"] == [drifting] and outcome["errors"] == [broken]
    stored = _stored_checks(scoring_db)
    assert stored == {steady: ("2", "ok", 0.4, 800), drifting: ("1", "degraded", 0.35, 500)}

    # each check is its own run, named with model and resolved version, under the one parent run
    with prefect_client(sync_client=True) as client:
        parent = client.read_flow_run(state.state_details.flow_run_id)
    assert parent.name == EVERY_CHAMPION_RUN
    children = {run.name: run for run in _runs_of(parent.id)}
    expected = {
        f"ks-check-{steady}-v2": steady,
        f"ks-check-{drifting}-v1": drifting,
        f"ks-check-{broken}-v1": broken,
    }
    assert set(children) == set(expected)
    for name, model in expected.items():
        assert f"model:{model}" in children[name].tags
    assert children[f"ks-check-{broken}-v1"].state.is_completed(), "a failed check is a result, not a crash"

    def events_arrived():
        found = {m: {e["event"] for e in model_events(m)} for m in (steady, drifting, broken)}
        return found if all(found.values()) else None

    seen = wait_for(events_arrived, 60, "the three models' events")
    assert seen[steady] == {"modelops.performance.ok"}
    assert seen[drifting] == {"modelops.performance.degraded"}
    assert seen[broken] == {"modelops.monitoring.failed"}
    time.sleep(1)  # nothing else may arrive for the model without a champion (absence: a short grace)
    assert model_events(waiting) == []


def test_no_champion_anywhere_checks_nothing(prefect_harness, scoring_db, tmp_path):
    from flows.ks_check import ks_check

    uri = _registry(tmp_path, {}, challengers=(f"lonely-{uuid.uuid4().hex[:6]}",))
    config = ModelOpsConfig(database={"url": scoring_db}, mlflow={"tracking_uri": uri})
    assert ks_check(every_champion=True, config=config, review_timeout_s=0)["checks"] == {}


def test_every_champion_refuses_a_model_or_version(prefect_harness, tmp_path):
    from flows.ks_check import ks_check

    with pytest.raises(ValueError, match="every_champion checks each champion"):
        ks_check(every_champion=True, model_name="m", config=ModelOpsConfig())


def test_a_single_check_is_named_with_the_resolved_champion(prefect_harness, scoring_db, tmp_path):
    from flows.ks_check import ks_check
    from modelops.integrations.prefect_client import prefect_client

    model = f"single-{uuid.uuid4().hex[:6]}"
    uri = _registry(tmp_path, {model: 3}, challengers=())
    insert_scores(scoring_db, model, "3", *labelled_sample(300, 2.0, seed=5))
    config = ModelOpsConfig(
        database={"url": scoring_db}, mlflow={"tracking_uri": uri}, monitoring={"min_sample": 100}
    )
    state = ks_check(model_name=model, config=config, review_timeout_s=0, return_state=True)
    assert state.result()["version"] == "3"
    with prefect_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name == f"ks-check-{model}-v3" and f"model:{model}" in run.tags


def test_cli_every_champion_prints_one_line_per_champion(
    prefect_harness, scoring_db, tmp_path, monkeypatch, capsys
):
    from modelops.cli import main

    first, second = (f"cli-{uuid.uuid4().hex[:6]}" for _ in range(2))
    uri = _registry(tmp_path, {first: 1, second: 2}, challengers=())
    insert_scores(scoring_db, first, "1", *labelled_sample(300, 2.0, seed=7))
    insert_scores(scoring_db, second, "2", *labelled_sample(300, 2.0, seed=8))
    monkeypatch.setenv("MODELOPS_MLFLOW__TRACKING_URI", uri)
    monkeypatch.setenv("MODELOPS_DATABASE_URL", scoring_db)
    monkeypatch.setenv("MODELOPS_MONITORING__MIN_SAMPLE", "100")

    assert main(["ks-check", "--every-champion"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{first} v1: ok") for line in lines), lines
    assert any(line.startswith(f"{second} v2: ok") for line in lines), lines

    assert main(["ks-check", "--every-champion", "--model", first]) == 2
    assert "drop --model" in capsys.readouterr().err
