"""The scoring client: replays records against a TF Serving REST API and spools every scored record.

With ``protocol="grpc"`` the same replay goes through TF Serving's gRPC API instead
(:mod:`modelops.serving.grpc_client`: PredictionService/Predict with TensorProtos, the version from
the response's ``model_spec``, ModelService/GetModelStatus for the tracker), with the same error
kinds, spool lines and summary.

Requests are ``POST {url}/v1/models/{model}:predict`` with ``{"instances": [...]}`` (missing
numbers travel as ``NaN`` tokens, missing categories as ``""``), sent by ``concurrency`` asyncio
workers at ``rate`` records per second (0: as fast as the server answers). Which version answered
comes from an ``X-Model-Version`` response header when the server sets one, otherwise from
``GET {url}/v1/models/{model}`` (the highest AVAILABLE version), read at the start, every few
seconds and after every error.

Requests and replies go through the one REST client, :mod:`modelops.serving.rest_client`, so a
failed request has the same ``kind`` there and here (``connect``, ``timeout``, ``http_4xx``,
``http_5xx``, ``bad_response``: not JSON, no ``predictions``, a wrong count, a ``null``/NaN or
non-numeric score). Every scored record becomes one spool line (see
:mod:`modelops.scoring.records`); a failed request is counted by kind, logged (the first few of
each kind) and written to ``<spool>/errors/``, never to the scores, and never stops the run.

With ``retry_window_s`` > 0 (``modelops traffic`` sets 15 s) a request that finds no server
(``connect``: refused, reset, dropped while in flight) is sent again until the server answers or
the outage has lasted the window, so a server restarted by the stack's supervisor loses no record.
Scoring is idempotent and the request ids are the client's, so a resend never duplicates a line.
The window is per outage, shared by all workers: once it has passed, requests fail at once (and
are spooled as errors) until the server answers again.

The pieces: :class:`VersionTracker` (which version serves), :class:`ReplaySpool` (what is
written), :class:`ReplayStats` (what is counted) and ``_Replay`` (workers, pacing, progress).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from modelops.scoring.records import encode_record
from modelops.scoring.source import ReplayRecords
from modelops.scoring.spool import ERRORS_DIR, SpoolWriter
from modelops.serving.rest_client import (
    AsyncHttpTransport,
    AsyncServingClient,
    Prediction,
    ServingClientError,
    model_path,
    served_version,
)
from modelops.serving.tensorflow_import import import_tensorflow

log = logging.getLogger(__name__)
_LOGGED_PER_KIND = 5
PROTOCOLS = ("rest", "grpc")


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
    retry_window_s: float = 0.0  # resend on `connect` failures for this long per outage (0: never)
    protocol: str = "rest"  # "rest": url is http://host:port; "grpc": url is grpc://host:port

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if self.rate < 0:
            raise ValueError(f"rate {self.rate} must be >= 0 records/s (0 = as fast as possible)")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError(f"concurrency {self.concurrency} must be between 1 and 1024")
        if self.retry_window_s < 0:
            raise ValueError(f"retry window {self.retry_window_s} must be >= 0 seconds (0 = no retries)")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch size {self.batch_size} must be between 1 and 10000 records per request")


@dataclass
class TrafficSummary:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    retries: int = 0  # requests sent again after a `connect` failure
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
            ("retries (server unreachable)", str(self.retries)),
            ("latency p50 / p99 (ms)", f"{p50} / {p99}"),
            ("throughput (records/s)", f"{self.records_per_s:.0f} in {self.seconds:.1f} s"),
            ("model versions", ", ".join(f"{v}: {n}" for v, n in sorted(self.versions.items())) or "-"),
            ("spool files", str(len(self.spool_files))),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class VersionTracker:
    """The model version serving now, from the TF Serving status endpoint."""

    def __init__(self, serving: AsyncServingClient, model_name: str, refresh_s: float) -> None:
        self.serving = serving
        self.model_name = model_name
        self.where = f"{serving.transport.base}{model_path(model_name)}"
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
                statuses = await self.serving.status(self.model_name)
            except ServingClientError as exc:  # the status call failing must not stop scoring
                if not self._unreachable:
                    log.warning("status %s unusable: %s (logged once until it answers)", self.where, exc)
                self._unreachable = True
                return self.version
            if self._unreachable:
                log.info("status %s answers again", self.where)
                self._unreachable = False
            self._adopt(served_version(statuses))
        return self.version

    def _adopt(self, newest: str | None) -> None:
        if newest is None:
            log.warning("status %s: no AVAILABLE version", self.where)
            return
        if newest != self.version:
            log.info("model version now serving: %s", newest)
        self.version = newest


class ReplayStats:
    """Counts, latencies and versions of one replay (statistics only: no I/O)."""

    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.errors = 0
        self.errors_by_kind: Counter[str] = Counter()  # records
        self.failed_requests: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.retries = 0

    def scored(self, count: int, version: str, latency_ms: float) -> None:
        self.ok += count
        self.versions[version] += count
        self.latencies.extend([latency_ms] * count)

    def failed(self, count: int, kind: str) -> int:
        """Count a failed request of ``count`` records; returns how many requests of ``kind`` failed."""
        self.errors += count
        self.errors_by_kind[kind] += count
        self.failed_requests[kind] += 1
        return self.failed_requests[kind]

    def progress(self, total: int, elapsed: float) -> str:
        recent = self.latencies[-2000:]
        p50 = f"{float(np.median(recent)):.2f} ms" if recent else "-"
        rate = self.ok / elapsed if elapsed else 0.0
        return (
            f"traffic: {self.sent}/{total} sent, {self.ok} ok, {self.errors} errors, "
            f"{rate:.0f} records/s, p50 {p50}"
        )

    def summary(self, source: str, seconds: float, spool: ReplaySpool) -> TrafficSummary:
        summary = TrafficSummary(
            sent=self.sent,
            ok=self.ok,
            errors=self.errors,
            errors_by_kind=dict(self.errors_by_kind),
            retries=self.retries,
            seconds=seconds,
            records_per_s=self.ok / seconds if seconds else 0.0,
            versions=dict(self.versions),
            spool_files=[str(p) for p in spool.scores.files_finished],
            error_files=[str(p) for p in spool.errors.files_finished],
            source=source,
        )
        if self.latencies:
            p50, p99 = np.percentile(np.asarray(self.latencies), [50, 99])
            summary.p50_ms, summary.p99_ms = round(float(p50), 3), round(float(p99), 3)
        return summary


class ReplaySpool:
    """Where a replay writes: scored records, failed ones (``errors/``), and withheld labels."""

    def __init__(self, settings: TrafficSettings, records: ReplayRecords) -> None:
        self.settings = settings
        self.records = records
        self.scores = SpoolWriter(settings.spool_dir, max_age_s=settings.spool_max_age_s)
        self.errors = SpoolWriter(settings.spool_dir / ERRORS_DIR, prefix="errors-", max_age_s=3600)
        self.labels: TextIO | None = None
        if settings.labels_file is not None:
            settings.labels_file.parent.mkdir(parents=True, exist_ok=True)
            self.labels = settings.labels_file.open("a", buffering=1)
            if self.labels.tell() == 0:
                self.labels.write("request_id,label\n")

    def scored(
        self, request_ids: list[str], indices: range, scores: list[float], version: str, latency_ms: float
    ) -> None:
        now = datetime.now(UTC).isoformat()
        lines = []
        for rid, i, score in zip(request_ids, indices, scores, strict=True):
            lines.append(
                encode_record(
                    {
                        "request_id": rid,
                        "scored_at": now,
                        "model_name": self.settings.model_name,
                        "model_version": version,
                        "features": self.records.instances[i],
                        "score": score,
                        "decision": int(score >= self.settings.decision_threshold),
                        "latency_ms": round(latency_ms, 3),
                        "label": self._logged_label(rid, i),
                        "period": self.records.period,
                    }
                )
            )
        self.scores.write_lines(lines)

    def _logged_label(self, request_id: str, index: int) -> int | None:
        """The label for the log, or ``None`` when labels are withheld (then written to the labels file)."""
        label = self.records.labels[index]
        if self.labels is None:
            return label
        if label is not None:
            self.labels.write(f"{request_id},{label}\n")
        return None

    def failed(self, request_ids: list[str], indices: range, failure: ServingClientError) -> None:
        now = datetime.now(UTC).isoformat()
        self.errors.write_lines(
            encode_record(
                {
                    "request_id": rid,
                    "failed_at": now,
                    "model_name": self.settings.model_name,
                    "kind": failure.kind,
                    "status": failure.status,
                    "error": str(failure)[:1000],
                    "features": self.records.instances[i],
                    "period": self.records.period,
                }
            )
            for rid, i in zip(request_ids, indices, strict=True)
        )

    def rotate_if_old(self) -> None:
        self.scores.rotate_if_old()

    def close(self) -> None:
        self.scores.close()
        self.errors.close()
        if self.labels is not None:
            self.labels.close()


def batches_of(count: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


class Outage:
    """How long the server has been unreachable, shared by the workers: decides whether to resend."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.since: float | None = None

    def may_retry(self, failure: ServingClientError) -> bool:
        if failure.kind != "connect" or self.window_s <= 0:
            return False
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning("server unreachable (%s); resending for up to %.0f s", failure, self.window_s)
        return now - self.since < self.window_s

    def over(self) -> None:
        if self.since is not None:
            log.info("server answers again after %.1f s", time.monotonic() - self.since)
            self.since = None


def _log_failure(failure: ServingClientError, failed_so_far: int) -> None:
    if failed_so_far <= _LOGGED_PER_KIND:
        log.warning("request failed (%s): %s", failure.kind, failure)
        if failed_so_far == _LOGGED_PER_KIND:
            log.warning("further %s errors are counted, not logged", failure.kind)


class _Replay:
    """One replay: workers take batches, score them through the REST client, spool and count."""

    def __init__(
        self,
        records: ReplayRecords,
        settings: TrafficSettings,
        serving: AsyncServingClient,
        spool: ReplaySpool,
        stats: ReplayStats,
    ) -> None:
        self.records = records
        self.settings = settings
        self.serving = serving
        self.spool = spool
        self.stats = stats
        self.tracker = VersionTracker(serving, settings.model_name, settings.version_refresh_s)
        self.outage = Outage(settings.retry_window_s)
        self.started = time.monotonic()

    async def run(self) -> None:
        await self.tracker.refresh(force=True)
        pending = iter(batches_of(len(self.records), self.settings.batch_size))  # shared by the workers
        done = asyncio.Event()
        reporter = asyncio.create_task(self._report_progress(done))
        try:
            await asyncio.gather(*(self._work(pending) for _ in range(self.settings.concurrency)))
        finally:
            done.set()
            await reporter

    async def _work(self, pending: Iterator[range]) -> None:
        for indices in pending:  # a shared iterator: each batch goes to one worker
            await self._pace(indices.start)
            await self._send(indices)

    async def _pace(self, first_record: int) -> None:
        if self.settings.rate > 0:
            delay = self.started + first_record / self.settings.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _send(self, indices: range) -> None:
        instances = [self.records.instances[i] for i in indices]
        request_ids = [str(uuid.uuid4()) for _ in indices]
        self.stats.sent += len(indices)
        try:
            prediction, latency_ms = await self._predict(instances)
        except ServingClientError as failure:
            _log_failure(failure, self.stats.failed(len(indices), failure.kind))
            self.spool.failed(request_ids, indices, failure)
            await self.tracker.refresh(force=True)
            return
        version = prediction.model_version or await self.tracker.refresh()
        self.spool.scored(request_ids, indices, prediction.scores, version, latency_ms)
        self.stats.scored(len(indices), version, latency_ms)

    async def _predict(self, instances: list[dict[str, Any]]) -> tuple[Prediction, float]:
        """The prediction and the latency of the attempt that got it; resends while the outage allows."""
        delay = 0.1
        while True:
            t0 = time.perf_counter()
            try:
                prediction = await self.serving.predict_instances(self.settings.model_name, instances)
            except ServingClientError as failure:
                if not self.outage.may_retry(failure):
                    raise
                self.stats.retries += 1
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            self.outage.over()
            return prediction, (time.perf_counter() - t0) * 1000

    async def _report_progress(self, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), self.settings.progress_every_s)
            except TimeoutError:
                pass
            self.spool.rotate_if_old()
            if not done.is_set():
                log.info(self.stats.progress(len(self.records), time.monotonic() - self.started))


async def replay(records: ReplayRecords, settings: TrafficSettings) -> TrafficSummary:
    """Send every record once; spool the scored ones; return the summary."""
    stats = ReplayStats()
    spool = ReplaySpool(settings, records)
    started = time.monotonic()
    try:
        async with _client(settings) as serving:
            await _Replay(records, settings, serving, spool, stats).run()
    finally:
        spool.close()
    return stats.summary(records.source, time.monotonic() - started, spool)


def _client(settings: TrafficSettings) -> Any:
    """The REST client, or the gRPC one (one HTTP/2 channel multiplexing every worker's calls)."""
    if settings.protocol == "grpc":
        # lazy: TF Serving's protos import TensorFlow's, which a REST replay never needs (and without
        # TensorFlow's eager Keras import, which no client needs)
        import_tensorflow()
        from modelops.serving.grpc_client import AsyncGrpcServingClient

        return AsyncGrpcServingClient(settings.url, timeout=settings.timeout_s)
    transport = AsyncHttpTransport(settings.url, timeout=settings.timeout_s, connections=settings.concurrency)
    return AsyncServingClient(transport)


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
