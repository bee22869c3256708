"""What the scoring client replays: a generated data period or any CSV with the model's schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from modelops.data.generator import generate_period
from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema, SchemaError


@dataclass(frozen=True)
class ReplayRecords:
    """Model inputs (one dict per record, raw values) and the true 0/1 label where known."""

    instances: list[dict[str, Any]]
    labels: list[int | None]
    schema: DatasetSchema
    period: int | None
    source: str

    def __len__(self) -> int:
        return len(self.instances)


def load_replay_records(
    period: int | None = None,
    csv: str | Path | None = None,
    schema: DatasetSchema | str | Path | None = None,
    rows: int | None = None,
    seed: int = 42,
    drift: float = 1.0,
) -> ReplayRecords:
    """Records of generated period ``period`` or of ``csv`` (first ``rows`` of them if given)."""
    if isinstance(schema, str | Path):
        schema = DatasetSchema.from_yaml(schema)
    schema = schema or HMEQ_SCHEMA
    if csv is not None:
        path = Path(csv)
        if not path.exists():
            raise SchemaError(f"CSV file {path} does not exist")
        frame = pd.read_csv(path, sep=schema.separator, keep_default_na=True)
        source = str(path)
    elif period is not None:
        frame = generate_period(period, rows=rows or 5000, seed=seed, drift=drift)
        source = f"generated period {period} (seed {seed}, drift {drift})"
    else:
        raise SchemaError("nothing to replay: give --period N (generated data) or --csv FILE")
    if rows is not None:
        frame = frame.head(rows)
    return records_from_frame(frame, schema, period=period, source=source)


def records_from_frame(
    frame: Any, schema: DatasetSchema, period: int | None = None, source: str = "frame"
) -> ReplayRecords:
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{source}: columns {missing} of the schema are missing (has {list(frame.columns)[:20]}); "
            "pass the matching --schema"
        )
    instances: list[dict[str, Any]] = []
    numeric = {}
    for column in schema.numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & values.isna()
        if bad.any():
            first = frame.loc[bad, column].iloc[0]
            raise SchemaError(f"{source}: numeric column {column} holds non-numbers, e.g. {first!r}")
        numeric[column] = values.astype("float64").tolist()
    categorical = {
        column: ["" if _missing(v) else str(v) for v in frame[column].tolist()]
        for column in schema.categorical
    }
    for i in range(len(frame)):
        record: dict[str, Any] = {c: numeric[c][i] for c in schema.numeric}
        record.update({c: categorical[c][i] for c in schema.categorical})
        instances.append(record)
    labels: list[int | None]
    if schema.target in frame.columns:
        labels = []
        for value in frame[schema.target].tolist():
            if _missing(value):
                labels.append(None)
            elif value in (0, 1):
                labels.append(int(value))
            else:
                raise SchemaError(f"{source}: target {schema.target} must be 0/1 or empty, got {value!r}")
    else:
        labels = [None] * len(instances)
    return ReplayRecords(instances, labels, schema, period, source)


def _missing(value: Any) -> bool:
    return not isinstance(value, str) and bool(pd.isna(value))
