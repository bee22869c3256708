"""Names of the deployments that ``prefect.yaml`` defines (``<flow name>/<deployment name>``)."""

from __future__ import annotations

TRAIN = "train/train"
LIFECYCLE = "lifecycle/lifecycle"
KS_CHECK = "ks-check/ks-check"
RETRAIN = "retrain/retrain"
TRAFFIC = "traffic/traffic"
