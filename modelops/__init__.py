"""ModelOps loop for TensorFlow models, orchestrated by Prefect 3."""

import os

__version__ = "0.1.0"

# MLflow (3.x) sends usage telemetry home from a background thread unless told not to. This project
# sends nothing anywhere it was not configured to, and that thread, when it cannot reach the
# internet, deletes a variable from os.environ while other threads iterate it (a KeyError inside
# requests' proxy lookup failed a registry call in a test run). Every modelops process and the stack
# processes it starts inherit this default; set MLFLOW_DISABLE_TELEMETRY=false to opt in.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
