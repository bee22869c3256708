"""One scored record as a spool line, and its check + conversion into a PostgreSQL COPY row.

A spool line is one JSON object ending in ``\\n``::

    {"request_id": "<uuid4>", "scored_at": "2026-11-25T20:40:00.123456+00:00",
     "model_name": "hmeq-risk", "model_version": "3", "features": {"LOAN": 1100.0, "JOB": ""},
     "score": 0.231, "decision": 0, "latency_ms": 1.4, "label": 1, "period": 2}

``label``, ``latency_ms`` and ``period`` may be null. Missing numeric features are null, missing
categorical ones "". The column order of :data:`COPY_COLUMNS` is the order of the COPY text rows.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Any

import orjson

COPY_COLUMNS: tuple[str, ...] = (
    "request_id", "scored_at", "model_name", "model_version", "features",
    "score", "decision", "latency_ms", "label", "period",
)  # fmt: skip
REQUIRED_FIELDS: tuple[str, ...] = (
    "request_id", "scored_at", "model_name", "model_version", "features", "score", "decision",
)  # fmt: skip
_NULL = "\\N"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidRecord(ValueError):
    """A spool line that cannot become a scoring-log row; the message says which field and why."""


def encode_record(record: dict[str, Any]) -> bytes:
    """The spool line for ``record`` (NaN features become null)."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def _escape(text: str) -> str:
    """Escape for COPY text format (backslash first)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _number(record: dict[str, Any], key: str, *, nullable: bool) -> str:
    value = record.get(key)
    if type(value) is float and math.isfinite(value):  # the common case, checked first for speed
        return repr(value)
    if value is None:
        if nullable:
            return _NULL
        raise InvalidRecord(f"field {key!r} is missing or null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRecord(f"field {key!r} must be a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise InvalidRecord(f"field {key!r} must be finite, got {value!r}")
    return repr(float(value))


def _flag(record: dict[str, Any], key: str, *, nullable: bool) -> str:
    value = record.get(key)
    if value is None:
        if nullable:
            return _NULL
        raise InvalidRecord(f"field {key!r} is missing or null")
    if value is True or value is False:
        return "1" if value else "0"
    if isinstance(value, int | float) and value in (0, 1):
        return "1" if value == 1 else "0"
    raise InvalidRecord(f"field {key!r} must be 0 or 1, got {value!r:.40}")


def copy_row(line: bytes) -> str:
    """The COPY text row (with trailing newline) for one spool line; raises :class:`InvalidRecord`."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidRecord(f"a record must be a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise InvalidRecord(f"missing fields {missing}")

    request_id = record["request_id"]
    if not (isinstance(request_id, str) and _CANONICAL_UUID.fullmatch(request_id)):
        try:
            request_id = str(uuid.UUID(request_id))
        except (TypeError, ValueError, AttributeError):
            raise InvalidRecord(f"request_id must be a UUID string, got {request_id!r:.60}") from None

    scored_at = record["scored_at"]
    try:
        stamp = datetime.fromisoformat(scored_at)
    except (TypeError, ValueError):
        raise InvalidRecord(f"scored_at must be an ISO-8601 timestamp, got {scored_at!r:.60}") from None
    if stamp.tzinfo is None:
        raise InvalidRecord(f"scored_at must carry a time zone (e.g. +00:00), got {scored_at!r}")
    if not 1 <= stamp.year <= 9999:
        raise InvalidRecord(f"scored_at year out of range: {scored_at!r}")

    model_name = record["model_name"]
    if not isinstance(model_name, str) or not model_name:
        raise InvalidRecord(f"model_name must be a non-empty string, got {model_name!r:.60}")
    model_version = record["model_version"]
    if isinstance(model_version, bool) or not isinstance(model_version, str | int) or model_version == "":
        raise InvalidRecord(f"model_version must be a non-empty string or integer, got {model_version!r:.60}")

    features = record["features"]
    if not isinstance(features, dict):
        raise InvalidRecord(f"features must be a JSON object, got {type(features).__name__}")

    score = _number(record, "score", nullable=False)
    decision = _flag(record, "decision", nullable=False)
    latency = _number(record, "latency_ms", nullable=True)
    label = _flag(record, "label", nullable=True)
    period = record.get("period")
    if period is None:
        period_text = _NULL
    elif isinstance(period, int) and not isinstance(period, bool) and -(2**31) <= period < 2**31:
        period_text = str(period)
    else:
        raise InvalidRecord(f"period must be an integer or null, got {period!r:.40}")

    features_json = orjson.dumps(features).decode()
    if "\\" in features_json or "\x00" in features_json:
        if "\\u0000" in features_json:
            raise InvalidRecord("features contain a NUL character, which PostgreSQL jsonb cannot store")
        features_json = features_json.replace("\\", "\\\\")
    return (
        "\t".join(
            (
                request_id,
                stamp.isoformat(),
                _escape(model_name),
                _escape(str(model_version)),
                features_json,
                score,
                decision,
                latency,
                label,
                period_text,
            )
        )
        + "\n"
    )
