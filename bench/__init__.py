"""Fastbreak benchmarks: ``python -m bench [--only NAME]`` writes ``bench/results/latest.json``."""
