"""The code MLflow logs with every version ("models from code"): it names the model's class.

MLflow copies this file into the logged model and runs it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``); see :mod:`modelops.model.pyfunc`.
"""

from mlflow.models import set_model

from modelops.model.pyfunc import SavedModelScorer

set_model(SavedModelScorer())
