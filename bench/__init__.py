"""Benchmarks: each prints one table, with ratios against a baseline measured in the same run."""
