"""TensorFlow for inference, imported without the Keras that ``import tensorflow`` loads eagerly.

TensorFlow's ``__init__`` imports ``keras.src.optimizers`` (so that a SavedModel holding Keras
optimizers finds them registered), which imports all of Keras 3 and, through Keras's scikit-learn
wrapper, scikit-learn: ~40 % of the import (README, Serving, "Start-up without Keras"). Loading a
SavedModel and calling its signatures needs none of it; a Keras model saved with its optimizer, or
exported with ``model.export``, loads without it too (tests/serving/test_tensorflow_import.py).
TensorFlow's ``__init__`` already tolerates a missing Keras (it catches the ``ImportError``), so
Keras is hidden for the duration of the import only: ``import keras`` and ``tf.keras`` work
afterwards as usual.

The processes that only serve or check a SavedModel import TensorFlow through :func:`import_tensorflow`:
``modelops serve`` (and its standby), the benchmark's in-process floor, the SavedModel check and the
gRPC traffic client (TF Serving's protos live in the tensorflow package).
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_tensorflow() -> ModuleType:
    """``import tensorflow``, skipping TensorFlow's eager Keras import when Keras is not loaded yet."""
    loaded = sys.modules.get("tensorflow")
    if loaded is not None:
        return loaded
    hide_keras = "keras" not in sys.modules
    if hide_keras:
        sys.modules["keras"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import tensorflow
    finally:
        if hide_keras and "keras" in sys.modules and sys.modules["keras"] is None:
            del sys.modules["keras"]
    # TensorFlow prepends Keras's folder to its own __path__; with Keras hidden that entry is None
    tensorflow.__path__[:] = [entry for entry in tensorflow.__path__ if entry is not None]
    return tensorflow
