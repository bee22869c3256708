"""A local TensorFlow-Serving-compatible REST server for SavedModels, and a client for that API.

``modelops serve`` runs :mod:`modelops.serving.server`; :mod:`modelops.serving.rest_client` talks
the same REST API to this server or to a real ``tensorflow/serving`` container.
Nothing heavy is imported here: TensorFlow loads only in the server process.
"""
