"""The scoring client: replays records against a TF Serving REST API and spools every scored record.

Requests are ``POST {url}/v1/models/{model}:predict`` with ``{"instances": [...]}`` (missing
numbers travel as ``NaN`` tokens, missing categories as ``""``), sent by ``concurrency`` asyncio
workers at ``rate`` records per second (0: as fast as the server answers). Which version answered
comes from an ``X-Model-Version`` response header when the server sets one, otherwise from
``GET {url}/v1/models/{model}`` (the highest AVAILABLE version), read at the start, every few
seconds and after every error.

Every scored record becomes one spool line (see :mod:`modelops.scoring.records`); a failed
request (server down, 4xx/5xx, timeout, malformed answer) is counted, logged and written to
``<spool>/errors/``, never to the scores, and never stops the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelops.scoring.records import encode_record
from modelops.scoring.source import ReplayRecords
from modelops.scoring.spool import ERRORS_DIR, SpoolWriter

log = logging.getLogger(__name__)
VERSION_HEADER = "x-model-version"
_LOGGED_PER_KIND = 5


@dataclass(frozen=True)
class TrafficSettings:
    url: str
    model_name: str
    spool_dir: Path
    decision_threshold: float = 0.5
    rate: float = 0.0  # records per second; 0 = as fast as possible
    concurrency: int = 4
    batch_size: int = 1  # records per request
    timeout_s: float = 10.0
    labels_file: Path | None = None  # set: labels are withheld from the log and written here instead
    version_refresh_s: float = 5.0
    progress_every_s: float = 5.0
    spool_max_age_s: float = 10.0

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate {self.rate} must be >= 0 records/s (0 = as fast as possible)")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError(f"concurrency {self.concurrency} must be between 1 and 1024")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch size {self.batch_size} must be between 1 and 10000 records per request")


@dataclass
class TrafficSummary:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    seconds: float = 0.0
    records_per_s: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    spool_files: list[str] = field(default_factory=list)
    error_files: list[str] = field(default_factory=list)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        p50 = "-" if self.p50_ms is None else f"{self.p50_ms:.2f}"
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.2f}"
        rows = [
            ("sent", str(self.sent)),
            ("ok", str(self.ok)),
            ("errors", f"{self.errors} {self.errors_by_kind or ''}".strip()),
            ("latency p50 / p99 (ms)", f"{p50} / {p99}"),
            ("throughput (records/s)", f"{self.records_per_s:.0f} in {self.seconds:.1f} s"),
            ("model versions", ", ".join(f"{v}: {n}" for v, n in sorted(self.versions.items())) or "-"),
            ("spool files", str(len(self.spool_files))),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class VersionTracker:
    """The model version serving now, from the TF Serving status endpoint."""

    def __init__(self, client: Any, url: str, model_name: str, refresh_s: float) -> None:
        self.client = client
        self.status_url = f"{url}/v1/models/{model_name}"
        self.refresh_s = refresh_s
        self.version: str = "unknown"
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._unreachable = False  # logged once per outage: refresh(force=True) follows every failed request

    async def refresh(self, force: bool = False) -> str:
        if not force and time.monotonic() - self._checked < self.refresh_s:
            return self.version
        async with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_s:
                return self.version
            self._checked = time.monotonic()
            try:
                response = await self.client.get(self.status_url)
                statuses = (
                    response.json().get("model_version_status", []) if response.status_code == 200 else []
                )
                available = [str(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
                if self._unreachable:
                    log.info("status %s answers again", self.status_url)
                    self._unreachable = False
                if available:
                    newest = max(available, key=lambda v: (len(v), v))
                    if newest != self.version:
                        log.info("model version now serving: %s", newest)
                    self.version = newest
                else:
                    log.warning(
                        "status %s: no AVAILABLE version (HTTP %s)", self.status_url, response.status_code
                    )
            except Exception as exc:  # the status call failing must not stop scoring
                if not self._unreachable:
                    log.warning(
                        "status %s unreachable: %s (logged once until it answers)", self.status_url, exc
                    )
                self._unreachable = True
        return self.version


def parse_predictions(payload: Any, expected: int) -> list[float]:
    """Scores from a TF Serving ``predict`` answer (one per instance)."""
    if not isinstance(payload, dict) or "predictions" not in payload:
        raise RequestFailed("bad_response", f"answer has no 'predictions': {str(payload)[:200]}")
    predictions = payload["predictions"]
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise RequestFailed("bad_response", f"expected {expected} predictions, got {str(predictions)[:200]}")
    scores = []
    for item in predictions:
        if isinstance(item, dict):  # several named outputs: take "score" or the only one
            item = item.get("score", next(iter(item.values())) if len(item) == 1 else None)
        while isinstance(item, list) and len(item) == 1:
            item = item[0]
        if isinstance(item, bool) or not isinstance(item, int | float) or item != item:
            raise RequestFailed("bad_response", f"prediction {str(item)[:80]} is not a number")
        scores.append(float(item))
    return scores


async def replay(records: ReplayRecords, settings: TrafficSettings) -> TrafficSummary:
    """Send every record once; spool the scored ones; return the summary."""
    import httpx

    summary = TrafficSummary(source=records.source)
    latencies: list[float] = []
    errors_by_kind: Counter[str] = Counter()  # records
    failed_requests: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    predict_url = f"{settings.url.rstrip('/')}/v1/models/{settings.model_name}:predict"
    batches = [
        range(start, min(start + settings.batch_size, len(records)))
        for start in range(0, len(records), settings.batch_size)
    ]
    next_batch = iter(range(len(batches)))
    labels_out = None
    if settings.labels_file is not None:
        settings.labels_file.parent.mkdir(parents=True, exist_ok=True)
        labels_out = settings.labels_file.open("a", buffering=1)
        if labels_out.tell() == 0:
            labels_out.write("request_id,label\n")
    scores_writer = SpoolWriter(settings.spool_dir, max_age_s=settings.spool_max_age_s)
    errors_writer = SpoolWriter(settings.spool_dir / ERRORS_DIR, prefix="errors-", max_age_s=3600)
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    started = time.monotonic()
    done = asyncio.Event()

    async with httpx.AsyncClient(timeout=settings.timeout_s, limits=limits) as client:
        tracker = VersionTracker(
            client, settings.url.rstrip("/"), settings.model_name, settings.version_refresh_s
        )
        await tracker.refresh(force=True)

        async def send(batch_number: int) -> None:
            indices = batches[batch_number]
            if settings.rate > 0:
                due = started + indices.start / settings.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            instances = [records.instances[i] for i in indices]
            request_ids = [str(uuid.uuid4()) for _ in indices]
            body = json.dumps({"instances": instances}, allow_nan=True)
            summary.sent += len(indices)
            t0 = time.perf_counter()
            try:
                try:
                    response = await client.post(
                        predict_url, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.TimeoutException as exc:
                    raise RequestFailed(
                        "timeout", f"no answer within {settings.timeout_s} s ({exc!r})"
                    ) from None
                except httpx.TransportError as exc:
                    raise RequestFailed("connect", f"{predict_url} unreachable: {exc!r}") from None
                latency_ms = (time.perf_counter() - t0) * 1000
                if response.status_code >= 400:
                    kind = "http_4xx" if response.status_code < 500 else "http_5xx"
                    raise RequestFailed(
                        kind, f"HTTP {response.status_code}: {response.text[:300]}", response.status_code
                    )
                try:
                    payload = response.json()
                except ValueError:
                    raise RequestFailed(
                        "bad_response", f"answer is not JSON: {response.text[:200]}"
                    ) from None
                scores = parse_predictions(payload, len(indices))
            except RequestFailed as failure:
                errors_by_kind[failure.kind] += len(indices)
                failed_requests[failure.kind] += 1
                summary.errors += len(indices)
                if failed_requests[failure.kind] <= _LOGGED_PER_KIND:
                    log.warning("request failed (%s): %s", failure.kind, failure)
                    if failed_requests[failure.kind] == _LOGGED_PER_KIND:
                        log.warning("further %s errors are counted, not logged", failure.kind)
                now = datetime.now(UTC).isoformat()
                errors_writer.write_lines(
                    encode_record(
                        {
                            "request_id": rid,
                            "failed_at": now,
                            "model_name": settings.model_name,
                            "kind": failure.kind,
                            "status": failure.status,
                            "error": str(failure)[:1000],
                            "features": records.instances[i],
                            "period": records.period,
                        }
                    )
                    for rid, i in zip(request_ids, indices, strict=True)
                )
                await tracker.refresh(force=True)
                return
            version = response.headers.get(VERSION_HEADER) or await tracker.refresh()
            versions[version] += len(indices)
            now = datetime.now(UTC).isoformat()
            lines = []
            for rid, i, score in zip(request_ids, indices, scores, strict=True):
                label = records.labels[i]
                if labels_out is not None:
                    if label is not None:
                        labels_out.write(f"{rid},{label}\n")
                    label = None
                lines.append(
                    encode_record(
                        {
                            "request_id": rid,
                            "scored_at": now,
                            "model_name": settings.model_name,
                            "model_version": version,
                            "features": records.instances[i],
                            "score": score,
                            "decision": int(score >= settings.decision_threshold),
                            "latency_ms": round(latency_ms, 3),
                            "label": label,
                            "period": records.period,
                        }
                    )
                )
                latencies.append(latency_ms)
            scores_writer.write_lines(lines)
            summary.ok += len(indices)

        async def worker() -> None:
            for batch_number in next_batch:  # a shared iterator: each batch goes to one worker
                await send(batch_number)

        async def progress() -> None:
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), settings.progress_every_s)
                except TimeoutError:
                    pass
                scores_writer.rotate_if_old()
                if not done.is_set():
                    _log_progress(summary, latencies, len(records), started)

        reporter = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        finally:
            done.set()
            await reporter
            scores_writer.close()
            errors_writer.close()
            if labels_out is not None:
                labels_out.close()

    summary.seconds = time.monotonic() - started
    summary.records_per_s = summary.ok / summary.seconds if summary.seconds else 0.0
    if latencies:
        p50, p99 = np.percentile(np.asarray(latencies), [50, 99])
        summary.p50_ms, summary.p99_ms = round(float(p50), 3), round(float(p99), 3)
    summary.errors_by_kind = dict(errors_by_kind)
    summary.versions = dict(versions)
    summary.spool_files = [str(p) for p in scores_writer.files_finished]
    summary.error_files = [str(p) for p in errors_writer.files_finished]
    return summary


def _log_progress(summary: TrafficSummary, latencies: list[float], total: int, started: float) -> None:
    elapsed = time.monotonic() - started
    recent = latencies[-2000:]
    p50 = f"{float(np.median(recent)):.2f} ms" if recent else "-"
    log.info(
        "traffic: %d/%d sent, %d ok, %d errors, %.0f records/s, p50 %s",
        summary.sent,
        total,
        summary.ok,
        summary.errors,
        summary.ok / elapsed if elapsed else 0.0,
        p50,
    )


def run_traffic(records: ReplayRecords, settings: TrafficSettings) -> TrafficSummary:
    """Synchronous entry point; works inside a running event loop too (runs in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay(records, settings))
    result: list[TrafficSummary] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(replay(records, settings)))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="modelops-traffic")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
