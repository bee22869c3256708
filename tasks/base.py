"""The one way a task of the loop is declared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE

F = TypeVar("F", bound=Callable[..., Any])


def task(name: str, **options: Any) -> Callable[[F], F]:
    """A Prefect task that neither caches nor persists its result.

    The loop's tasks pass configs, DataFrames and models in memory: hashing them for a cache or
    writing them to result storage costs more than it saves, and a model is not a result to replay.
    """
    return prefect_task(name=name, cache_policy=NO_CACHE, persist_result=False, **options)  # type: ignore[return-value]
