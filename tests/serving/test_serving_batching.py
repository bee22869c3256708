"""Dynamic batching merges concurrent requests into one model call and gives each caller its own answer."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from support.network import free_port
from support.serving import ServerProcess, build_model_base, sample_records

pytestmark = pytest.mark.slow
MODEL = "risk"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_model_base(tmp_path_factory.mktemp("batching") / MODEL, {1: -0.3})


async def score_concurrently(url: str, requests: list[list[dict]], connections: int) -> list[list[float]]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(connections)

        async def one(records: list[dict]) -> list[float]:
            async with gate:
                body = json.dumps({"instances": records}).encode()
                answer = await client.post(f"{url}/v1/models/{MODEL}:predict", content=body)
                assert answer.status_code == 200, answer.text
                return answer.json()["predictions"]

        return await asyncio.gather(*(one(r) for r in requests))


def test_concurrent_requests_are_batched_and_answered_individually(base):
    records = sample_records(400, seed=11)
    # requests of 1..4 records so that splitting a merged batch back is exercised
    requests, start = [], 0
    while start < len(records):
        size = 1 + len(requests) % 4
        requests.append(records[start : start + size])
        start += size
    with ServerProcess(base, free_port(), MODEL, "--no-batching") as plain:
        unbatched = asyncio.run(score_concurrently(plain.url, requests, connections=4))
    with ServerProcess(base, free_port(), MODEL, "--batching", "--batch-timeout-ms", "2") as batched_server:
        before = httpx.get(f"{batched_server.url}/-/stats").json()
        batched = asyncio.run(score_concurrently(batched_server.url, requests, connections=32))
        stats = httpx.get(f"{batched_server.url}/-/stats").json()
    assert [len(b) for b in batched] == [len(r) for r in requests]
    for got, want in zip(batched, unbatched, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    calls = stats["batches"] - before["batches"]
    assert stats["rows"] - before["rows"] == len(records)
    assert calls < len(requests) / 2, f"{len(requests)} concurrent requests took {calls} model calls"
