"""Benchmarks of keytriage: start-up, scan cost, UI latency during slow work, and terminal output.

Run them all with `python -m benchmarks` from the repository root; see
BENCHMARKS.md for the method and the latest results. Nothing here is a test:
the figures are printed next to their targets and never asserted.
"""
