"""Data expectations on the generator: schema, event rate, missing values, skew, determinism, drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelops.data.generator import COLUMNS, MISSING_RATES, generate_period, generate_training
from modelops.data.schema import HMEQ_CATEGORIES, HMEQ_SCHEMA

HMEQ_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "hmeq"


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return generate_training(rows=20000, seed=42)


@pytest.fixture(scope="module")
def periods() -> list[pd.DataFrame]:
    return [generate_period(p, rows=5000, seed=42) for p in range(1, 5)]


def test_columns_types_and_categories(training):
    assert tuple(training.columns) == COLUMNS
    assert training.columns[0] == HMEQ_SCHEMA.target
    assert set(training.columns) == {HMEQ_SCHEMA.target, *HMEQ_SCHEMA.features}
    assert set(training["BAD"].unique()) == {0, 1}
    for column in HMEQ_SCHEMA.numeric:
        assert pd.api.types.is_float_dtype(training[column]), column
    for column, categories in HMEQ_CATEGORIES.items():
        present = set(training[column].dropna())
        assert present == set(categories), column
        assert training[column].isna().any()  # missing categories are NaN, not "" or "nan"


def test_event_rate_near_twenty_percent(training):
    assert training["BAD"].mean() == pytest.approx(0.20, abs=0.015)


def test_missing_rates_match_hmeq(training):
    rates = training.isna().mean()
    for column, expected in MISSING_RATES.items():
        assert rates[column] == pytest.approx(expected, abs=0.01), column
    assert rates["DEBTINC"] == pytest.approx(0.21, abs=0.02)
    assert rates["LOAN"] == 0 and rates["BAD"] == 0
    # DEBTINC is missing far more often for defaulters, as in HMEQ (62 % of missing rows default)
    assert training.loc[training["DEBTINC"].isna(), "BAD"].mean() > 0.45


def test_skew_and_zero_inflated_counts(training):
    for column in ("LOAN", "MORTDUE", "VALUE"):
        values = training[column].dropna()
        assert values.min() > 0 and values.skew() > 1.0, column  # log-normal-ish: long right tail
        assert values.mean() > values.median(), column
    for column, zero_share in (("DEROG", 0.76), ("DELINQ", 0.70), ("NINQ", 0.42)):
        values = training[column].dropna()
        assert (values == 0).mean() == pytest.approx(zero_share, abs=0.03), column
        assert (values == values.round()).all() and values.max() >= 3, column
    assert training["LOAN"].mean() == pytest.approx(18_600, rel=0.1)
    assert training["DEBTINC"].mean() == pytest.approx(33.8, rel=0.1)


@pytest.mark.skipif(not (HMEQ_DIR / "raw_data.csv").exists(), reason=f"no real HMEQ data at {HMEQ_DIR}")
def test_close_to_the_real_hmeq_figures(training):
    real = pd.read_csv(HMEQ_DIR / "raw_data.csv")
    assert training["BAD"].mean() == pytest.approx(real["BAD"].mean(), abs=0.015)
    for column in HMEQ_SCHEMA.features:
        assert training[column].isna().mean() == pytest.approx(real[column].isna().mean(), abs=0.02), column
    for column in ("LOAN", "VALUE", "CLAGE", "CLNO", "YOJ"):
        assert training[column].median() == pytest.approx(real[column].median(), rel=0.15), column


def test_deterministic_with_a_seed():
    pd.testing.assert_frame_equal(generate_training(500, seed=3), generate_training(500, seed=3))
    pd.testing.assert_frame_equal(generate_period(2, 500, seed=3), generate_period(2, 500, seed=3))
    assert not generate_training(500, seed=3).equals(generate_training(500, seed=4))
    assert not generate_period(1, 500, seed=3).equals(generate_period(2, 500, seed=3))


def test_drift_raises_event_rate_and_shrinks_loans(training, periods):
    rates = [p["BAD"].mean() for p in periods]
    loans = [p["LOAN"].mean() for p in periods]
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False)), rates
    assert all(b < a for a, b in zip(loans, loans[1:], strict=False)), loans
    assert rates[0] == pytest.approx(0.22, abs=0.02) and rates[-1] == pytest.approx(0.28, abs=0.02)
    assert loans[-1] / training["LOAN"].mean() == pytest.approx(0.72, abs=0.05)  # seed: 18.6k → 13.4k


def test_drift_strength_is_controllable(training):
    calm = generate_period(4, rows=5000, seed=42, drift=0.0)
    assert calm["BAD"].mean() == pytest.approx(training["BAD"].mean(), abs=0.015)
    assert calm["LOAN"].mean() == pytest.approx(training["LOAN"].mean(), rel=0.05)
    half = generate_period(4, rows=5000, seed=42, drift=0.5)
    full = generate_period(4, rows=5000, seed=42, drift=1.0)
    assert calm["BAD"].mean() < half["BAD"].mean() < full["BAD"].mean()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="period must be an integer >= 1"):
        generate_period(0)
    with pytest.raises(ValueError, match="drift must be >= 0"):
        generate_period(1, drift=-1)
    with pytest.raises(ValueError, match="rows must be >= 1"):
        generate_training(0)


def test_fixed_logistic_model_loses_ks_period_after_period(training, periods):
    """A quick fixed model (logistic regression); the project's own model is checked in test_model_*."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    from modelops.model.metrics import ks_statistic

    def matrix(frame: pd.DataFrame, means: pd.Series) -> np.ndarray:
        numeric = frame[list(HMEQ_SCHEMA.numeric)]
        parts = [numeric.fillna(means), numeric.isna().astype(float)]
        parts += [
            pd.get_dummies(frame[c]).reindex(columns=HMEQ_CATEGORIES[c], fill_value=0)
            for c in HMEQ_CATEGORIES
        ]
        return pd.concat(parts, axis=1).to_numpy(dtype=float)

    train, holdout = training.iloc[:16000], training.iloc[16000:]
    means = train[list(HMEQ_SCHEMA.numeric)].mean()
    x = matrix(train, means)
    centre, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = sklearn.LogisticRegression(max_iter=2000).fit((x - centre) / scale, train["BAD"])

    def ks(frame: pd.DataFrame) -> float:
        return ks_statistic(model.predict_proba((matrix(frame, means) - centre) / scale)[:, 1], frame["BAD"])

    assert 0.4 < ks(holdout) < 0.7
    per_period = [ks(p) for p in periods]
    assert all(b < a for a, b in zip(per_period, per_period[1:], strict=False)), per_period
    assert per_period[-1] < 0.3
