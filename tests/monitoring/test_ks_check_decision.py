"""KS gateway, drift figures and the binary-COPY window reader on known data (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from support.scoring_log import insert_scores, labelled_sample

from modelops.config import WindowSettings
from modelops.monitoring.drift import drift_report
from modelops.monitoring.ks_decision import decide_ks
from modelops.monitoring.report import artifact_key


def test_ks_equals_scipy_on_known_scores():
    scores, labels = labelled_sample(5000, 1.5)
    decision = decide_ks(scores, labels, threshold=0.3, min_sample=200)
    expected = ks_2samp(scores[labels == 1], scores[labels == 0]).statistic
    assert decision.ks == pytest.approx(expected, abs=1e-12)
    assert decision.status == ("ok" if expected >= 0.3 else "degraded")
    assert 0.5 < decision.auc < 1


def test_degraded_below_threshold_and_never_on_small_or_one_class_samples():
    weak_scores, weak_labels = labelled_sample(5000, 0.2)
    assert decide_ks(weak_scores, weak_labels, 0.3, 200).status == "degraded"
    few = decide_ks(weak_scores[:50], weak_labels[:50], 0.99, 200)
    assert few.status == "insufficient_data" and few.ks is None and "min_sample=200" in few.reason
    one_class = decide_ks(weak_scores, np.zeros_like(weak_labels), 0.99, 200)
    assert one_class.status == "insufficient_data" and "no events" in one_class.reason


def test_drift_report_flags_shifted_feature_and_scores():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {"LOAN": rng.normal(20000, 5000, 4000), "JOB": rng.choice(["Mgr", "Other"], 4000)}
    )
    current = pd.DataFrame({"LOAN": rng.normal(12000, 5000, 2000), "JOB": rng.choice(["Mgr", "Other"], 2000)})
    report = drift_report(
        rng.beta(2, 5, 4000), rng.beta(4, 3, 2000), reference, current, psi_limit=0.25, score_ks_limit=0.2
    )
    assert report.drifted_features == ("LOAN",) and report.psi["JOB"] < 0.05
    assert report.score_drift and report.detected
    calm = drift_report(rng.beta(2, 5, 4000), rng.beta(2, 5, 2000), reference, reference.iloc[:2000])
    assert not calm.detected


def test_report_helpers():
    assert artifact_key("hmeq-risk-v2") == "ks-hmeq-risk-v2"
    assert artifact_key("hmeq-risk-v2", "approval") == "approval-hmeq-risk-v2"
    # names that only fit after a change keep their own key: one model's artifacts never mix with another's
    fitted = {artifact_key(name) for name in ("HMEQ_Risk.v2", "hmeq_risk.v2", "hmeq-risk-v2", "hmeq.risk.v2")}
    assert len(fitted) == 4 and all(key.startswith("ks-hmeq-risk-v2") for key in fitted)


def test_window_reader_matches_scipy_and_reads_the_latest_records(scoring_db):
    from modelops.integrations.performance_store import read_labelled_window, read_window_scores

    old_scores, old_labels = labelled_sample(300, 0.0, seed=5)
    insert_scores(scoring_db, "m", "1", old_scores, old_labels, start=datetime.now(UTC) - timedelta(days=2))
    scores, labels = labelled_sample(1000, 1.5, seed=6)
    insert_scores(scoring_db, "m", "1", scores, labels, label_table_share=0.4)
    insert_scores(scoring_db, "m", "1", scores[:100], [None] * 100)  # unlabelled: not in the KS window
    insert_scores(scoring_db, "m", "2", old_scores, old_labels)  # another version: never mixed in

    window = read_labelled_window(scoring_db, "m", "1", WindowSettings(kind="count", size=1000))
    assert window.n == 1000 and window.n_events == int(labels.sum())
    assert sorted(window.scores) == sorted(scores)
    ks = decide_ks(window.scores, window.labels, 0.3, 200).ks
    assert ks == pytest.approx(ks_2samp(scores[labels == 1], scores[labels == 0]).statistic, abs=1e-12)
    assert window.start < window.end <= datetime.now(UTC)

    recent = read_labelled_window(scoring_db, "m", "1", WindowSettings(kind="time", size=60))
    assert recent.n == 1000  # the two-day-old rows are outside the last hour
    assert len(read_window_scores(scoring_db, "m", "1", WindowSettings(kind="time", size=60))) == 1100
    empty = read_labelled_window(scoring_db, "m", "9", WindowSettings(kind="count", size=10))
    assert empty.n == 0 and empty.start is None


def test_store_and_read_checks_and_approvals(scoring_db):
    import psycopg2

    from modelops.approval import ApprovalDecision, ApprovalEvidence, ModelEvidence
    from modelops.integrations.performance_store import read_recent_checks, record_approval, store_ks_check

    for ks in (0.45, 0.28):
        store_ks_check(
            scoring_db,
            model_name="m",
            model_version="1",
            status="ok" if ks > 0.3 else "degraded",
            ks=ks,
            auc=0.8,
            threshold=0.3,
            n=500,
            n_events=120,
            window_start=None,
            window_end=None,
            details={"reason": "test"},
        )
    trend = read_recent_checks(scoring_db, "m")
    assert [row["ks"] for row in trend] == [0.45, 0.28] and trend[-1]["status"] == "degraded"

    decision = ApprovalDecision(
        model_name="m",
        model_version="2",
        approved=True,
        reason="approved",
        reviewer="alice",
        image_tag="v2",
        comment="ok",
        attempts=2,
        invalid_answers=("bad tag",),
        flow_run_id="abc",
    )
    evidence = ApprovalEvidence(candidate=ModelEvidence(version="2", training_metrics={"ks": 0.5}))
    row_id = record_approval(scoring_db, decision, evidence)
    with psycopg2.connect(scoring_db) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT approved, reviewer, image_tag, evidence FROM modelops.approvals WHERE id = %s", (row_id,)
        )
        approved, reviewer, tag, stored = cursor.fetchone()
    assert (approved, reviewer, tag) == (True, "alice", "v2")
    assert stored["attempts"] == 2 and stored["candidate"]["training_metrics"] == {"ks": 0.5}


@pytest.mark.parametrize("rounding", [None, 3, 50])
def test_one_sort_ks_and_auc_equal_scipy_and_rank_sum_auc(rounding):
    from modelops.model.metrics import auc
    from modelops.monitoring.ks_decision import ks_and_auc

    scores, labels = labelled_sample(4000, 1.0, seed=rounding or 0)
    if rounding:
        scores = np.round(scores * rounding) / rounding  # many ties
    ks, area = ks_and_auc(scores, labels)
    assert ks == pytest.approx(ks_2samp(scores[labels == 1], scores[labels == 0]).statistic, abs=1e-12)
    assert area == pytest.approx(auc(scores, labels), abs=1e-12)


def test_count_window_walks_back_past_unlabelled_records(scoring_db):
    """Only ~10 % of the newest records carry a label: the reader looks further back until it has N."""
    import psycopg2

    from modelops.integrations.performance_store import read_labelled_window

    rng = np.random.default_rng(8)
    scores, labels = labelled_sample(6000, 1.0, seed=9)
    known = [int(y) if rng.random() < 0.1 else None for y in labels]
    insert_scores(scoring_db, "m", "1", scores, known, label_table_share=0.5)
    window = read_labelled_window(scoring_db, "m", "1", WindowSettings(kind="count", size=300))
    with psycopg2.connect(scoring_db) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT score FROM modelops.labelled_scores WHERE model_name = 'm' AND model_version = '1'"
            " ORDER BY scored_at DESC LIMIT 300"
        )
        expected = sorted(r[0] for r in cursor.fetchall())
    assert window.n == 300 and sorted(window.scores) == expected
    everything = read_labelled_window(scoring_db, "m", "1", WindowSettings(kind="count", size=100000))
    assert everything.n == sum(y is not None for y in known)
