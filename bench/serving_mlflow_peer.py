"""The peer for the serving benchmark: the same SavedModel behind MLflow's own model server.

MLflow's ``tensorflow`` pyfunc flavour feeds a tf.Module one positional array, so a signature
with one named input per feature needs a small ``PythonModel``, which is what a team serving this
model with ``mlflow models serve`` would write. It calls the same ``serving_default`` signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np


class SavedModelScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import tensorflow as tf  # lazy: only the `mlflow models serve` process runs the model

        self.module = tf.saved_model.load(context.artifacts["saved_model"])
        self.signature = self.module.signatures["serving_default"]
        _, specs = self.signature.structured_input_signature
        self.dtypes = {name: spec.dtype for name, spec in specs.items()}

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import tensorflow as tf  # lazy: as above

        feed = {}
        for name, dtype in self.dtypes.items():
            column = model_input[name]
            if dtype == tf.string:
                feed[name] = tf.constant(column.fillna("").astype(str).to_numpy(dtype=object), tf.string)
            else:
                feed[name] = tf.constant(np.asarray(column, dtype=np.float64), dtype)
        return self.signature(**feed)["score"].numpy()


def save_peer_model(saved_model_dir: Path, destination: Path) -> Path:
    mlflow.pyfunc.save_model(
        path=str(destination),
        python_model=SavedModelScorer(),
        artifacts={"saved_model": str(saved_model_dir)},
        code_paths=[__file__],
        pip_requirements=["tensorflow-cpu==2.21.0"],
    )
    return destination
