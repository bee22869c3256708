"""Prometheus metrics of one serving process, exposed at TF Serving's ``/monitoring/prometheus/metrics``.

The names are this project's own (``modelops_serving_*``), not TF Serving's ``:tensorflow:serving:*``;
every label value comes from a fixed set (the served model, its loaded versions, the API, the HTTP
status, the gRPC method and status code), so a client cannot grow the series. gRPC calls are counted
in the same request/error/latency families (api ``predict``/``metadata``/``status``, the status TF
Serving's REST gateway maps their gRPC code to) and, by gRPC code, in
``modelops_serving_grpc_requests``. The labelled children are looked up once and cached: a request
costs a dict lookup, one counter increment and one histogram observation.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelops.serving.repository import ModelRepository, SignatureRunner

METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
APIS = ("predict", "status", "metadata", "other")
# From well under a millisecond (a batched small model) to the request timeouts clients use.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServingMetrics:
    """The counters and histograms of one app, in their own registry (never the process-global one)."""

    def __init__(self, repository: ModelRepository) -> None:
        self.model_name = repository.model_name
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_name", "version", "api")
        self.requests = Counter(
            "modelops_serving_requests",
            "Requests answered, by model, version, API and HTTP status.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.errors = Counter(
            "modelops_serving_request_errors",
            "Requests answered with an error: kind client (4xx) or server (5xx).",
            (*labels, "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelops_serving_request_latency_seconds",
            "Time from the request's routing to its response, by model, version and API.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelops_serving_batch_size",
            "Rows per signature call (after server-side batching), by model and version.",
            ("model_name", "version", "signature"),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "modelops_serving_grpc_requests",
            "gRPC calls answered (also counted in modelops_serving_requests by their HTTP-equivalent "
            "status), by model, version, method and gRPC status code.",
            ("model_name", "version", "method", "code"),
            registry=self.registry,
        )
        self._grpc_children: dict[tuple[str, str, str], Counter] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}
        self._batch_children: dict[int, Histogram] = {}
        for loaded in repository.versions.values():
            for runner in loaded.signatures.values():
                self._batch_children[id(runner)] = self.batch_size.labels(
                    self.model_name, str(loaded.version), runner.name
                )
        # Series exist from the start (at zero) for every version's predict API, so rates work at once.
        for version in repository.versions:
            self.latency.labels(self.model_name, str(version), "predict")
            self.requests.labels(self.model_name, str(version), "predict", "200")

    def observe_request(self, version: str, api: str, status: int, seconds: float) -> None:
        key = (version, api, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = self._children(version, api, status)
        count, latency, error = children
        count.inc()
        latency.observe(seconds)
        if error is not None:
            error.inc()

    def observe_grpc(
        self, version: str, method: str, api: str, code: str, http_status: int, seconds: float
    ) -> None:
        """One gRPC call: in the shared families as ``api`` with its HTTP-equivalent status, and by code."""
        self.observe_request(version, api, http_status, seconds)
        key = (version, method, code)
        child = self._grpc_children.get(key)
        if child is None:
            child = self._grpc_children[key] = self.grpc_requests.labels(
                self.model_name, version, method, code
            )
        child.inc()

    def _children(self, version: str, api: str, status: int) -> tuple[Counter, Histogram, Counter | None]:
        labels = (self.model_name, version, api)
        error = None
        if status >= 400:
            error = self.errors.labels(*labels, "server" if status >= 500 else "client")
        return self.requests.labels(*labels, str(status)), self.latency.labels(*labels), error

    def observe_batch(self, runner: SignatureRunner, rows: int) -> None:
        child = self._batch_children.get(id(runner))
        if child is not None:
            child.observe(rows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
