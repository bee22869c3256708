"""Training CSVs that would otherwise give a silently bad model: each is an error or a documented handling.

tests/data/test_data_loading.py covers the basic checks (separator, missing feature columns, target
values, non-numeric values, all-missing and constant warnings). This file adds the cases where
pandas alone would guess silently (a column named twice, a row longer than the header, ``inf``),
a missing target column, file encodings, and proves with a real (tiny) training that a column that
was constant in training cannot move scores later.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from modelops.data.loading import DataError, load_dataset
from modelops.data.schema import DatasetSchema

SMALL = DatasetSchema(target="BAD", numeric=("LOAN", "DEBTINC"), categorical=("JOB",))
HEADER = "BAD,LOAN,DEBTINC,JOB\n"


def write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_missing_target_column_is_named(tmp_path):
    path = write(tmp_path, "LOAN,DEBTINC,JOB\n1000,30,Other\n1200,31,Mgr\n")
    with pytest.raises(DataError, match=r"columns \['BAD'\] declared in the schema are missing"):
        load_dataset(path, SMALL)


def test_target_column_under_another_name_is_named_with_what_was_found(tmp_path):
    path = write(tmp_path, "default,LOAN,DEBTINC,JOB\n1,1000,30,Other\n0,1200,31,Mgr\n")
    with pytest.raises(
        DataError, match=r"\['BAD'\] .* missing; found \['default', 'LOAN', 'DEBTINC', 'JOB'\]"
    ):
        load_dataset(path, SMALL)


def test_a_column_named_twice_is_an_error_not_a_guess(tmp_path):
    path = write(tmp_path, "BAD,LOAN,DEBTINC,LOAN,JOB\n1,1000,30,5,Other\n0,1200,31,6,Mgr\n")
    with pytest.raises(DataError, match=r"the header names \['LOAN'\] more than once"):
        load_dataset(path, SMALL)
    # A repeated column the schema does not use is just ignored, like any extra column.
    fine = write(
        tmp_path, "BAD,LOAN,DEBTINC,JOB,note,note\n1,1000,30,Other,a,b\n0,1200,31,Mgr,c,d\n", "ok.csv"
    )
    assert list(load_dataset(fine, SMALL).columns) == ["BAD", "LOAN", "DEBTINC", "JOB"]


def test_a_row_longer_than_the_header_is_an_error_not_a_shift(tmp_path):
    # pandas would make the first column an index and shift every value one column to the left:
    # LOAN would become the target. Here the loan values 0/1 make that shift look valid.
    first = write(tmp_path, HEADER + "1,0,30,Other,extra\n0,1,31,Mgr\n", "first.csv")
    with pytest.raises(DataError, match="first data row has more fields than the header"):
        load_dataset(first, SMALL)
    later = write(tmp_path, HEADER + "1,1000,30,Other\n0,1200,31,Mgr,extra\n", "later.csv")
    with pytest.raises(DataError, match=r"Expected 4 fields in line 3, saw 5"):
        load_dataset(later, SMALL)


def test_short_rows_are_missing_values(tmp_path):
    """Documented: a row with fewer fields has missing values at the end (NaN / missing category)."""
    path = write(tmp_path, HEADER + "1,1000\n0,1200,31,Mgr\n1,900,29,Other\n")
    frame = load_dataset(path, SMALL)
    assert np.isnan(frame["DEBTINC"].iloc[0]) and frame["JOB"].isna().iloc[0]


def test_infinity_is_missing_and_an_all_infinite_column_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "1,inf,30,Other\n0,1200,-inf,Mgr\n1,900,29,Other\n")
    frame = load_dataset(path, SMALL)
    assert frame["LOAN"].isna().tolist() == [True, False, False]
    assert frame["DEBTINC"].isna().tolist() == [False, True, False]
    path = write(tmp_path, HEADER + "1,inf,30,Other\n0,-inf,31,Mgr\n", "allinf.csv")
    with pytest.raises(DataError, match="feature 'LOAN' is missing in all 2 rows"):
        load_dataset(path, SMALL)


@pytest.mark.parametrize(
    ("text", "separator"),
    [
        ("BAD\tLOAN\tDEBTINC\tJOB\n1\t1000\t30\tOther\n0\t1200\t31\tMgr\n", "\t"),
        ("BAD|LOAN|DEBTINC|JOB\n1|1000|30|Other\n0|1200|31|Mgr\n", "|"),
    ],
    ids=["tab", "pipe"],
)
def test_other_wrong_separators_are_named(tmp_path, text, separator):
    with pytest.raises(DataError, match=re.escape(f"separator is probably {separator!r}")):
        load_dataset(write(tmp_path, text), SMALL)


def test_decimal_comma_is_a_non_numeric_value_with_its_row(tmp_path):
    semicolon = DatasetSchema("BAD", ("LOAN", "DEBTINC"), ("JOB",), separator=";")
    path = write(tmp_path, "BAD;LOAN;DEBTINC;JOB\n1;1000;30,5;Other\n0;1200;31;Mgr\n")
    with pytest.raises(
        DataError, match=r"numeric column 'DEBTINC' has 1 non-numeric values \(row 0: '30,5'\)"
    ):
        load_dataset(path, semicolon)


def test_encodings(tmp_path):
    bom = write(tmp_path, "\ufeff" + HEADER + "1,1000,30,Other\n0,1200,31,Mgr\n", "bom.csv")
    assert list(load_dataset(bom, SMALL).columns)[0] == "BAD"  # Excel's UTF-8 BOM is fine
    latin1 = write(tmp_path, (HEADER + "1,1000,30,Caf\xe9\n0,1200,31,Mgr\n").encode("latin-1"), "latin1.csv")
    with pytest.raises(DataError, match=r"cannot parse as CSV .*'utf-8' codec can't decode"):
        load_dataset(latin1, SMALL)


def test_constant_column_is_warned_and_cannot_move_scores_after_training(tmp_path, caplog):
    """The column's weight was never trained (its input was always 0): it must stay without effect."""
    from modelops.config import TrainingSettings
    from modelops.data.generator import generate_training
    from modelops.data.schema import HMEQ_SCHEMA
    from modelops.model.network import fit_model

    frame = generate_training(rows=1500, seed=4)
    frame["DEROG"] = 0.0
    path = tmp_path / "constant.csv"
    frame.to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="modelops.data.loading"):
        loaded = load_dataset(path, HMEQ_SCHEMA)
    assert any("'DEROG' is constant" in r.getMessage() for r in caplog.records)

    settings = TrainingSettings(epochs=3, batch_size=64, hidden_units=(8,), train_rows=1500)
    fitted = fit_model(loaded, HMEQ_SCHEMA, settings, progress=None)
    spec = {s.name: s for s in fitted.spec.numeric}
    assert spec["DEROG"].constant and not spec["DELINQ"].constant
    probe = loaded.head(100).copy()
    base = fitted.score(probe)
    assert np.isfinite(base).all()
    for value in (1.0, 4.0, 50.0, np.nan):
        changed = probe.assign(DEROG=value)
        np.testing.assert_allclose(fitted.score(changed), base, atol=1e-7)
    # ...while an informative column still moves them.
    assert np.abs(fitted.score(probe.assign(DELINQ=8.0)) - base).max() > 1e-3
