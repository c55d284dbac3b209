"""Benchmark scripts: ``python -m benchmarks.NAME`` prints ratios against a reference."""
