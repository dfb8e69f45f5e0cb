"""Benchmarks for afpipe: run on purpose, never part of the test command.

Each ``python -m bench.<name>`` prints a table and appends it to docs/benchmarks.md.
"""
