"""Small SavedModels with the project's serving contract, built without training.

The contract (what modelops/model/export.py produces): a ``serving_default`` signature taking one
input per feature, named as the feature (numeric ``tf.float32`` shape [None], categorical
``tf.string`` shape [None]) and returning ``{"score": float32 [None]}``. The model here is a fixed
logistic function of the HMEQ features with mean imputation and a categorical lookup, so tests can
compute the expected score in numpy. ``bias`` makes versions distinguishable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from modelops.data.schema import HMEQ_SCHEMA

NUMERIC = HMEQ_SCHEMA.numeric
CATEGORICAL = HMEQ_SCHEMA.categorical
MEANS = {
    "LOAN": 18000.0,
    "MORTDUE": 73000.0,
    "VALUE": 101000.0,
    "YOJ": 9.0,
    "DEROG": 0.25,
    "DELINQ": 0.45,
    "CLAGE": 180.0,
    "NINQ": 1.2,
    "CLNO": 21.0,
    "DEBTINC": 34.0,
}
SCALES = {
    "LOAN": 11000.0,
    "MORTDUE": 44000.0,
    "VALUE": 57000.0,
    "YOJ": 7.6,
    "DEROG": 0.85,
    "DELINQ": 1.1,
    "CLAGE": 85.0,
    "NINQ": 1.7,
    "CLNO": 10.0,
    "DEBTINC": 8.6,
}
WEIGHTS = {
    "LOAN": -0.2,
    "MORTDUE": -0.1,
    "VALUE": 0.05,
    "YOJ": -0.1,
    "DEROG": 0.6,
    "DELINQ": 0.8,
    "CLAGE": -0.4,
    "NINQ": 0.3,
    "CLNO": -0.05,
    "DEBTINC": 0.7,
}
CATEGORY_WEIGHTS = {
    "REASON": {"DebtCon": 0.0, "HomeImp": 0.15},
    "JOB": {"Other": 0.1, "Sales": 0.5, "ProfExe": -0.2, "Office": -0.3, "Mgr": 0.05, "Self": 0.3},
}
MISSING_CATEGORY_WEIGHT = 0.2  # "" or an unseen category


def build_saved_model(path: Path, bias: float = -1.4, score_scale: float = 1.0) -> Path:
    """Write a SavedModel to ``path``; ``score_scale`` > 1 makes a broken model (scores above 1)."""
    import tensorflow as tf

    class RiskModel(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tables = {
                column: tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(list(weights)), tf.constant(list(weights.values()), tf.float32)
                    ),
                    default_value=MISSING_CATEGORY_WEIGHT,
                )
                for column, weights in CATEGORY_WEIGHTS.items()
            }

        @tf.function(
            input_signature=[
                {name: tf.TensorSpec([None], tf.float32, name=name) for name in NUMERIC}
                | {name: tf.TensorSpec([None], tf.string, name=name) for name in CATEGORICAL}
            ]
        )
        def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
            logit = tf.fill(tf.shape(features[NUMERIC[0]]), bias)
            for name in NUMERIC:
                value = features[name]
                value = tf.where(tf.math.is_nan(value), MEANS[name], value)
                logit += WEIGHTS[name] * (value - MEANS[name]) / SCALES[name]
            for name in CATEGORICAL:
                logit += self.tables[name].lookup(features[name])
            return {"score": score_scale * tf.sigmoid(logit)}

    module = RiskModel()

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in NUMERIC]
        + [tf.TensorSpec([None], tf.string, name=n) for n in CATEGORICAL]
    )
    def serving_default(*args: Any) -> dict[str, Any]:
        return module(dict(zip((*NUMERIC, *CATEGORICAL), args, strict=True)))

    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures={"serving_default": serving_default})
    return path


def expected_score(record: dict[str, Any], bias: float = -1.4) -> float:
    """The fixture model's score for one record, in plain Python (float64)."""
    logit = bias
    for name in NUMERIC:
        value = record.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = MEANS[name]
        logit += WEIGHTS[name] * (float(value) - MEANS[name]) / SCALES[name]
    for name in CATEGORICAL:
        logit += CATEGORY_WEIGHTS[name].get(record.get(name) or "", MISSING_CATEGORY_WEIGHT)
    return 1.0 / (1.0 + math.exp(-logit))


def sample_records(count: int = 8, seed: int = 7) -> list[dict[str, Any]]:
    """HMEQ-like records with missing values (NaN numeric, "" categorical)."""
    import random

    rng = random.Random(seed)
    records = []
    for _ in range(count):
        record: dict[str, Any] = {}
        for name in NUMERIC:
            value = max(0.0, rng.gauss(MEANS[name], SCALES[name]))
            record[name] = math.nan if rng.random() < 0.1 else round(value, 2)
        for name in CATEGORICAL:
            options = list(CATEGORY_WEIGHTS[name])
            record[name] = "" if rng.random() < 0.1 else rng.choice(options)
        records.append(record)
    return records


def build_model_base(base: Path, versions: dict[int, float]) -> Path:
    """A TF Serving model base path: ``base/<version>/`` per entry of ``{version: bias}``."""
    for version, bias in versions.items():
        build_saved_model(base / str(version), bias=bias)
    return base


class ServerProcess:
    """A ``modelops serve`` process on a free loopback port, stopped by ``stop()`` (or the with-block)."""

    def __init__(
        self, base: Path, port: int, model_name: str = "risk", *extra: str, log: Path | None = None
    ) -> None:
        import subprocess
        import sys

        self.url = f"http://127.0.0.1:{port}"
        self.model_name = model_name
        self.log = log or base.parent / f"serve-{port}.log"
        command = [
            sys.executable,
            "-c",
            "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve",
            "--model-name",
            model_name,
            "--model-base-path",
            str(base),
            "--port",
            str(port),
            *extra,
        ]
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> ServerProcess:  # TF loads slowly on a busy machine
        import time

        from modelops.serving import rest_client

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                rest_client.wait_until_available(self.url, self.model_name, timeout=0.5, interval=0.2)
                return self
            except rest_client.ServingClientError:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
