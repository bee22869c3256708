"""The tabular binary classifier: frozen preprocessing (see preprocessing.py) + a small Keras 3 MLP.

``fit_model(frame, schema, settings)`` learns the preprocessing from the training rows, trains the
MLP with early stopping on an inner validation split and returns a :class:`FittedModel` whose
``score(frame)`` runs exactly the graph that is exported for serving.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from modelops.config import TrainingSettings
from modelops.data.schema import DatasetSchema
from modelops.model.preprocessing import PreprocessingSpec, Preprocessor, fit_preprocessing, frame_to_tensors

VALIDATION_FRACTION = 0.1
EARLY_STOPPING_PATIENCE = 5
L2 = 1e-4

Progress = Callable[[str], None]


@dataclass
class FittedModel:
    schema: DatasetSchema
    spec: PreprocessingSpec
    preprocessor: Preprocessor
    network: keras.Model
    settings: TrainingSettings
    history: dict[str, list[float]] = field(default_factory=dict)
    fit_seconds: float = 0.0

    def score(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        """Event probability per row of raw records (the same graph the serving signature runs)."""
        scores = []
        for start in range(0, len(frame), batch_size):
            tensors = frame_to_tensors(frame.iloc[start : start + batch_size], self.schema)
            scores.append(self.score_tensors(tensors).numpy())
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)

    def score_tensors(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        matrix = self.preprocessor.transform(features)
        return tf.reshape(self.network(matrix, training=False), [-1])


def build_network(width: int, settings: TrainingSettings, event_rate: float = 0.5) -> keras.Model:
    # Every initializer and dropout layer gets its seed from ``settings.seed``. Left unseeded, Keras
    # draws them from Python's process-wide ``random`` module, which any other thread may draw from
    # between ``set_random_seed`` and here (Prefect's clients add random jitter to their retries), and
    # the same seed would train another model.
    layer_seeds = random.Random(settings.seed)

    def seed() -> int:
        return layer_seeds.randint(1, 10**9)

    inputs = keras.Input(shape=(width,), name="features")
    hidden = inputs
    for units in settings.hidden_units:
        hidden = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed()),
            kernel_regularizer=keras.regularizers.l2(L2),
        )(hidden)
        if settings.dropout > 0:
            hidden = keras.layers.Dropout(settings.dropout, seed=seed())(hidden)
    prior = float(np.log(event_rate / (1 - event_rate)))  # start from the base rate, not from 50 %
    output = keras.layers.Dense(
        1,
        activation="sigmoid",
        name="score",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed()),
        bias_initializer=keras.initializers.Constant(prior),
    )(hidden)
    model = keras.Model(inputs, output, name="risk_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def fit_model(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    settings: TrainingSettings,
    progress: Progress | None = print,
) -> FittedModel:
    """Train on ``frame`` (raw records with the target); prints one line per epoch via ``progress``."""
    keras.utils.set_random_seed(settings.seed)
    labels = frame[schema.target].to_numpy(dtype=np.float32)
    spec = fit_preprocessing(frame, schema)
    preprocessor = Preprocessor(spec)
    matrix = preprocessor.transform(frame_to_tensors(frame, schema)).numpy()

    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(frame))
    n_validation = max(1, int(len(frame) * VALIDATION_FRACTION))
    validation, train = order[:n_validation], order[n_validation:]

    event_rate = float(np.clip(labels[train].mean(), 1e-3, 1 - 1e-3))
    network = build_network(spec.width, settings, event_rate)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=EARLY_STOPPING_PATIENCE, restore_best_weights=True
        )
    ]
    if progress is not None:
        callbacks.append(_EpochLine(settings.epochs, progress))
    started = time.perf_counter()
    history = network.fit(
        matrix[train],
        labels[train],
        validation_data=(matrix[validation], labels[validation]),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    elapsed = time.perf_counter() - started
    return FittedModel(
        schema=schema,
        spec=spec,
        preprocessor=preprocessor,
        network=network,
        settings=settings,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        fit_seconds=elapsed,
    )


class _EpochLine(keras.callbacks.Callback):
    def __init__(self, epochs: int, progress: Progress):
        super().__init__()
        self.epochs, self.progress = epochs, progress

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.progress(
            f"epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f} "
            f"auc {logs.get('auc', float('nan')):.3f} val_loss {logs.get('val_loss', float('nan')):.4f} "
            f"val_auc {logs.get('val_auc', float('nan')):.3f}"
        )
