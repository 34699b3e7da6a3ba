"""Benchmarks: `make bench` runs every module here, `make bench NAME=x` runs bench/x.py.

Each prints one JSON object per figure on its own line: name, value, unit, and where measured in
the same run, baseline and ratio (> 1 means better than the baseline), limit and of_limit.
"""
