"""A tiny SavedModel with the project's serving signature contract, for container tests.

One input per feature, named as the feature (numeric ``float32 [None]``, categorical
``string [None]``), output ``{"score": float32 [None]}``. ``bias`` makes versions distinguishable.
"""

from __future__ import annotations

from pathlib import Path

NUMERIC = ("LOAN", "DEBTINC")
CATEGORICAL = ("JOB",)


def write_tiny_savedmodel(target: str | Path, bias: float = 0.0) -> Path:
    import tensorflow as tf

    spec = {name: tf.TensorSpec([None], tf.float32, name=name) for name in NUMERIC}
    spec.update({name: tf.TensorSpec([None], tf.string, name=name) for name in CATEGORICAL})

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="tiny")
            self.bias = tf.Variable(bias, dtype=tf.float32)

        @tf.function(input_signature=[spec])
        def __call__(self, features):
            loan = tf.where(tf.math.is_nan(features["LOAN"]), 0.0, features["LOAN"])
            debt = tf.where(tf.math.is_nan(features["DEBTINC"]), 0.0, features["DEBTINC"])
            manager = tf.cast(tf.equal(features["JOB"], "Mgr"), tf.float32)
            logit = 1e-5 * loan + 0.02 * debt + 0.5 * manager + self.bias
            return {"score": tf.sigmoid(logit)}

    module = Tiny()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.__call__})
    return target


def write_broken_savedmodel(target: str | Path) -> Path:
    """Looks like a SavedModel to the build (saved_model.pb exists) but no server can load it."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / "saved_model.pb").write_bytes(b"this is not a protobuf")
    return target


SAMPLE_RECORD = {"LOAN": 15000.0, "DEBTINC": 35.0, "JOB": "Mgr"}
