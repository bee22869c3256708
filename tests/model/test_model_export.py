"""The exported SavedModel: TF Serving layout, named signature, raw records scored in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelops.config import TrainingSettings
from modelops.data.generator import generate_period, generate_training
from modelops.data.schema import HMEQ_SCHEMA

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from modelops.model.export import export_saved_model
    from modelops.model.network import fit_model

    fitted = fit_model(
        generate_training(rows=3000, seed=3),
        HMEQ_SCHEMA,
        TrainingSettings(epochs=5, batch_size=128),
        progress=None,
    )
    base = tmp_path_factory.mktemp("models")
    folder = export_saved_model(fitted, base, "hmeq-risk", 3)
    return fitted, base, folder


def test_tf_serving_layout(exported):
    _, base, folder = exported
    assert folder == base / "hmeq-risk" / "3"
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "variables" / "variables.index").is_file()


def test_saved_model_cli_shows_named_inputs_and_score(exported):
    _, _, folder = exported
    cli = VENV_BIN / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"saved_model_cli not found beside {sys.executable}")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(folder), "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-1000:]
    text = shown.stdout
    for name in HMEQ_SCHEMA.numeric:
        assert re.search(rf"inputs\['{name}'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1\)", text), name
    for name in HMEQ_SCHEMA.categorical:
        assert re.search(rf"inputs\['{name}'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", text), name
    assert re.search(r"outputs\['score'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1\)", text)
    assert len(re.findall(r"inputs\['", text)) == len(HMEQ_SCHEMA.features)
    everything = subprocess.run(
        [str(cli), "show", "--dir", str(folder), "--all"], capture_output=True, text=True, timeout=120
    )
    assert everything.returncode == 0 and "signature_def['serving_default']" in everything.stdout


def test_fresh_process_scores_raw_records_like_the_trained_model(exported, tmp_path):
    fitted, _, folder = exported
    records = generate_period(2, rows=300, seed=11)
    records.loc[0, list(HMEQ_SCHEMA.features)] = np.nan  # every field missing
    records.loc[1, "JOB"] = "Astronaut"  # out of vocabulary
    records.to_csv(tmp_path / "records.csv", index=False)
    expected = fitted.score(records)
    script = (
        "import json, sys, pandas as pd, tensorflow as tf\n"
        "loaded = tf.saved_model.load(sys.argv[1])\n"
        "signature = loaded.signatures['serving_default']\n"
        "frame = pd.read_csv(sys.argv[2])\n"
        "numeric = " + repr(list(HMEQ_SCHEMA.numeric)) + "\n"
        "inputs = {c: tf.constant(frame[c].astype('float32').to_numpy()) for c in numeric}\n"
        "for c in " + repr(list(HMEQ_SCHEMA.categorical)) + ":\n"
        "    inputs[c] = tf.constant(frame[c].fillna('').astype(str).to_numpy())\n"
        "print(json.dumps(signature(**inputs)['score'].numpy().tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "records.csv")],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    scores = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    assert scores.shape == (300,) and ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_score_frame_helper_accepts_folder_or_signature(exported):
    from modelops.model.export import load_signature, score_frame

    fitted, _, folder = exported
    records = generate_period(1, rows=100, seed=12)
    by_folder = score_frame(folder, records, HMEQ_SCHEMA)
    signature = load_signature(folder)
    by_signature = score_frame(signature, records, HMEQ_SCHEMA, batch_size=7)
    np.testing.assert_allclose(by_folder, fitted.score(records), atol=1e-5)
    np.testing.assert_allclose(by_signature, by_folder, atol=1e-6)
    with pytest.raises(ValueError, match=r"lack the model's input columns \['DEBTINC'\]"):
        score_frame(signature, records.drop(columns=["DEBTINC"]), HMEQ_SCHEMA)
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        load_signature(folder.parent)
