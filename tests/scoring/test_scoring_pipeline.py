"""End to end: real `modelops serve` process -> scoring client -> spool -> sidecar -> PostgreSQL -> labels."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from modelops.config import WindowSettings
from modelops.data.generator import generate_period
from modelops.integrations.scoring_log import count_records, fetch_labelled_scores

MODELOPS = str(Path(sys.executable).parent / "modelops")
MODEL = "hmeq-risk"


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([MODELOPS, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"modelops {args[0]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_replay_ship_and_late_labels_against_the_real_server(tmp_path, port, postgres_url, prefect_harness):
    from support.serving import ServerProcess, build_model_base, expected_score

    from flows.traffic import traffic

    base = build_model_base(tmp_path / "models", {1: -1.4, 3: -0.9})
    spool = tmp_path / "spool"
    labels_csv = tmp_path / "labels.csv"
    with ServerProcess(base, port, MODEL) as server:
        # the CLI, labels withheld for later
        result = cli("traffic", "--period", "2", "--rows", "300", "--url", server.url, "--model", MODEL,
                     "--spool", str(spool), "--batch-size", "8", "--concurrency", "3",
                     "--labels-later", str(labels_csv), "--json")  # fmt: skip
        summary = json.loads(result.stdout)
        assert (summary["sent"], summary["ok"], summary["errors"]) == (300, 300, 0)
        assert summary["versions"] == {"3": 300}, "the highest version folder is the one serving"
        # the Prefect flow, labels inline
        flow_summary = traffic(period=1, rows=100, url=server.url, model_name=MODEL, spool=str(spool))
        assert (flow_summary["ok"], flow_summary["errors"]) == (100, 0)

    lines = [json.loads(line) for path in sorted(spool.glob("scores-*.jsonl")) for line in path.open()]
    assert len(lines) == 400
    for line in lines[:50]:
        assert math.isclose(line["score"], expected_score(line["features"], bias=-0.9), rel_tol=1e-4)

    cli("ship", "--once", "--spool", str(spool), "--database-url", postgres_url)
    assert count_records(postgres_url, MODEL, "3") == 400
    assert count_records(postgres_url, MODEL, labelled_only=True) == 100

    result = cli("labels", "--csv", str(labels_csv), "--database-url", postgres_url)
    assert "loaded 300 labels" in result.stdout
    scores, labels, start, end = fetch_labelled_scores(postgres_url, MODEL, "3", WindowSettings(size=10_000))
    assert len(scores) == 400 and start <= end
    expected_events = int(
        generate_period(2, rows=300)["BAD"].sum() + generate_period(1, rows=100)["BAD"].sum()
    )
    assert int(labels.sum()) == expected_events
