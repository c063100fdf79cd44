"""Benchmark suite of the engine (issue 8): ``python benchmarks/run.py --help``."""
