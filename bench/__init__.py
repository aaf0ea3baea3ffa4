"""Benchmarks: run from the repository root with .venv/bin/python -m bench.<name>."""
