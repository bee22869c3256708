"""Run a coroutine to its end from synchronous code, also when the caller already runs an event loop.

The serving-target interface is synchronous (flows and the CLI call ``deploy``), while the
Kubernetes API client is asyncio. From plain code :func:`run_sync` is ``asyncio.run``; inside a
running loop (an async flow) it runs the coroutine on a fresh loop in a helper thread and waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
