"""The decorator for the flows' steps."""

from __future__ import annotations

from typing import Any

from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE


def step(**options: Any):
    """A Prefect task that neither caches nor persists: its inputs (configs, models) are not results."""
    return prefect_task(cache_policy=NO_CACHE, persist_result=False, **options)
