"""A small client for the TensorFlow Serving REST API (this project's server or ``tensorflow/serving``).

Records go in as a DataFrame or a list of dicts. The model's metadata says which inputs exist and
their dtypes, so records are converted generically: extra columns are dropped, a missing or NaN
number is sent as the JSON token ``NaN`` and a missing category as ``""`` (what TF Serving's JSON
parser accepts; ``null`` is rejected by TF Serving). Scores come back as a flat list of floats.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

DEFAULT_TIMEOUT = 10.0
_SIGNATURES: dict[tuple[str, str, str | None], dict[str, str]] = {}  # (url, model, version) -> input -> dtype


class ServingClientError(RuntimeError):
    """The serving endpoint is unreachable, refused the request, or answered something unusable."""


class SmokeTestError(ServingClientError):
    """The served model answered, but not with what a healthy model of that version answers."""


def _model_path(url: str, model: str, version: str | int | None) -> str:
    base = f"{url.rstrip('/')}/v1/models/{model}"
    return f"{base}/versions/{version}" if version is not None else base


def _request(method: str, target: str, client: httpx.Client | None, timeout: float, **kwargs: Any) -> Any:
    try:
        if client is not None:
            response = client.request(method, target, timeout=timeout, **kwargs)
        else:
            response = httpx.request(method, target, timeout=timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise ServingClientError(f"{method} {target} failed: {type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(response.content) if response.content else {}
    except ValueError:
        body = {"error": response.text[:300]}
    if response.status_code >= 400:
        error = body.get("error", response.text[:300]) if isinstance(body, dict) else response.text[:300]
        raise ServingClientError(f"{method} {target} answered HTTP {response.status_code}: {error}")
    return body


def model_status(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[dict[str, Any]]:
    """``model_version_status`` entries, e.g. ``[{"version": "3", "state": "AVAILABLE", ...}]``."""
    return _request("GET", _model_path(url, model, version), client, timeout)["model_version_status"]


def metadata(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    return _request("GET", _model_path(url, model, version) + "/metadata", client, timeout)


def signature_inputs(
    url: str,
    model: str,
    version: str | int | None = None,
    *,
    signature: str = "serving_default",
    client: httpx.Client | None = None,
    refresh: bool = False,
) -> dict[str, str]:
    """Input -> TF dtype (``DT_FLOAT``, ``DT_STRING``...), cached per URL/model/version."""
    key = (url.rstrip("/"), model, None if version is None else str(version))
    if refresh or key not in _SIGNATURES:
        meta = metadata(url, model, version, client=client)
        defs = meta["metadata"]["signature_def"]["signature_def"]
        if signature not in defs:
            raise ServingClientError(
                f"model {model!r} at {url} has no signature {signature!r}; it has {sorted(defs)}"
            )
        _SIGNATURES[key] = {
            name: spec.get("dtype", "DT_FLOAT") for name, spec in defs[signature]["inputs"].items()
        }
    return _SIGNATURES[key]


def to_instances(records: Any, inputs: Mapping[str, str]) -> list[dict[str, Any]]:
    """Records (DataFrame or dicts) as TF Serving instances holding exactly the signature's inputs."""
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    instances = []
    for index, row in enumerate(rows):
        instance = {}
        for name, dtype in inputs.items():
            value = row.get(name)
            if dtype == "DT_STRING":
                instance[name] = "" if _missing(value) else str(value)
            elif _missing(value):
                instance[name] = math.nan
            else:
                try:
                    instance[name] = (
                        float(value) if dtype in {"DT_FLOAT", "DT_DOUBLE", "DT_HALF"} else int(value)
                    )
                except (TypeError, ValueError):
                    raise ServingClientError(
                        f"record {index}: {name}={value!r} is not a number, but model input {name} is {dtype}"
                    ) from None
        instances.append(instance)
    return instances


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (str, bytes, list, dict)) else False
    except (ImportError, TypeError, ValueError):
        return False


def predict(
    url: str,
    model: str,
    records: Any,
    version: str | int | None = None,
    *,
    signature: str = "serving_default",
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[float]:
    """Score records; one float per record (the single output of the signature)."""
    try:
        return _predict_once(url, model, records, version, signature, client, timeout, refresh=False)
    except ServingClientError as exc:
        if "input(s)" not in str(exc):
            raise
        # the served signature changed since it was cached (a new version was swapped in): read it again
        return _predict_once(url, model, records, version, signature, client, timeout, refresh=True)


def _predict_once(
    url: str,
    model: str,
    records: Any,
    version: str | int | None,
    signature: str,
    client: httpx.Client | None,
    timeout: float,
    refresh: bool,
) -> list[float]:
    inputs = signature_inputs(url, model, version, signature=signature, client=client, refresh=refresh)
    instances = to_instances(records, inputs)
    if not instances:
        return []
    payload: dict[str, Any] = {"instances": instances}
    if signature != "serving_default":
        payload["signature_name"] = signature
    body = json.dumps(
        payload, allow_nan=True
    ).encode()  # NaN token for missing numbers, as TF Serving reads it
    target = _model_path(url, model, version) + ":predict"
    answer = _request(
        "POST", target, client, timeout, content=body, headers={"Content-Type": "application/json"}
    )
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise ServingClientError(
            f"{target} answered {len(predictions or [])} predictions for {len(instances)} records"
        )
    return [_as_score(p, target) for p in predictions]


def _as_score(prediction: Any, target: str) -> float:
    while isinstance(prediction, list) and len(prediction) == 1:
        prediction = prediction[0]  # [[p]] from a [None, 1] output
    if isinstance(prediction, dict) and len(prediction) == 1:
        (prediction,) = prediction.values()
    if prediction is None:
        return math.nan  # a NaN score is serialised as null by some servers
    if not isinstance(prediction, (int, float)):
        raise ServingClientError(f"{target} answered a prediction that is not one number: {prediction!r}")
    return float(prediction)


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
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            for entry in model_status(url, model, version, client=client, timeout=min(5.0, timeout)):
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
                f"model {model!r} at {url}: {wanted} not AVAILABLE after {timeout:.0f}s ({last})"
            )
        time.sleep(interval)


def smoke_test(
    url: str,
    model: str,
    records: Any,
    expected_version: str | int | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[float]:
    """Score a few records; raise :class:`SmokeTestError` unless the right version answers probabilities."""
    if expected_version is not None:
        statuses = model_status(url, model, client=client, timeout=timeout)
        served = max((int(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"), default=None)
        if served is None or str(served) != str(expected_version):
            raise SmokeTestError(
                f"model {model!r} at {url} serves version {served}, expected {expected_version}: "
                "the new version did not load or an older one is answering"
            )
    scores = predict(url, model, records, client=client, timeout=timeout)
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    if len(scores) != len(rows):
        raise SmokeTestError(
            f"model {model!r} at {url} returned {len(scores)} scores for {len(rows)} records"
        )
    bad = [(i, s) for i, s in enumerate(scores) if not (math.isfinite(s) and 0.0 <= s <= 1.0)]
    if bad:
        shown = ", ".join(f"record {i}: {s!r}" for i, s in bad[:5])
        raise SmokeTestError(
            f"model {model!r} at {url} returned scores that are not finite probabilities in [0, 1] "
            f"({shown}); "
            "check the model's output activation and preprocessing"
        )
    return scores
