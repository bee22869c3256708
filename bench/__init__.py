"""Benchmarks (scripts with a main, not tests): python -m bench.<name>."""
