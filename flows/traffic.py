"""The `traffic` flow: replay a data period against the served model and spool the scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.base import flow
from modelops.config import load_config
from modelops.scoring.client import TrafficSettings, run_traffic
from modelops.scoring.endpoint import find_serving_url
from modelops.scoring.source import load_replay_records


@flow(name="traffic", log_prints=True)
def traffic(
    period: int | None = 1,
    rows: int | None = 5000,
    csv: str | None = None,
    schema_file: str | None = None,
    url: str | None = None,
    model_name: str | None = None,
    rate: float = 0.0,
    concurrency: int = 4,
    batch_size: int = 1,
    spool: str | None = None,
    seed: int = 42,
    drift: float = 1.0,
    labels_file: str | None = None,
) -> dict[str, Any]:
    """Score ``rows`` records of ``period`` (or of ``csv``); returns the summary dict."""
    config = load_config()
    records = load_replay_records(
        period=period, csv=csv, schema=schema_file, rows=rows, seed=seed, drift=drift
    )
    model = model_name or config.model.name
    settings = TrafficSettings(
        url=(url or find_serving_url(config, model)[0]).rstrip("/"),
        model_name=model,
        spool_dir=Path(spool) if spool else config.stack_home / "spool",
        decision_threshold=config.model.decision_threshold,
        rate=rate,
        concurrency=concurrency,
        batch_size=batch_size,
        labels_file=Path(labels_file) if labels_file else None,
    )
    summary = run_traffic(records, settings)
    print(summary.table())
    return summary.as_dict()
