"""The serving client turns records into TF Serving instances without pandas: a missing value is what
``pd.isna`` calls missing, whichever library the record's values come from."""

from __future__ import annotations

import datetime
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from modelops.serving.rest_client import ServingClientError, to_instances

VALUES = [
    None,
    math.nan,
    float("inf"),
    0.0,
    -1.5,
    0,
    7,
    True,
    np.nan,
    np.float32("nan"),
    np.float16(2.5),
    np.float64(3.25),
    np.int64(4),
    np.bool_(False),
    np.datetime64("NaT"),
    np.datetime64("2026-12-01"),
    pd.NA,
    pd.NaT,
    pd.Timestamp("2026-12-01"),
    Decimal("NaN"),
    Decimal("1.5"),
    datetime.date(2026, 12, 1),
    "",
    "Mgr",
    "NaN",
    b"x",
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_category_is_missing_exactly_when_pandas_says_so(value):
    (instance,) = to_instances([{"JOB": value}], {"JOB": "DT_STRING"})
    missing = bool(pd.isna(value))
    assert (instance["JOB"] == "") == (missing or str(value) == "")


@pytest.mark.parametrize("value", [v for v in VALUES if not isinstance(v, str | bytes)], ids=repr)
def test_a_number_is_nan_exactly_when_pandas_says_it_is_missing(value):
    try:
        (instance,) = to_instances([{"LOAN": value}], {"LOAN": "DT_FLOAT"})
    except ServingClientError:  # a value that is neither a number nor missing (a date) is refused
        assert not pd.isna(value)
        return
    assert math.isnan(instance["LOAN"]) == bool(pd.isna(value))


def test_a_dataframe_with_missing_values_of_every_kind():
    frame = pd.DataFrame({"LOAN": [1.0, None, np.nan], "JOB": ["Mgr", None, pd.NA]})
    frame["JOB"] = frame["JOB"].astype("string")  # pandas' string dtype: its missing value is pd.NA
    instances = to_instances(frame, {"LOAN": "DT_FLOAT", "JOB": "DT_STRING"})
    assert [row["JOB"] for row in instances] == ["Mgr", "", ""]
    assert instances[0]["LOAN"] == 1.0 and all(math.isnan(row["LOAN"]) for row in instances[1:])
