"""Synthetic home-equity loan data with the HMEQ schema, a training set and drifting production periods.

Calibrated on the seed's real data (shared/data/hmeq, figures in its README): ~20 % defaults,
log-normal loan/mortgage/property values, zero-inflated derogatory/delinquency/inquiry counts and
the real missing-value rates (DEBTINC ~21 %, and mostly missing for defaulters, as in HMEQ).

Production periods drift the way the seed's four quarters did, scaled by ``drift``:

* the event rate climbs (≈21 % → 28 % over four periods at ``drift=1``);
* loan sizes shrink (mean LOAN ≈ 17.6k → 13.4k);
* the concept shifts: a house-price shock makes risks the training data never showed matter
  (little equity, i.e. a high MORTDUE/VALUE, short employment, office and professional jobs, which
  used to be the safe ones), the recorded classic risk factors weigh less, a small unobserved driver
  appears, and DEBTINC's missingness stops flagging defaulters. A model fixed at training time loses
  separation period after period (KS < 0.3 by period 4), while a model retrained on recent periods
  can learn the new risk from the same columns and recovers (the loop this project automates).

``drift=0`` gives periods drawn from the training distribution. Everything is deterministic in
``seed``; the training set and each period use independent random streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modelops.data.schema import HMEQ_CATEGORIES, HMEQ_SCHEMA

COLUMNS: tuple[str, ...] = (
    "BAD", "LOAN", "MORTDUE", "VALUE", "REASON", "JOB",
    "YOJ", "DEROG", "DELINQ", "CLAGE", "NINQ", "CLNO", "DEBTINC",
)  # fmt: skip
assert set(COLUMNS) == {HMEQ_SCHEMA.target, *HMEQ_SCHEMA.features}

# Share of values missing completely at random, per column (measured on raw_data.csv).
MISSING_RATES: dict[str, float] = {
    "MORTDUE": 0.087, "VALUE": 0.019, "REASON": 0.042, "JOB": 0.047, "YOJ": 0.086,
    "DEROG": 0.119, "DELINQ": 0.097, "CLAGE": 0.052, "NINQ": 0.086, "CLNO": 0.037,
}  # fmt: skip
# DEBTINC is missing not at random: far more often for defaulters (62 % of its missing rows are
# defaults in HMEQ). P(missing | BAD) below give ~21 % missing overall at a 20 % event rate.
DEBTINC_MISSING_GIVEN_BAD = {0: 0.13, 1: 0.55}

JOB_SHARES = {"Other": 0.42, "ProfExe": 0.225, "Office": 0.167, "Mgr": 0.135, "Self": 0.034, "Sales": 0.019}
JOB_RISK = {"Other": 0.15, "ProfExe": -0.25, "Office": -0.55, "Mgr": 0.1, "Self": 0.45, "Sales": 0.8}
# Under the production shock office and professional jobs become the risky ones.
SHOCK_JOB_RISK = {"Other": -0.3, "ProfExe": 0.9, "Office": 1.2, "Mgr": 0.4, "Self": -0.4, "Sales": -0.4}
PERIODS_FOR_FULL_DRIFT = 4  # the seed's four quarters


@dataclass(frozen=True)
class _Regime:
    """What changes between training and a production period (0 = training, 1 = four quarters)."""

    strength: float

    @property
    def loan_log_shift(self) -> float:
        return -0.082 * PERIODS_FOR_FULL_DRIFT * self.strength  # mean LOAN x0.72 at full drift

    @property
    def observed_weight(self) -> float:
        return max(0.0, 1.0 - 0.5 * self.strength**1.5)  # how much the recorded risk factors still matter

    @property
    def emerging_weight(self) -> float:
        return 0.9 * self.strength**1.5  # a recorded risk the training data never showed; grows faster late

    @property
    def hidden_weight(self) -> float:
        return 0.5 * self.strength**1.5  # the unobserved driver's weight on the default logit

    @property
    def debtinc_missing(self) -> dict[int, float]:
        fade = min(self.strength, 1.0)  # missing DEBTINC stops flagging defaulters
        return {
            0: DEBTINC_MISSING_GIVEN_BAD[0] + fade * 0.09,
            1: DEBTINC_MISSING_GIVEN_BAD[1] - fade * 0.30,
        }

    @property
    def target_event_rate(self) -> float:
        return 0.20 + 0.02 * 4 * self.strength  # 20 % → 28 %


def generate_training(rows: int = 20000, seed: int = 42) -> pd.DataFrame:
    """A training set of ``rows`` loans with the HMEQ columns (target ``BAD`` first)."""
    return _generate(rows, np.random.default_rng([seed, 0]), _Regime(0.0))


def generate_period(period: int, rows: int = 5000, seed: int = 42, drift: float = 1.0) -> pd.DataFrame:
    """Production period ``period`` (1, 2, …): drifted by ``drift * period / 4`` of the seed's change."""
    if not isinstance(period, int | np.integer) or period < 1:
        raise ValueError(f"period must be an integer >= 1, got {period!r}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0 (0 = no drift, 1 = the seed's four quarters), got {drift!r}")
    regime = _Regime(drift * period / PERIODS_FOR_FULL_DRIFT)
    return _generate(rows, np.random.default_rng([seed, int(period)]), regime)


def _generate(rows: int, rng: np.random.Generator, regime: _Regime) -> pd.DataFrame:
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    n = rows
    value = np.exp(rng.normal(np.log(89_000), 0.48, n))
    mortdue = value * np.clip(rng.normal(0.7, 0.22, n), 0.05, 1.6)
    loan = np.exp(np.log(16_000) + regime.loan_log_shift + 0.3 * (np.log(value) - np.log(89_000))
                  + rng.normal(0, 0.5, n))  # fmt: skip
    loan = np.clip(np.round(loan, -2), 1_100, 89_900)
    reason = np.where(rng.random(n) < 0.69, "DebtCon", "HomeImp")
    job = rng.choice(
        list(JOB_SHARES), size=n, p=np.array(list(JOB_SHARES.values())) / sum(JOB_SHARES.values())
    )
    yoj = np.clip(np.round(rng.gamma(1.4, 6.4, n)), 0, 41)
    derog = _zero_inflated_poisson(rng, n, zero_share=0.76, mean_when_positive=1.1)
    delinq = _zero_inflated_poisson(rng, n, zero_share=0.70, mean_when_positive=1.4)
    ninq = _zero_inflated_poisson(rng, n, zero_share=0.42, mean_when_positive=1.9)
    clage = np.clip(rng.gamma(4.4, 41.0, n), 0, 1_170)
    clno = np.clip(rng.negative_binomial(5, 5 / (5 + 21.3), n), 0, 71).astype(float)
    debtinc = np.clip(rng.normal(33.8, 7.5, n) + 0.4 * (np.log(loan) - np.log(16_000)) * 10, 0.5, 200)

    observed_risk = (
        0.62 * np.minimum(derog, 4)
        + 0.55 * np.minimum(delinq, 5)
        + 0.11 * np.minimum(ninq, 6)
        + 0.085 * (debtinc - 33.8)
        - 0.0055 * (clage - 180)
        - 0.02 * (yoj - 9)
        - 0.012 * (clno - 21)
        - 0.25 * (np.log(loan) - np.log(16_000))
        + 0.2 * (reason == "HomeImp")
        + np.vectorize(JOB_RISK.get)(job)
    )
    # The shock is recorded by the data but was harmless before: a fall in house prices hits
    # borrowers with little equity (high MORTDUE/VALUE), short employment and office jobs.
    loan_to_value = mortdue / value
    emerging_risk = (
        2.2 * (loan_to_value - 0.7) / 0.22 - 0.9 * (yoj - 9) / 7.5 + np.vectorize(SHOCK_JOB_RISK.get)(job)
    )
    hidden_driver = rng.normal(0, 1, n)  # no column records it
    logit = (
        regime.observed_weight * observed_risk
        + regime.emerging_weight * emerging_risk
        + regime.hidden_weight * hidden_driver
    )
    intercept = _intercept_for_rate(logit, regime.target_event_rate)
    bad = (rng.random(n) < 1 / (1 + np.exp(-(logit + intercept)))).astype(int)

    frame = pd.DataFrame(
        {
            "BAD": bad,
            "LOAN": loan.astype(float),
            "MORTDUE": np.round(mortdue),
            "VALUE": np.round(value),
            "REASON": pd.Series(reason, dtype=object),
            "JOB": pd.Series(job, dtype=object),
            "YOJ": yoj,
            "DEROG": derog,
            "DELINQ": delinq,
            "CLAGE": np.round(clage, 4),
            "NINQ": ninq,
            "CLNO": clno,
            "DEBTINC": np.round(debtinc, 4),
        },
        columns=list(COLUMNS),
    )
    for column, rate in MISSING_RATES.items():
        frame.loc[rng.random(n) < rate, column] = np.nan
    missing_given_bad = regime.debtinc_missing
    debtinc_missing = rng.random(n) < np.where(bad == 1, missing_given_bad[1], missing_given_bad[0])
    frame.loc[debtinc_missing, "DEBTINC"] = np.nan
    for column, categories in HMEQ_CATEGORIES.items():
        assert set(frame[column].dropna()) <= set(categories)
    return frame


def _zero_inflated_poisson(rng: np.random.Generator, n: int, zero_share: float, mean_when_positive: float):
    positive = 1 + rng.poisson(mean_when_positive - 1 if mean_when_positive > 1 else 0.0, n)
    return np.where(rng.random(n) < zero_share, 0, positive).astype(float)


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """The intercept whose expected event rate is ``rate`` (bisection on the mean probability)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(logit + middle)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2
