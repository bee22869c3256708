"""Whether any flow run on the stack could be orphaned, asked of the Prefect API over plain HTTP.

``modelops status`` counts the runs with no process behind them
(:func:`modelops.stack.reconcile.count_orphans`), which needs Prefect's client: ~1.5 CPU-seconds of
imports, most of what ``status`` costs. The rules of :mod:`modelops.stack.reconcile` can only call a
run orphaned when it is Running, Paused, Pending or Cancelling, or when it is a lifecycle run that
Crashed (its pending approval may be lost). Most of the time a stack has none: two counts from the
API say so in milliseconds, and only a non-zero count sends ``status`` through Prefect's client for
the rules themselves.
"""

from __future__ import annotations

from typing import Any

import httpx

from modelops.config import ModelOpsConfig
from modelops.deployments import LIFECYCLE
from modelops.tls import tls_context

# Prefect's StateType values of reconcile.ACTIVE (tests/stack/test_run_counts.py keeps the two equal)
ACTIVE_STATE_TYPES = ("RUNNING", "PAUSED", "PENDING", "CANCELLING")
_TIMEOUT_S = 5.0


def runs_that_could_be_orphaned(config: ModelOpsConfig, lifecycle: str = LIFECYCLE) -> int | None:
    """Active runs plus Crashed runs of the ``lifecycle`` deployment on the stack's API; None when it does
    not answer with counts (down, an error, or an auth it asks for): the caller then asks Prefect's
    client, which knows."""
    flow_name, deployment_name = lifecycle.split("/")
    active = {"flow_runs": {"state": {"type": {"any_": list(ACTIVE_STATE_TYPES)}}}}
    crashed_lifecycles = {
        "flow_runs": {"state": {"type": {"any_": ["CRASHED"]}}},
        "flows": {"name": {"any_": [flow_name]}},
        "deployments": {"name": {"any_": [deployment_name]}},
    }
    url = f"{config.prefect_api_url.rstrip('/')}/flow_runs/count"
    try:
        with httpx.Client(timeout=_TIMEOUT_S, verify=tls_context()) as client:
            counts = [_count(client, url, query) for query in (active, crashed_lifecycles)]
    except httpx.HTTPError:
        return None
    if any(count is None for count in counts):
        return None
    return sum(counts)  # type: ignore[arg-type]  # None ruled out above


def _count(client: httpx.Client, url: str, query: dict[str, Any]) -> int | None:
    response = client.post(url, json=query)
    if response.status_code != 200:
        return None
    try:
        count = response.json()
    except ValueError:  # not Prefect's API answering
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) else None
