"""Benchmarks: `python -m bench` runs every scenario and prints a table of figures and ratios."""
