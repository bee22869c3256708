"""Loading a training CSV against its schema: what is accepted, and the errors for what is not."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from modelops.data.generator import generate_training
from modelops.data.loading import DataError, dataset_digest, load_dataset
from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema, SchemaError

HMEQ_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "hmeq"
SMALL = DatasetSchema(target="BAD", numeric=("LOAN", "DEBTINC"), categorical=("JOB",))


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_generated_csv_round_trips(tmp_path):
    frame = generate_training(rows=400, seed=1)
    frame.to_csv(tmp_path / "train.csv", index=False)
    loaded = load_dataset(tmp_path / "train.csv", HMEQ_SCHEMA)
    assert list(loaded.columns) == list(frame.columns)
    assert loaded["BAD"].tolist() == frame["BAD"].tolist()
    assert loaded["DEBTINC"].isna().sum() == frame["DEBTINC"].isna().sum()
    assert loaded["JOB"].isna().sum() == frame["JOB"].isna().sum()
    np.testing.assert_allclose(loaded["LOAN"], frame["LOAN"])
    assert dataset_digest(loaded) == dataset_digest(frame)


def test_wrong_separator_is_named(tmp_path):
    path = write(tmp_path, "BAD;LOAN;DEBTINC;JOB\n1;1100;;Other\n0;2000;30.5;Mgr\n")
    with pytest.raises(
        DataError, match=r"one single column: its separator is probably ';'.*separator: \";\""
    ):
        load_dataset(path, SMALL)
    fixed = DatasetSchema(target="BAD", numeric=("LOAN", "DEBTINC"), categorical=("JOB",), separator=";")
    assert len(load_dataset(path, fixed)) == 2


def test_missing_columns_are_listed_with_the_columns_found(tmp_path):
    path = write(tmp_path, "BAD,LOAN,JOBS\n1,1100,Other\n0,2000,Mgr\n")
    with pytest.raises(
        DataError, match=r"columns \['DEBTINC', 'JOB'\] .* missing; found \['BAD', 'LOAN', 'JOBS'\]"
    ):
        load_dataset(path, SMALL)


@pytest.mark.parametrize(
    ("target_values", "message"),
    [
        (["1", "2", "0"], r"target 'BAD' must be 0/1; found values \['2'\]"),
        (["1", "", "0"], r"target 'BAD' is missing in 1 rows"),
        (["yes", "maybe", "0"], r"must be 0/1; found values \['maybe'\]"),
        (["0", "0", "0"], r"has only the value 0"),
    ],
)
def test_target_must_be_zero_one(tmp_path, target_values, message):
    rows = "\n".join(f"{t},1000,30,Other" for t in target_values)
    path = write(tmp_path, f"BAD,LOAN,DEBTINC,JOB\n{rows}\n")
    with pytest.raises(DataError, match=message):
        load_dataset(path, SMALL)


def test_boolean_target_words_are_accepted(tmp_path):
    path = write(tmp_path, "BAD,LOAN,DEBTINC,JOB\ntrue,1000,30,Other\nFalse,1200,31,Mgr\n1,900,,\n")
    assert load_dataset(path, SMALL)["BAD"].tolist() == [1, 0, 1]


def test_non_numeric_values_in_a_numeric_column(tmp_path):
    path = write(tmp_path, "BAD,LOAN,DEBTINC,JOB\n1,1000,30,Other\n0,12k,31,Mgr\n")
    with pytest.raises(DataError, match=r"numeric column 'LOAN' has 1 non-numeric values \(row 1: '12k'\)"):
        load_dataset(path, SMALL)


def test_all_missing_feature_is_an_error(tmp_path):
    path = write(tmp_path, "BAD,LOAN,DEBTINC,JOB\n1,1000,,Other\n0,1200,,Mgr\n")
    with pytest.raises(
        DataError, match=r"feature 'DEBTINC' is missing in all 2 rows.*remove it from the schema"
    ):
        load_dataset(path, SMALL)


def test_constant_feature_is_kept_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "BAD,LOAN,DEBTINC,JOB\n1,1000,30,Other\n0,1200,30,Mgr\n0,1300,,Mgr\n")
    with caplog.at_level(logging.WARNING, logger="modelops.data.loading"):
        frame = load_dataset(path, SMALL)
    assert "DEBTINC" in frame.columns
    assert any("'DEBTINC' is constant" in r.getMessage() for r in caplog.records)


def test_categories_are_stripped_and_blank_is_missing(tmp_path):
    path = write(tmp_path, 'BAD,LOAN,DEBTINC,JOB,EXTRA\n1,1000,30," Mgr ",x\n0,1200,31,"",y\n1,900,32,,z\n')
    frame = load_dataset(path, SMALL)
    assert "EXTRA" not in frame.columns
    assert frame["JOB"].iloc[0] == "Mgr"
    assert frame["JOB"].iloc[1:].isna().all()


def test_absent_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv", SMALL)
    with pytest.raises(DataError, match="empty"):
        load_dataset(write(tmp_path, ""), SMALL)
    with pytest.raises(DataError, match="no data rows"):
        load_dataset(write(tmp_path, "BAD,LOAN,DEBTINC,JOB\n"), SMALL)
    assert issubclass(DataError, SchemaError)  # the CLI prints both as one line


def test_digest_changes_with_the_data():
    frame = generate_training(rows=300, seed=2)
    changed = frame.copy()
    changed.loc[0, "LOAN"] += 100
    assert dataset_digest(frame) == dataset_digest(frame.copy())
    assert dataset_digest(frame) != dataset_digest(changed)


@pytest.mark.skipif(not (HMEQ_DIR / "raw_data.csv").exists(), reason=f"no real HMEQ data at {HMEQ_DIR}")
def test_real_hmeq_raw_and_period_files_load(tmp_path):
    raw = load_dataset(HMEQ_DIR / "raw_data.csv", HMEQ_SCHEMA)
    assert len(raw) == 5960 and raw["BAD"].mean() == pytest.approx(0.1995, abs=0.001)
    assert raw["DEBTINC"].isna().mean() == pytest.approx(0.213, abs=0.001)
    assert set(raw["JOB"].dropna()) == {"Other", "Sales", "ProfExe", "Office", "Mgr", "Self"}
    with pytest.raises(DataError, match="separator is probably ';'"):
        load_dataset(HMEQ_DIR / "perf_1_q1.csv", HMEQ_SCHEMA)
    semicolon = DatasetSchema(HMEQ_SCHEMA.target, HMEQ_SCHEMA.numeric, HMEQ_SCHEMA.categorical, separator=";")
    period = load_dataset(HMEQ_DIR / "perf_1_q1.csv", semicolon)
    assert "P_BAD1" not in period.columns and period["BAD"].mean() == pytest.approx(0.211, abs=0.001)
