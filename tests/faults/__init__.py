"""The fault matrix: ``python -m tests.faults [--long]`` (see runner.py)."""
