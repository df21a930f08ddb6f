"""Benchmarks: each prints one table; figures are ratios against a baseline measured in the same run."""
