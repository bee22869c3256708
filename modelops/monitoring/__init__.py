"""Monitoring logic without I/O: the KS decision, label-free drift figures and the trend report."""
