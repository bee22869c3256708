"""Test stand-ins, each named as one: an in-process fake of the Kubernetes API calls the cluster
module makes, and a tiny SavedModel with the serving signature contract."""
