"""Raw records → model matrix, as TensorFlow ops, so the exported SavedModel takes raw records.

Learned from the training frame only, then frozen into constants and lookup tables:

* numeric: ``NaN``/``inf`` = missing → training mean; a 0/1 missing indicator for every column that
  had missing values in training; heavy right-skewed non-negative columns (skew > 2, e.g. LOAN,
  VALUE) go through ``log1p`` first; then standardised and clipped to ±5 so an outlier cannot
  dominate a score. A column with one value in training encodes as 0 whatever it holds later: the
  network's weight for it was never trained, so it must not see anything but 0.
* categorical: one-hot over the training vocabulary (the 50 most frequent values); missing (``""``)
  is its own category when training had missing values; an unknown value (the out-of-vocabulary
  bucket) encodes as all zeros, i.e. "no information from this column".

The same :meth:`Preprocessor.transform` builds the training matrix and runs inside the serving
signature, so training and serving cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tensorflow as tf

from modelops.data.schema import DatasetSchema

MAX_VOCABULARY = 50
SKEW_FOR_LOG = 2.0
CLIP_Z = 5.0
MISSING_CATEGORY = ""


@dataclass(frozen=True)
class NumericSpec:
    name: str
    log: bool
    mean: float  # after the log transform, if any
    std: float
    has_missing: bool
    constant: bool = False  # one value in training: the input is zeroed, so an untrained weight cannot act


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    vocabulary: tuple[str, ...]  # may contain MISSING_CATEGORY


@dataclass(frozen=True)
class PreprocessingSpec:
    numeric: tuple[NumericSpec, ...]
    categorical: tuple[CategoricalSpec, ...]
    feature_names: tuple[str, ...] = field(default=())  # names of the matrix columns, for people

    @property
    def width(self) -> int:
        return len(self.feature_names)

    def to_dict(self) -> dict:
        return {
            "numeric": [vars(s) for s in self.numeric],
            "categorical": [{"name": s.name, "vocabulary": list(s.vocabulary)} for s in self.categorical],
        }


def fit_preprocessing(frame: pd.DataFrame, schema: DatasetSchema) -> PreprocessingSpec:
    numeric_specs = []
    names: list[str] = []
    for column in schema.numeric:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            raise ValueError(f"numeric column {column!r} has no values in the training data")
        log = bool(finite.min() >= 0 and pd.Series(finite).skew() > SKEW_FOR_LOG)
        transformed = np.log1p(finite) if log else finite
        std = float(transformed.std())
        spec = NumericSpec(
            name=column,
            log=log,
            mean=float(transformed.mean()),
            std=std if std > 1e-9 else 1.0,
            has_missing=bool(len(finite) < len(values)),
            constant=std <= 1e-9,
        )
        numeric_specs.append(spec)
        names.append(column)
        if spec.has_missing:
            names.append(f"{column}__missing")
    categorical_specs = []
    for column in schema.categorical:
        values = as_category_strings(frame[column])
        counts = values[values != MISSING_CATEGORY].value_counts()
        vocabulary = sorted(counts.index[:MAX_VOCABULARY])
        if (values == MISSING_CATEGORY).any():
            vocabulary.append(MISSING_CATEGORY)
        categorical_specs.append(CategoricalSpec(name=column, vocabulary=tuple(vocabulary)))
        names.extend(f"{column}={v or '(missing)'}" for v in vocabulary)
    return PreprocessingSpec(tuple(numeric_specs), tuple(categorical_specs), tuple(names))


def as_category_strings(series: pd.Series) -> pd.Series:
    """Categorical values as strings; NaN/None → ``""`` (the wire format for a missing category)."""
    return series.astype(object).where(series.notna(), MISSING_CATEGORY).astype(str).str.strip()


class Preprocessor(tf.Module):
    """The frozen preprocessing as a TensorFlow module (tracked by the serving module)."""

    def __init__(self, spec: PreprocessingSpec):
        super().__init__(name="preprocessor")
        self.spec = spec
        self._tables = {}
        for categorical in spec.categorical:
            keys = tf.constant(list(categorical.vocabulary), dtype=tf.string)
            values = tf.range(len(categorical.vocabulary), dtype=tf.int64)
            self._tables[categorical.name] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1
            )  # -1 = out of vocabulary → all-zero one-hot
        self._table_list = list(self._tables.values())  # tracked for SavedModel

    def transform(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        columns = []
        for spec in self.spec.numeric:
            raw = tf.cast(tf.reshape(features[spec.name], [-1]), tf.float32)
            missing = tf.logical_not(tf.math.is_finite(raw))
            value = tf.where(missing, tf.zeros_like(raw), raw)
            if spec.log:
                value = tf.math.log1p(tf.maximum(value, 0.0))
            value = tf.where(missing, tf.fill(tf.shape(raw), spec.mean), value)
            z = tf.clip_by_value((value - spec.mean) / spec.std, -CLIP_Z, CLIP_Z)
            if spec.constant:  # its weight never saw a non-zero input: any other value must not move scores
                z = tf.zeros_like(z)
            columns.append(z[:, None])
            if spec.has_missing:
                columns.append(tf.cast(missing, tf.float32)[:, None])
        for category in self.spec.categorical:
            raw = tf.strings.strip(tf.reshape(features[category.name], [-1]))
            index = self._tables[category.name].lookup(raw)
            columns.append(tf.one_hot(index, depth=len(category.vocabulary), dtype=tf.float32))
        return tf.concat(columns, axis=1)


def frame_to_tensors(frame: pd.DataFrame, schema: DatasetSchema) -> dict[str, tf.Tensor]:
    """A DataFrame of raw records as the serving signature's inputs (NaN numeric, ``""`` category)."""
    return {name: tf.constant(array) for name, array in frame_to_arrays(frame, schema).items()}


def frame_to_arrays(frame: pd.DataFrame, schema: DatasetSchema) -> dict[str, np.ndarray]:
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise ValueError(f"records lack the model's input columns {missing}; got {list(frame.columns)}")
    arrays: dict[str, np.ndarray] = {}
    for column in schema.numeric:
        arrays[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float32)
    for column in schema.categorical:
        arrays[column] = as_category_strings(frame[column]).to_numpy(dtype=object)
    return arrays
