"""Prebuild's last gate: load a SavedModel in a fresh process, check its signature, score records.

A fresh process is the point: it proves the artifact carries everything it needs (preprocessing,
vocabularies, variables) without this process's Python objects. Run as
``python -m modelops.pipeline.saved_model_check <model_dir>`` with the schema and sample records as
JSON on stdin; it answers with one JSON document on stdout.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelops.data.schema import DatasetSchema
from modelops.serving.tensorflow_import import import_tensorflow

_NUMERIC_DTYPES = {"DT_FLOAT", "DT_DOUBLE", "float32", "float64"}
_STRING_DTYPES = {"DT_STRING", "string"}


class SavedModelCheckError(RuntimeError):
    """The SavedModel cannot serve: missing, broken, wrong signature, or bad scores."""


@dataclass(frozen=True)
class SavedModelReport:
    inputs: dict[str, str]  # input name -> dtype
    outputs: dict[str, str]
    scores: list[float]


def check_saved_model(
    model_dir: Path, schema: DatasetSchema, records: list[dict[str, Any]], timeout_s: float = 120.0
) -> SavedModelReport:
    """Load ``model_dir`` in a fresh process, compare its signature with ``schema``, score ``records``."""
    if not (model_dir / "saved_model.pb").exists():
        raise SavedModelCheckError(f"broken artifact: no saved_model.pb in {model_dir}")
    request = json.dumps({"schema": schema.to_dict(), "records": records}, allow_nan=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", __name__, str(model_dir)],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise SavedModelCheckError(
            f"loading {model_dir} in a fresh process took over {timeout_s:.0f} s"
        ) from None
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SavedModelCheckError(f"broken artifact: {model_dir} does not load in a fresh process: {last}")
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    report = SavedModelReport(inputs=answer["inputs"], outputs=answer["outputs"], scores=answer["scores"])
    _compare_signature(report, schema, model_dir)
    bad = [s for s in report.scores if not (isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0)]
    if bad or len(report.scores) != len(records):
        raise SavedModelCheckError(
            f"smoke scoring of {model_dir} gave {len(report.scores)} scores for {len(records)} records, "
            f"not all probabilities in [0, 1]: {report.scores[:5]}"
        )
    return report


def _compare_signature(report: SavedModelReport, schema: DatasetSchema, model_dir: Path) -> None:
    expected = set(schema.features)
    found = set(report.inputs)
    problems = []
    if found != expected:
        if expected - found:
            problems.append(f"missing inputs {sorted(expected - found)}")
        if found - expected:
            problems.append(f"unexpected inputs {sorted(found - expected)}")
    for name in schema.numeric:
        if name in report.inputs and report.inputs[name] not in _NUMERIC_DTYPES:
            problems.append(f"{name} should be numeric, is {report.inputs[name]}")
    for name in schema.categorical:
        if name in report.inputs and report.inputs[name] not in _STRING_DTYPES:
            problems.append(f"{name} should be a string, is {report.inputs[name]}")
    if "score" not in report.outputs:
        problems.append(f"output 'score' missing (outputs: {sorted(report.outputs)})")
    if problems:
        raise SavedModelCheckError(
            f"wrong signature in {model_dir} (serving_default vs the model's schema): " + "; ".join(problems)
        )


def _score_in_this_process(model_dir: str, schema: DatasetSchema, records: list[dict[str, Any]]) -> dict:
    tf = import_tensorflow()  # loading a SavedModel is the one thing here that needs TensorFlow

    loaded = tf.saved_model.load(model_dir)
    if "serving_default" not in loaded.signatures:
        raise SystemExit(f"no serving_default signature (found: {sorted(loaded.signatures)})")
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    inputs = {name: spec.dtype.name for name, spec in specs.items()}
    outputs = {name: spec.dtype.name for name, spec in signature.structured_outputs.items()}
    if set(inputs) != set(schema.features):
        return {"inputs": inputs, "outputs": outputs, "scores": []}  # the caller names the mismatch
    feed = {}
    for name, spec in specs.items():
        column = [record.get(name) for record in records]
        if spec.dtype == tf.string:
            feed[name] = tf.constant(["" if v is None or v != v else str(v) for v in column], tf.string)
        else:
            feed[name] = tf.constant(
                np.array([np.nan if v is None else v for v in column], float), spec.dtype
            )
    result = signature(**feed)
    scores = [float(s) for s in np.asarray(result["score"]).reshape(-1)] if "score" in result else []
    return {"inputs": inputs, "outputs": outputs, "scores": scores}


def _main() -> None:
    request = json.loads(sys.stdin.read())
    schema = DatasetSchema.from_dict(request["schema"])
    print(json.dumps(_score_in_this_process(sys.argv[1], schema, request["records"])))


if __name__ == "__main__":
    _main()
