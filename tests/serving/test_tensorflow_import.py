"""The serving process imports TensorFlow without Keras, and still loads and scores every SavedModel kind.

Each check runs in a fresh interpreter: this pytest process has imported Keras long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SERVE_LIKE = """
import json, sys
from pathlib import Path
import numpy as np
from modelops.serving.server import configure_tensorflow
from modelops.serving.repository import load_version

configure_tensorflow(1, 1)  # what `modelops serve` does before it loads anything
loaded = {"keras": sorted(m for m in sys.modules if m == "keras" or m.startswith("keras.")),
          "sklearn": sorted(m for m in sys.modules if m == "sklearn" or m.startswith("sklearn."))}
rows = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
scores = {}
for folder in sys.argv[1].split(","):
    runner = load_version(Path(folder), 1).signatures["serving_default"]
    (spec,) = runner.inputs
    (output,) = runner({spec.name: rows}).values()
    scores[folder] = np.asarray(output).ravel().tolist()
import tensorflow as tf
import keras  # still importable afterwards, and TensorFlow's own alias too
print(json.dumps({**loaded, "scores": scores, "keras_after": keras.__version__,
                  "tf_keras_dense": tf.keras.layers.Dense.__name__,
                  "none_in_tf_path": any(entry is None for entry in tf.__path__)}))
"""


def _run(code: str, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def keras_savedmodels(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """A Keras model trained with Adam, saved whole (optimizer slots included) and exported."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    layers = [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(7).random((32, 3), dtype=np.float32)
    model.fit(x, x.sum(axis=1, keepdims=True), epochs=2, verbose=0)
    base = tmp_path_factory.mktemp("keras-savedmodels")
    whole, exported = base / "whole" / "1", base / "exported" / "1"
    tf.saved_model.save(model, str(whole))
    model.export(str(exported))
    assert tf.saved_model.load(str(whole)).optimizer is not None  # the case Keras's eager import is for
    rows = x[:5]
    return [whole, exported], rows, model(rows).numpy().ravel()


def test_a_served_savedmodel_loads_and_scores_without_keras_or_scikit_learn(keras_savedmodels):
    folders, rows, expected = keras_savedmodels
    result = _run(SERVE_LIKE, ",".join(str(f) for f in folders), json.dumps(rows.tolist()))

    assert result["keras"] == [], "TensorFlow's eager Keras import was not skipped"
    assert result["sklearn"] == []
    for folder in folders:
        np.testing.assert_allclose(result["scores"][str(folder)], expected, rtol=1e-6)
    assert result["keras_after"] and result["tf_keras_dense"] == "Dense"
    assert result["none_in_tf_path"] is False


def test_keras_imported_first_is_left_as_it_is():
    result = _run(
        """
        import json, sys
        import keras
        from modelops.serving.tensorflow_import import import_tensorflow
        tf = import_tensorflow()
        print(json.dumps({"optimizers": "keras.src.optimizers" in sys.modules,
                          "same": sys.modules["keras"] is keras, "tf": tf.__name__}))
        """
    )
    assert result == {"optimizers": True, "same": True, "tf": "tensorflow"}
