"""The SavedModel that TF Serving (and the local stand-in) serves.

A :class:`ServingModule` holds the frozen preprocessing and the trained network. Its
``serving_default`` signature takes one input per feature, named as the feature (numeric features
``float32 [None]`` with ``NaN`` for missing, categorical ``string [None]`` with ``""`` for missing)
and returns ``{"score": float32 [None]}``, the event probability. ``__call__`` is the same
``tf.function``. MLflow registers this SavedModel inside a ``python_function`` model
(:mod:`modelops.model.pyfunc`), so MLflow's own tools score raw records with it too.

Layout for TF Serving: ``<export_base>/<model_name>/<version>/saved_model.pb``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from modelops.data.schema import DatasetSchema
from modelops.model.network import FittedModel
from modelops.model.preprocessing import frame_to_tensors

SIGNATURE_KEY = "serving_default"
OUTPUT_KEY = "score"


def input_signature(schema: DatasetSchema) -> dict[str, tf.TensorSpec]:
    specs = {name: tf.TensorSpec([None], tf.float32, name=name) for name in schema.numeric}
    specs.update({name: tf.TensorSpec([None], tf.string, name=name) for name in schema.categorical})
    return specs


class ServingModule(tf.Module):
    def __init__(self, fitted: FittedModel):
        super().__init__(name="serving")
        self.preprocessor = fitted.preprocessor
        self.network = fitted.network
        self.__call__ = tf.function(self._score, input_signature=[input_signature(fitted.schema)])

    def _score(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        matrix = self.preprocessor.transform(features)
        return {OUTPUT_KEY: tf.reshape(self.network(matrix, training=False), [-1])}


def serving_module(fitted: FittedModel) -> ServingModule:
    return ServingModule(fitted)


def export_saved_model(
    fitted: FittedModel, export_base: str | Path, model_name: str, version: int | str
) -> Path:
    """Write ``<export_base>/<model_name>/<version>/`` (replacing it) and return that folder."""
    target = Path(export_base) / model_name / str(version)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return save_serving_module(ServingModule(fitted), target)


def save_serving_module(module: ServingModule, target: str | Path) -> Path:
    """Write ``module`` as a SavedModel folder with its ``serving_default`` signature."""
    tf.saved_model.save(module, str(target), signatures={SIGNATURE_KEY: module.__call__})
    return Path(target)


def load_signature(saved_model_dir: str | Path) -> Any:
    """The ``serving_default`` concrete function of a SavedModel folder (keep the result alive)."""
    path = Path(saved_model_dir)
    if not (path / "saved_model.pb").exists():
        raise FileNotFoundError(f"no saved_model.pb in {path}: give a SavedModel version folder")
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[SIGNATURE_KEY]
    signature._modelops_owner = loaded  # the concrete function needs its module alive
    return signature


def score_frame(
    signature_or_dir: Any, frame: pd.DataFrame, schema: DatasetSchema, batch_size: int = 8192
) -> np.ndarray:
    """Score raw records with a serving signature (or a SavedModel folder): NaN/None → NaN / ``""``."""
    signature = (
        load_signature(signature_or_dir) if isinstance(signature_or_dir, str | Path) else signature_or_dir
    )
    scores = []
    for start in range(0, len(frame), batch_size):
        tensors = frame_to_tensors(frame.iloc[start : start + batch_size], schema)
        scores.append(signature(**tensors)[OUTPUT_KEY].numpy())
    return np.concatenate(scores).astype(float) if scores else np.zeros(0)
