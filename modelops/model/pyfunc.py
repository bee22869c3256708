"""MLflow's own face of the serving SavedModel: ``mlflow.pyfunc.load_model`` and ``mlflow models serve``.

A registered version is an MLflow ``python_function`` model whose artifact is the SavedModel that
TF Serving (and ``modelops serve``) serves, under ``artifacts/saved_model/``. Its
:class:`SavedModelScorer` takes a DataFrame of raw records (numeric columns with NaN or None for a
missing value, categorical columns with None or ``""``; unseen categories are fine; an absent
column is missing everywhere), builds one named tensor per feature and calls the SavedModel's
``serving_default`` signature: the scores are the SavedModel's, computed by the same
:func:`modelops.model.export.score_frame`. MLflow checks the columns' types first: numbers as
floats (``15000.0``; MLflow refuses to convert a Python/NumPy ``int64`` column to double).

The model is logged "from code" (``pyfunc_model.py`` names the class): nothing is pickled, and
the model loads wherever ``modelops`` is installed. This module imports MLflow at its top (the
class subclasses ``PythonModel``): import it only where MLflow is wanted anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from modelops.data.schema import DatasetSchema

SAVED_MODEL_ARTIFACT = "saved_model"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# No label column reaches a scorer; DatasetSchema wants a target name that is not a feature.
_NO_TARGET = "__target__"


class SavedModelScorer(PythonModel):
    """Raw records in, the SavedModel's event probability out (one float per row)."""

    def __init__(self) -> None:
        self._signature: Any = None
        self._schema: DatasetSchema | None = None

    def load_context(self, context: Any) -> None:
        # modelops.model.export loads TensorFlow: only a process that scores pays for it.
        from modelops.model.export import load_signature

        self._signature = load_signature(context.artifacts[SAVED_MODEL_ARTIFACT])
        self._schema = signature_schema(self._signature)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        from modelops.model.export import score_frame  # TensorFlow: as above

        if self._signature is None or self._schema is None:
            raise RuntimeError("the SavedModel is not loaded: MLflow calls load_context before predict")
        # Every column is optional in the signature: an absent one is missing in every record.
        frame = pd.DataFrame(model_input).reindex(columns=list(self._schema.features))
        return score_frame(self._signature, frame, self._schema)


def signature_schema(signature: Any) -> DatasetSchema:
    """The features a ``serving_default`` signature takes: float inputs numeric, string inputs categorical."""
    _, specs = signature.structured_input_signature
    numeric = tuple(name for name, spec in specs.items() if spec.dtype.is_floating)
    categorical = tuple(name for name, spec in specs.items() if not spec.dtype.is_floating)
    return DatasetSchema(target=_NO_TARGET, numeric=numeric, categorical=categorical)


def example_frame(typical: dict[str, Any], schema: DatasetSchema) -> pd.DataFrame:
    """Three raw records: ``typical``, one with every value missing, one with unseen categories.

    The missing row makes every column optional in the signature inferred from the example.
    """
    missing = dict.fromkeys(schema.features)
    unseen = typical | {name: "__unseen__" for name in schema.categorical}
    frame = pd.DataFrame([typical, missing, unseen], columns=list(schema.features))
    for name in schema.numeric:
        frame[name] = pd.to_numeric(frame[name]).astype(np.float64)  # None -> NaN
    for name in schema.categorical:
        frame[name] = frame[name].astype(object)
    return frame


def log_pyfunc_model(
    saved_model_dir: str | Path,
    *,
    name: str,
    input_example: pd.DataFrame,
    schema: DatasetSchema,
    pip_requirements: list[str],
) -> Any:
    """``mlflow.pyfunc.log_model`` of the SavedModel into the active run; returns MLflow's ModelInfo.

    The signature is inferred from ``input_example`` and the SavedModel's scores of it; MLflow then
    checks that the example, sent as a serving request, scores (see the caller for what a failure does).
    """
    from mlflow.models import infer_signature

    # modelops.model.export loads TensorFlow: the registration step has it loaded already.
    from modelops.model.export import score_frame

    scores = score_frame(saved_model_dir, input_example, schema)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts={SAVED_MODEL_ARTIFACT: str(saved_model_dir)},
        input_example=input_example,
        signature=infer_signature(input_example, scores),
        pip_requirements=pip_requirements,
    )
