"""ModelOps loop for TensorFlow models, orchestrated by Prefect 3."""

__version__ = "0.1.0"
