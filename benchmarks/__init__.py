"""Benchmarks that print tables and write JSON (results/). Run a table with ``python -m benchmarks.NAME``."""
