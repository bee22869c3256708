"""Read a training CSV described by a :class:`DatasetSchema` and check it before any training.

Checks, each failing with a :class:`DataError` that names the column, the value and the fix:

* the file exists and parses with the schema's separator; a file that parses into one single
  column almost always means a wrong separator, and the message says which separator it saw;
* every declared column is present (the message lists the missing ones and the columns found);
* the target has no missing values and only 0/1 (``true``/``false`` and ``"0"``/``"1"`` are read as
  0/1) and contains both classes;
* the header names no declared column twice, and no row has more fields than the header (pandas
  would otherwise pick one of the twins, or shift a long row into an index, without a word);
* numeric columns hold numbers (the message shows a few offending values and their rows);
  ``inf``/``-inf`` are read as missing, as the model treats them;
* a feature that is missing in every row is an error: the model could neither learn from it nor
  impute it; remove it from the schema.
* a constant feature (one distinct value) is kept, with a warning: it carries no information and
  the model gives it no weight, but the serving signature keeps the input the schema promises.

Extra columns in the file are ignored. Categorical values are kept as strings with ``NaN`` for
missing; values never seen in training go to the model's out-of-vocabulary bucket at scoring time.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from modelops.data.schema import DatasetSchema, SchemaError

logger = logging.getLogger(__name__)

_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


class DataError(SchemaError):
    """The data does not match its schema; the message names the column, the value and the fix."""


def load_dataset(csv_path: str | Path, schema: DatasetSchema) -> pd.DataFrame:
    """The schema's columns (target first, then the file's feature order) of a validated CSV."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a first row longer than the header
            frame = pd.read_csv(
                path,
                sep=schema.separator,
                dtype={c: str for c in (*schema.categorical, schema.target)},
                keep_default_na=True,
                skipinitialspace=True,
                index_col=False,
            )
    except pd.errors.ParserWarning:
        raise DataError(
            f"{path}: the first data row has more fields than the header; quote values that contain "
            f"the separator {schema.separator!r}, or fix the row"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV with separator {schema.separator!r}: {exc}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    twins = _repeated_columns(path, schema)
    if twins:
        raise DataError(
            f"{path}: the header names {twins} more than once; keep one column of each name "
            "(the loader cannot tell which one is meant)"
        )
    return validate_frame(frame, schema, source=str(path))


def _repeated_columns(path: Path, schema: DatasetSchema) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = [name.strip() for name in next(csv.reader(handle, delimiter=schema.separator), [])]
    declared = {schema.target, *schema.features}
    return sorted({name for name in header if name in declared and header.count(name) > 1})


def validate_frame(frame: pd.DataFrame, schema: DatasetSchema, source: str = "data") -> pd.DataFrame:
    """Check and normalise an in-memory frame the same way :func:`load_dataset` checks a file."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    declared = (schema.target, *schema.features)
    absent = [c for c in declared if c not in frame.columns]
    if absent:
        found = list(frame.columns)
        hint = ""
        if len(found) == 1:
            seen = _guess_separator(str(found[0]))
            hint = (
                f" The file parsed into one single column: its separator is probably {seen!r}, "
                f"not the schema's {schema.separator!r}; set 'separator: \"{seen}\"' in the schema."
                if seen
                else f" The file parsed into one single column: check the schema's separator "
                f"{schema.separator!r}."
            )
        raise DataError(
            f"{source}: columns {absent} declared in the schema are missing; found {found[:30]}.{hint}"
        )
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")

    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    out[schema.target] = _target(frame[schema.target].reset_index(drop=True), schema.target, source)
    for column in (c for c in frame.columns if c in schema.features):
        values = frame[column].reset_index(drop=True)
        out[column] = _numeric(values, column, source) if column in schema.numeric else _categorical(values)
    _check_informative(out, schema, source)
    return out


def _target(values: pd.Series, name: str, source: str) -> pd.Series:
    missing = values.isna()
    if missing.any():
        rows = list(values.index[missing][:5])
        raise DataError(
            f"{source}: target {name!r} is missing in {int(missing.sum())} rows (first rows {rows}); "
            "every training row needs a 0/1 label: drop or label them"
        )
    text = values.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise DataError(
            f"{source}: target {name!r} must be 0/1; found values {examples} "
            f"(e.g. row {int(values.index[bad][0])}): map them to 0 (non-event) and 1 (event)"
        )
    labels = text.isin(_TRUE).astype(int)
    if labels.nunique() < 2:
        raise DataError(
            f"{source}: target {name!r} has only the value {int(labels.iloc[0])}; a classifier needs "
            "both events (1) and non-events (0)"
        )
    return labels


def _numeric(values: pd.Series, name: str, source: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return _finite_or_missing(values.astype(float))
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        examples = [f"row {i}: {values[i]!r}" for i in values.index[bad][:3]]
        raise DataError(
            f"{source}: numeric column {name!r} has {int(bad.sum())} non-numeric values "
            f"({'; '.join(examples)}); fix the values or declare the column categorical in the schema"
        )
    return _finite_or_missing(parsed.astype(float))


def _finite_or_missing(values: pd.Series) -> pd.Series:
    return values.where(~np.isinf(values), np.nan)


def _categorical(values: pd.Series) -> pd.Series:
    text = values.astype(object).where(values.notna(), np.nan)
    text = text.map(lambda v: v.strip() if isinstance(v, str) else v)
    return text.where(text != "", np.nan).astype(object)


def _check_informative(frame: pd.DataFrame, schema: DatasetSchema, source: str) -> None:
    for column in schema.features:
        present = frame[column].dropna()
        if present.empty:
            raise DataError(
                f"{source}: feature {column!r} is missing in all {len(frame)} rows; the model cannot learn "
                "or impute it: remove it from the schema"
            )
        if present.nunique() == 1:
            logger.warning(
                "%s: feature %r is constant (%r in every non-missing row); it carries no information and "
                "gets no weight, but stays a model input",
                source,
                column,
                present.iloc[0],
            )


def _guess_separator(header: str) -> str | None:
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        return None


def dataset_digest(frame: pd.DataFrame) -> str:
    """sha256 of the frame's canonical CSV bytes (columns in order, '\\n' line ends, repr floats)."""
    data = frame.to_csv(index=False, lineterminator="\n", float_format="%.17g").encode()
    return hashlib.sha256(data).hexdigest()
