"""The one client for the TensorFlow Serving REST API (this project's server or ``tensorflow/serving``).

Every caller that talks to a served model goes through here: the smoke tests of every serving
target (local, docker, kubernetes, openshift), the scoring client, the benchmark and the CLI.

* :class:`ServingClient` (sync) and :class:`AsyncServingClient` (asyncio) speak the same API:
  ``status`` (``GET /v1/models/{m}[/versions/{v}]``), ``metadata`` (``GET .../metadata``) and
  ``predict`` (``POST ...:predict``) in row form (``instances`` -> ``predictions``) or columnar form
  (``inputs`` -> ``outputs``).
* Requests travel through a *transport*: plain HTTP (:class:`HttpTransport`,
  :class:`AsyncHttpTransport`) or anything that carries ``(method, path, JSON payload)`` and hands
  back a :class:`Reply` (the Kubernetes target uses the API server's service proxy).
* Records go in as a DataFrame or a list of dicts. The model's metadata says which inputs exist and
  their dtypes, so records are converted generically: extra columns are dropped, a missing or NaN
  number is sent as the JSON token ``NaN`` and a missing category as ``""`` (what TF Serving's JSON
  parser accepts; ``null`` is rejected by TF Serving). Scores come back as a flat list of floats.

Every unusable answer raises :class:`ServingClientError`, whose ``kind`` says which:

==============  ==================================================================================
``connect``     the server is unreachable or dropped the connection
``timeout``     no answer within the timeout
``http_4xx``    the server refused the request (``{"error": ...}`` with a 4xx status)
``http_5xx``    the server failed (``{"error": ...}`` with a 5xx status)
``bad_response``  2xx, but: not JSON, not an object, no ``predictions``/``outputs``/status list, a
                wrong number of predictions, or a prediction that is ``null``, NaN, infinite,
                a boolean or not a number (a NaN score is an error, never a score)
``signature``   the model has no such signature
``bad_record``  a record's value cannot be sent as the input's dtype (nothing was sent)
``smoke``       :class:`SmokeTestError`: a well-formed answer, but the wrong version or not
                probabilities in [0, 1]
==============  ==================================================================================
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from modelops.tls import tls_context

DEFAULT_TIMEOUT = 10.0
VERSION_HEADER = "x-model-version"  # set by this project's server: the version that answered
DEFAULT_SIGNATURE = "serving_default"
# (transport base, model, version, signature) -> input name -> TF dtype
_SIGNATURES: dict[tuple[str, str, str | None, str], dict[str, str]] = {}


class ServingClientError(RuntimeError):
    """The serving endpoint is unreachable, refused the request, or answered something unusable."""

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class SmokeTestError(ServingClientError):
    """The served model answered, but not with what a healthy model of that version answers."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="smoke")


def _bad(message: str) -> ServingClientError:
    return ServingClientError(message, kind="bad_response")


def _short(value: Any, limit: int = 200) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------ transports


@dataclass(frozen=True)
class Reply:
    """What a transport hands back: the HTTP status, the raw body and the response headers."""

    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """Carries one request; ``base`` names the endpoint in error messages (a URL, a proxied service)."""

    base: str

    def send(self, method: str, path: str, payload: Any = None) -> Reply: ...


class AsyncTransport(Protocol):
    base: str

    async def send(self, method: str, path: str, payload: Any = None) -> Reply: ...


def encode_payload(payload: Any) -> bytes:
    """JSON with ``NaN`` tokens for missing numbers, as TF Serving reads them."""
    return json.dumps(payload, allow_nan=True).encode()


def _http_failure(method: str, url: str, exc: httpx.HTTPError, timeout: float) -> ServingClientError:
    if isinstance(exc, httpx.TimeoutException):
        return ServingClientError(
            f"{method} {url}: no answer within {timeout:g} s ({type(exc).__name__})", kind="timeout"
        )
    return ServingClientError(
        f"{method} {url}: the server is unreachable ({type(exc).__name__}: {exc})", kind="connect"
    )


# A pooled keep-alive connection the server closed just as a request went out fails with one of
# these before any answer arrives. The request never reached the model, so it is sent once more on
# a fresh connection; a refused connection or a timeout is not retried here.
STALE_CONNECTION_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class HttpTransport:
    """Plain HTTP to a base URL such as ``http://127.0.0.1:8501``; an ``httpx.Client`` may be shared."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.Client | None = None):
        self.base = url.rstrip("/")
        self.timeout = timeout
        self._client = client

    def send(self, method: str, path: str, payload: Any = None) -> Reply:
        url = self.base + path
        content = None if payload is None else encode_payload(payload)
        headers = {"Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                if self._client is not None:
                    response = self._client.request(
                        method, url, content=content, headers=headers, timeout=self.timeout
                    )
                else:
                    response = httpx.request(
                        method,
                        url,
                        content=content,
                        headers=headers,
                        timeout=self.timeout,
                        verify=tls_context(),
                    )
                return Reply(response.status_code, response.content, response.headers)
            except STALE_CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise _http_failure(method, url, exc, self.timeout) from None
            except httpx.HTTPError as exc:
                raise _http_failure(method, url, exc, self.timeout) from None
        raise AssertionError("unreachable")


class AsyncHttpTransport:
    """Plain HTTP from asyncio, over one connection pool of ``connections`` connections."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 10,
        client: httpx.AsyncClient | None = None,
    ):
        self.base = url.rstrip("/")
        self.timeout = timeout
        self._owned = client is None
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = client or httpx.AsyncClient(timeout=timeout, limits=limits, verify=tls_context())

    async def send(self, method: str, path: str, payload: Any = None) -> Reply:
        url = self.base + path
        content = None if payload is None else encode_payload(payload)
        for attempt in (1, 2):
            try:
                response = await self._client.request(
                    method, url, content=content, headers={"Content-Type": "application/json"}
                )
                return Reply(response.status_code, response.content, response.headers)
            except STALE_CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise _http_failure(method, url, exc, self.timeout) from None
            except httpx.HTTPError as exc:
                raise _http_failure(method, url, exc, self.timeout) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


# ------------------------------------------------------------------ requests and reading replies


def model_path(model: str, version: str | int | None = None) -> str:
    base = f"/v1/models/{model}"
    return f"{base}/versions/{version}" if version is not None else base


def predict_payload(
    instances: list[dict[str, Any]], signature: str = DEFAULT_SIGNATURE, columnar: bool = False
) -> dict[str, Any]:
    """``{"instances": [...]}`` (row form) or ``{"inputs": {name: [...]}}`` (columnar form)."""
    payload: dict[str, Any]
    if columnar:
        names = list(instances[0]) if instances else []
        payload = {"inputs": {name: [row[name] for row in instances] for name in names}}
    else:
        payload = {"instances": instances}
    if signature != DEFAULT_SIGNATURE:
        payload["signature_name"] = signature
    return payload


_NOT_JSON = object()


@dataclass(frozen=True)
class Answer:
    """A usable reply: a JSON object with a 2xx status. ``what`` ("POST <url>") opens every error."""

    what: str
    body: dict[str, Any]
    headers: Mapping[str, str]


def read_answer(reply: Reply, what: str) -> Answer:
    """The reply's JSON object, or :class:`ServingClientError` (HTTP error, not JSON, not an object)."""
    try:
        body: Any = json.loads(reply.content) if reply.content else _NOT_JSON
    except ValueError:
        body = _NOT_JSON
    if reply.status >= 400:
        reason = (body.get("error") or body.get("message")) if isinstance(body, dict) else None
        kind = "http_4xx" if reply.status < 500 else "http_5xx"
        message = f"{what} answered HTTP {reply.status}: {reason or _short(reply.content, 300)}"
        raise ServingClientError(message, kind=kind, status=reply.status)
    if body is _NOT_JSON:
        shown = _short(reply.content) if reply.content else "(an empty body)"
        raise _bad(f"{what} answered HTTP {reply.status} with a body that is not JSON: {shown}")
    if not isinstance(body, dict):
        raise _bad(f"{what} answered {_short(body)}, not a JSON object")
    return Answer(what, body, reply.headers)


def read_status(answer: Answer) -> list[dict[str, Any]]:
    """``model_version_status`` entries, e.g. ``[{"version": "3", "state": "AVAILABLE", ...}]``."""
    entries = answer.body.get("model_version_status")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _bad(f"{answer.what} answered no 'model_version_status' list: {_short(answer.body)}")
    return entries


def read_signature_inputs(answer: Answer, model: str, signature: str) -> dict[str, str]:
    """Input name -> TF dtype (``DT_FLOAT``, ``DT_STRING``...) of one signature in a metadata answer."""
    try:
        defs = answer.body["metadata"]["signature_def"]["signature_def"]
        inputs = defs[signature]["inputs"] if signature in defs else None
        dtypes = {} if inputs is None else {n: s.get("dtype", "DT_FLOAT") for n, s in inputs.items()}
    except (KeyError, TypeError, AttributeError):
        raise _bad(
            f"{answer.what} answered no metadata.signature_def.signature_def.<name>.inputs: "
            f"{_short(answer.body)}"
        ) from None
    if inputs is None:
        raise ServingClientError(
            f"model {model!r} ({answer.what}) has no signature {signature!r}; it has {sorted(defs)}",
            kind="signature",
        )
    return dtypes


@dataclass(frozen=True)
class Prediction:
    scores: list[float]
    model_version: str | None = None  # from the X-Model-Version header, when the server sets it


def read_prediction(answer: Answer, expected: int, columnar: bool = False) -> Prediction:
    """One finite float per record, or :class:`ServingClientError` (``bad_response``) saying why not."""
    key = "outputs" if columnar else "predictions"
    if key not in answer.body:
        error = answer.body.get("error")
        found = f"the error {error!r}" if error else _short(answer.body)
        raise _bad(f"{answer.what} answered no {key!r} but {found}")
    values = answer.body[key]
    if isinstance(values, dict):  # columnar with several named outputs
        values = _one_output(values, answer.what, key)
    if not isinstance(values, list) or len(values) != expected:
        count = len(values) if isinstance(values, list) else _short(values, 80)
        raise _bad(f"{answer.what} answered {count} {key} for {expected} records")
    scores = [_score(value, index, answer.what) for index, value in enumerate(values)]
    return Prediction(scores, answer.headers.get(VERSION_HEADER))


def _one_output(outputs: dict[str, Any], what: str, where: str) -> Any:
    if "score" in outputs:
        return outputs["score"]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise _bad(
        f"{what} answered the outputs {sorted(outputs)} in {where}: expected one, or one named 'score'"
    )


def _score(value: Any, index: int, what: str) -> float:
    if isinstance(value, dict):  # row form with several named outputs
        value = _one_output(value, what, f"prediction {index}")
    while isinstance(value, list) and len(value) == 1:
        value = value[0]  # [[p]] from a [None, 1] output
    if value is None:
        raise _bad(f"{what} answered null as prediction {index}: no score (a NaN score is sent as null)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} answered prediction {index} = {_short(value, 80)}, which is not a number")
    if not math.isfinite(value):
        raise _bad(f"{what} answered prediction {index} = {value}, which is not a finite number")
    return float(value)


# ------------------------------------------------------------------------------ records -> inputs


def to_instances(records: Any, inputs: Mapping[str, str]) -> list[dict[str, Any]]:
    """Records (DataFrame or dicts) as TF Serving instances holding exactly the signature's inputs."""
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    return [_instance(index, row, inputs) for index, row in enumerate(rows)]


def _instance(index: int, row: Mapping[str, Any], inputs: Mapping[str, str]) -> dict[str, Any]:
    instance: dict[str, Any] = {}
    for name, dtype in inputs.items():
        value: Any = row.get(name)
        if dtype == "DT_STRING":
            instance[name] = "" if _missing(value) else str(value)
        elif _missing(value):
            instance[name] = math.nan
        else:
            try:
                instance[name] = float(value) if dtype in {"DT_FLOAT", "DT_DOUBLE", "DT_HALF"} else int(value)
            except (TypeError, ValueError):
                raise ServingClientError(
                    f"record {index}: {name}={value!r} is not a number, but model input {name} is {dtype}",
                    kind="bad_record",
                ) from None
    return instance


_PANDAS_MISSING = frozenset({"NAType", "NaTType"})  # pd.NA, pd.NaT: named, so pandas need not be imported


def _missing(value: Any) -> bool:
    """None, NaN (Python, NumPy or Decimal), NaT or pandas' NA: what ``pd.isna`` calls missing in a scalar."""
    if value is None or type(value).__name__ in _PANDAS_MISSING:
        return True
    if isinstance(value, str | bytes | list | dict):
        return False
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------- checks of a smoke test


def served_version(statuses: list[dict[str, Any]]) -> str | None:
    """The highest AVAILABLE version, or ``None``."""
    available = [str(s.get("version")) for s in statuses if s.get("state") == "AVAILABLE"]
    return max(available, key=lambda v: (len(v), v), default=None)  # numeric order for digit strings


def reports_available(statuses: list[dict[str, Any]], version: str | int) -> bool:
    return any(str(s.get("version")) == str(version) and s.get("state") == "AVAILABLE" for s in statuses)


def check_served_version(statuses: list[dict[str, Any]], model: str, where: str, expected: str | int) -> None:
    served = served_version(statuses)
    if served != str(expected):
        raise SmokeTestError(
            f"model {model!r} at {where} serves version {served}, expected {expected}: "
            "the new version did not load or an older one is answering"
        )


def check_probabilities(scores: list[float], model: str, where: str) -> None:
    bad = [(i, s) for i, s in enumerate(scores) if not 0.0 <= s <= 1.0]
    if bad:
        shown = ", ".join(f"record {i}: {s!r}" for i, s in bad[:5])
        raise SmokeTestError(
            f"model {model!r} at {where} returned scores that are not finite probabilities in [0, 1] "
            f"({shown}); check the model's output activation and preprocessing"
        )


SMOKE_RECORDS: list[dict[str, Any]] = [{}]  # one record, every feature missing: the model's imputation copes


def _signature_key(
    base: str, model: str, version: str | int | None, signature: str
) -> tuple[str, str, str | None, str]:
    return (base, model, None if version is None else str(version), signature)


def _signature_changed(exc: ServingClientError) -> bool:
    # the served signature changed since it was cached (a new version was swapped in): read it again
    return exc.kind == "http_4xx" and "input(s)" in str(exc)


# ------------------------------------------------------------------------------------- the clients


class ServingClient:
    """Blocking client over one transport (a URL string means plain HTTP)."""

    def __init__(self, transport: Transport | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = (
            HttpTransport(transport, timeout=timeout) if isinstance(transport, str) else transport
        )

    def _ask(self, method: str, path: str, payload: Any = None) -> Answer:
        reply = self.transport.send(method, path, payload)
        return read_answer(reply, f"{method} {self.transport.base}{path}")

    def status(self, model: str, version: str | int | None = None) -> list[dict[str, Any]]:
        return read_status(self._ask("GET", model_path(model, version)))

    def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        return self._ask("GET", model_path(model, version) + "/metadata").body

    def signature_inputs(
        self,
        model: str,
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        refresh: bool = False,
    ) -> dict[str, str]:
        """Input -> TF dtype, cached per endpoint/model/version/signature."""
        key = _signature_key(self.transport.base, model, version, signature)
        if refresh or key not in _SIGNATURES:
            path = model_path(model, version) + "/metadata"
            _SIGNATURES[key] = read_signature_inputs(self._ask("GET", path), model, signature)
        return _SIGNATURES[key]

    def predict_instances(
        self,
        model: str,
        instances: list[dict[str, Any]],
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        columnar: bool = False,
    ) -> Prediction:
        """Score ready-made instances (the signature's inputs, already converted)."""
        payload = predict_payload(instances, signature, columnar)
        answer = self._ask("POST", model_path(model, version) + ":predict", payload)
        return read_prediction(answer, len(instances), columnar)

    def predict(
        self,
        model: str,
        records: Any,
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        columnar: bool = False,
    ) -> list[float]:
        """Score records (DataFrame or dicts); one float per record."""
        try:
            return self._predict_records(model, records, version, signature, columnar, refresh=False)
        except ServingClientError as exc:
            if not _signature_changed(exc):
                raise
            return self._predict_records(model, records, version, signature, columnar, refresh=True)

    def _predict_records(
        self,
        model: str,
        records: Any,
        version: str | int | None,
        signature: str,
        columnar: bool,
        refresh: bool,
    ) -> list[float]:
        inputs = self.signature_inputs(model, version, signature=signature, refresh=refresh)
        instances = to_instances(records, inputs)
        if not instances:
            return []
        return self.predict_instances(
            model, instances, version, signature=signature, columnar=columnar
        ).scores

    def is_available(self, model: str, version: str | int) -> bool:
        return reports_available(self.status(model), version)

    def wait_until_available(
        self, model: str, version: str | int | None = None, timeout: float = 120.0, *, interval: float = 0.25
    ) -> dict[str, Any]:
        """Poll the status until the (given) version is AVAILABLE; return its status entry."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                for entry in self.status(model, version):
                    if entry.get("state") == "AVAILABLE" and (
                        version is None or str(entry.get("version")) == str(version)
                    ):
                        return entry
                last = "not AVAILABLE yet"
            except ServingClientError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                wanted = f"version {version}" if version is not None else "a version"
                raise ServingClientError(
                    f"model {model!r} at {self.transport.base}: {wanted} not AVAILABLE after "
                    f"{timeout:.0f}s ({last})",
                    kind="timeout",
                )
            time.sleep(interval)

    def smoke_test(
        self, model: str, records: Any = None, expected_version: str | int | None = None
    ) -> list[float]:
        """Score a few records (default: one with every feature missing); raise :class:`SmokeTestError`
        unless ``expected_version`` is the served one and every score is a probability."""
        if expected_version is not None:
            check_served_version(self.status(model), model, self.transport.base, expected_version)
        self.signature_inputs(model, refresh=True)  # a new version may have a new signature
        scores = self.predict(model, SMOKE_RECORDS if records is None else records)
        check_probabilities(scores, model, self.transport.base)
        return scores


class AsyncServingClient:
    """The same client for asyncio code (the scoring client, the Kubernetes target)."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.transport = transport

    async def __aenter__(self) -> AsyncServingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        close = getattr(self.transport, "aclose", None)
        if close is not None:
            await close()

    async def _ask(self, method: str, path: str, payload: Any = None) -> Answer:
        reply = await self.transport.send(method, path, payload)
        return read_answer(reply, f"{method} {self.transport.base}{path}")

    async def status(self, model: str, version: str | int | None = None) -> list[dict[str, Any]]:
        return read_status(await self._ask("GET", model_path(model, version)))

    async def metadata(self, model: str, version: str | int | None = None) -> dict[str, Any]:
        return (await self._ask("GET", model_path(model, version) + "/metadata")).body

    async def signature_inputs(
        self,
        model: str,
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        refresh: bool = False,
    ) -> dict[str, str]:
        key = _signature_key(self.transport.base, model, version, signature)
        if refresh or key not in _SIGNATURES:
            answer = await self._ask("GET", model_path(model, version) + "/metadata")
            _SIGNATURES[key] = read_signature_inputs(answer, model, signature)
        return _SIGNATURES[key]

    async def predict_instances(
        self,
        model: str,
        instances: list[dict[str, Any]],
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        columnar: bool = False,
    ) -> Prediction:
        payload = predict_payload(instances, signature, columnar)
        answer = await self._ask("POST", model_path(model, version) + ":predict", payload)
        return read_prediction(answer, len(instances), columnar)

    async def predict(
        self,
        model: str,
        records: Any,
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        columnar: bool = False,
    ) -> list[float]:
        try:
            return await self._predict_records(model, records, version, signature, columnar, refresh=False)
        except ServingClientError as exc:
            if not _signature_changed(exc):
                raise
            return await self._predict_records(model, records, version, signature, columnar, refresh=True)

    async def _predict_records(
        self,
        model: str,
        records: Any,
        version: str | int | None,
        signature: str,
        columnar: bool,
        refresh: bool,
    ) -> list[float]:
        inputs = await self.signature_inputs(model, version, signature=signature, refresh=refresh)
        instances = to_instances(records, inputs)
        if not instances:
            return []
        prediction = await self.predict_instances(
            model, instances, version, signature=signature, columnar=columnar
        )
        return prediction.scores

    async def is_available(self, model: str, version: str | int) -> bool:
        return reports_available(await self.status(model), version)

    async def smoke_test(
        self, model: str, records: Any = None, expected_version: str | int | None = None
    ) -> list[float]:
        if expected_version is not None:
            check_served_version(await self.status(model), model, self.transport.base, expected_version)
        await self.signature_inputs(model, refresh=True)  # a new version may have a new signature
        scores = await self.predict(model, SMOKE_RECORDS if records is None else records)
        check_probabilities(scores, model, self.transport.base)
        return scores


# ----------------------------------------------------------- one-call shortcuts over plain HTTP


def _client(url: str, client: httpx.Client | None, timeout: float) -> ServingClient:
    return ServingClient(HttpTransport(url, timeout=timeout, client=client))


def model_status(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """``model_version_status`` entries, e.g. ``[{"version": "3", "state": "AVAILABLE", ...}]``."""
    return _client(url, client, timeout).status(model, version)


def metadata(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    return _client(url, client, timeout).metadata(model, version)


def signature_inputs(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    signature: str = DEFAULT_SIGNATURE,
    client: httpx.Client | None = None,
    refresh: bool = False,
) -> dict[str, str]:
    """Input -> TF dtype (``DT_FLOAT``, ``DT_STRING``...), cached per URL/model/version."""
    return _client(url, client, DEFAULT_TIMEOUT).signature_inputs(
        model, version, signature=signature, refresh=refresh
    )


def predict(
    url: str,
    model: str,
    records: Any,
    version: str | int | None = None,
    *,
    signature: str = DEFAULT_SIGNATURE,
    columnar: bool = False,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[float]:
    """Score records; one float per record (the single output of the signature, or its ``score``)."""
    return _client(url, client, timeout).predict(
        model, records, version, signature=signature, columnar=columnar
    )


def wait_until_available(
    url: str,
    model: str,
    version: str | int | None = None,
    timeout: float = 120.0,
    *,
    interval: float = 0.25,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Poll the status until the (given) version is AVAILABLE; return its status entry."""
    http = _client(url, client, min(5.0, timeout))
    return http.wait_until_available(model, version, timeout, interval=interval)


def smoke_test(
    url: str,
    model: str,
    records: Any = None,
    expected_version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[float]:
    """Score a few records; raise :class:`SmokeTestError` unless the right version answers probabilities."""
    return _client(url, client, timeout).smoke_test(model, records, expected_version)
